"""Detect the format of an incoming payload and hand it to the right reader.

A payload is whatever one Kafka record or one file holds: an HL7 v2 message (possibly MLLP-framed, possibly
several in a batch file) or one FHIR JSON document. The format is detected per payload, so HL7 v2 and FHIR
may share a topic.
"""

from __future__ import annotations

from datetime import datetime

from .domain import Report, Skipped, SourceFormat
from .errors import MalformedMessage

_BOM = b"\xef\xbb\xbf"
_MLLP_START = b"\x0b"


def detect_format(data: bytes) -> SourceFormat:
    head = data.lstrip()
    if head.startswith(_BOM):
        head = head[len(_BOM) :].lstrip()
    head = head.lstrip(_MLLP_START)
    if head.startswith((b"{", b"[")):
        return "fhir"
    if head[:3] in (b"MSH", b"FHS", b"BHS"):
        return "hl7v2"
    raise MalformedMessage("payload is neither an HL7 v2 message (no MSH) nor FHIR JSON", where="byte 0")


def split_payload(data: bytes) -> list[bytes]:
    """One payload -> the messages in it (several only for HL7 v2 batch files or MLLP streams)."""
    if detect_format(data) == "hl7v2":
        from .formats.hl7v2.reader import split_hl7_stream

        return split_hl7_stream(data)
    return [data]


def read_message(data: bytes, *, location: str | None = None, received_at: datetime | None = None) -> list[Report | Skipped]:
    """One message -> its reports (to draft) and skips (with reasons). Raises MalformedMessage."""
    if detect_format(data) == "hl7v2":
        from .formats.hl7v2.reader import read_hl7v2

        return read_hl7v2(data, location=location, received_at=received_at)
    from .formats.fhir.reader import read_fhir

    return read_fhir(data, location=location, received_at=received_at)
