"""The records the service writes: a draft Bundle on the output topic, the original bytes on the dead-letter topic,
a retirement notice on the output topic when a draft's signed report arrived.

Everything here is derived from the source record and the Outcome, never from the clock, so a redelivery
after a crash writes byte-identical records that downstream can de-duplicate by key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..redact import safe_id

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers


def _h(name: str, value: Any) -> tuple[str, bytes]:
    return (name, str(value).encode("utf-8"))


def source_headers(record) -> Headers:
    return [_h("source-topic", record.topic), _h("source-partition", record.partition), _h("source-offset", record.offset)]


def model_label(model) -> str:
    label = f"{model.backend}:{model.base_model}"
    return f"{label}+{model.adapter}" if model.adapter else label


def output_record(topic: str, record, outcome, index: int, value: bytes) -> OutRecord:
    """The Bundle of draft ``index`` of ``outcome``, keyed by its report (``SourceRef.key``,
    ``<sha256[:32]>-<report index>``): one record per report, so a message of many reports never makes one
    oversized record, and the latest record per key is that report's draft (a retirement reuses the key)."""
    draft = outcome.drafts[index]
    headers = [("content-type", b"application/fhir+json"), *source_headers(record)]
    if outcome.message_id:
        headers.append(_h("message-id", safe_id(outcome.message_id)))
    if outcome.format:
        headers.append(_h("source-format", outcome.format))
    headers.append(_h("report-index", draft.report.source.index))
    headers.append(_h("prompt-version", draft.prompt_version))
    headers.append(_h("model", model_label(draft.model)))
    kinds = sorted({f.kind.value for f in draft.flags})
    if kinds:  # lets a consumer route or hold flagged drafts without parsing the Bundle
        headers.append(_h("draft-flags", ",".join(kinds)))
    return OutRecord(topic, draft.report.source.key.encode("ascii"), value, headers)


def retirement_record(topic: str, record, outcome, notice: dict) -> OutRecord:
    """A draft's retirement, keyed like that draft's record (latest per key wins, as in a compacted topic).

    ``notice`` holds ids and statuses only (radbridge.formats.fhir.retire.retirement_notice); canonical JSON and
    source-derived headers, so a redelivery writes the same bytes.
    """
    headers = [("content-type", b"application/json"), _h("record-type", "draft-retired"), *source_headers(record)]
    if outcome.message_id:
        headers.append(_h("message-id", safe_id(outcome.message_id)))
    value = json.dumps(notice, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return OutRecord(topic, notice["draft"]["value"].encode("ascii"), value, headers)


def feedback_out_record(topic: str, record, key: str, value: bytes) -> OutRecord:
    """A sign-off feedback record (radbridge.service.signoff), keyed by accession and signed report version, so a
    redelivery writes the same key and bytes. ``value`` holds ids, classes and scores only."""
    headers = [("content-type", b"application/json"), _h("record-type", "signoff-feedback"), *source_headers(record)]
    return OutRecord(topic, key.encode("utf-8"), value, headers)


def reason_of(error: BaseException) -> str:
    """One line, bounded: DLQ headers must stay small and must not carry report text or any value a sender wrote
    (errors name places, our vocabulary and standard-shaped codes: tests/unit/test_no_echo.py)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:500]


def dead_letter_record(topic: str, record, error: BaseException, message_id: str | None = None) -> OutRecord:
    """The ORIGINAL key and value, untouched, plus why and where from: an operator can fix and re-publish it."""
    headers = list(record.headers or [])
    headers += [
        _h("dlq-error-type", getattr(error, "kind", type(error).__name__)),
        _h("dlq-error-class", type(error).__name__),
        _h("dlq-reason", reason_of(error)),
        *[(f"dlq-{name}", value) for name, value in source_headers(record)],
        _h("dlq-source-timestamp", record.timestamp),
    ]
    if message_id:
        headers.append(_h("dlq-message-id", safe_id(message_id)))
    return OutRecord(topic, record.key, record.value, headers)


def oru_record(topic: str, record, outcome, index: int) -> OutRecord:
    """Draft ``index`` of ``outcome`` as an HL7 v2 ORU^R01 (result status P), keyed like its Bundle's record."""
    headers = [("content-type", b"x-application/hl7-v2+er7"), *source_headers(record)]
    if outcome.message_id:
        headers.append(_h("message-id", safe_id(outcome.message_id)))
    headers.append(_h("report-index", outcome.drafts[index].report.source.index))
    return OutRecord(topic, outcome.drafts[index].report.source.key.encode("ascii"), outcome.oru[index], headers)
