"""Detect the format of an incoming payload and hand it to the right reader.

A payload is whatever one Kafka record or one file holds: an HL7 v2 message (possibly MLLP-framed, possibly
several in a batch file) or one FHIR JSON document. The format is detected once per payload, so HL7 v2 and
FHIR may share a topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .domain import Report, Skipped, SourceFormat
from .errors import MalformedMessage
from .limits import DEFAULT_LIMITS, Limits
from .formats.fhir.reader import read_fhir
from .formats.framing import unframe
from .formats.hl7v2.reader import read_hl7v2, split_hl7_stream


def detect_format(data: bytes) -> SourceFormat:
    head = unframe(data[:4096])  # a frame or BOM sits at the start: no need to look at the whole payload
    if head.startswith((b"{", b"[")):
        return "fhir"
    if head[:3] in (b"MSH", b"FHS", b"BHS"):
        return "hl7v2"
    raise MalformedMessage("payload is neither an HL7 v2 message (no MSH) nor FHIR JSON", where="byte 0")


@dataclass(frozen=True)
class Payload:
    format: SourceFormat
    messages: list[bytes]  # several only for HL7 v2 batch files or MLLP streams


def split_payload(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Payload:
    """One payload -> its format and the messages in it. Raises MalformedMessage, or LimitExceeded when the
    payload is over ``limits.max_message_bytes`` (checked before anything else looks at it)."""
    limits.check("max_message_bytes", len(data))
    fmt = detect_format(data)
    return Payload(fmt, split_hl7_stream(data) if fmt == "hl7v2" else [data])


def read_message(
    data: bytes,
    fmt: SourceFormat | None = None,
    *,
    location: str | None = None,
    received_at: datetime | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Report | Skipped]:
    """One message -> its reports (to draft) and skips (with reasons). Raises MalformedMessage or
    LimitExceeded (a PermanentError naming the limit: the message is dead-lettered).

    ``fmt`` is the payload's format when the caller already detected it (``split_payload``).
    """
    if (fmt or detect_format(data)) == "hl7v2":
        return read_hl7v2(data, location=location, received_at=received_at, limits=limits)
    return read_fhir(data, location=location, received_at=received_at, limits=limits)


def read_payload(
    data: bytes,
    *,
    location: str | None = None,
    received_at: datetime | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[SourceFormat, list[Report | Skipped]]:
    """Every report and skip of a payload, in order; message i > 0 of a batch is located as ``location#i``."""
    payload = split_payload(data, limits)
    items: list[Report | Skipped] = []
    for i, message in enumerate(payload.messages):
        where = location if i == 0 else f"{location or ''}#{i}"
        items += read_message(message, payload.format, location=where, received_at=received_at, limits=limits)
    return payload.format, items
