"""Drafting from files: the `radbridge draft` command's loop (the pipeline core does not know it is a file)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from .errors import PermanentError
from .pipeline import Drafter, Envelope, Outcome
from .limits import DEFAULT_LIMITS, Limits
from .redact import safe_id
from .reading import split_payload

log = logging.getLogger(__name__)


def envelopes_from_files(
    paths: Iterable[Path], limits: Limits = DEFAULT_LIMITS
) -> Iterator[Envelope | tuple[str, PermanentError]]:
    """One Envelope per message (a batch file holds several); unreadable files yield (location, error)."""
    for path in paths:
        data = path.read_bytes()
        try:
            messages = split_payload(data, limits).messages
        except PermanentError as exc:
            yield str(path), exc
            continue
        for i, message in enumerate(messages):
            yield Envelope(message, location=f"{path}#{i}" if len(messages) > 1 else str(path))


def outcome_records(outcome: Outcome) -> list[dict]:
    """What `draft` prints for one message: one Bundle per drafted report, or a skip/error record that says why."""
    if outcome.status == "drafted":
        return list(outcome.bundles)
    # the source is the operator's own path; the message id is the sender's text, printed only when id-shaped
    message_id = safe_id(outcome.message_id) if outcome.message_id else None
    base = {"source": outcome.envelope.location, "message_id": message_id, "format": outcome.format}
    if outcome.status == "rejected":
        err = outcome.error
        return [{"status": "error", **base, "error": err.kind, "reason": str(err)}]  # type: ignore[union-attr]
    return [{
        "status": "skipped",
        **base,
        "skipped": [{"index": s.source.index, "reason": s.reason.value, "detail": s.detail} for s in outcome.skipped],
    }]


def error_record(location: str, error: PermanentError) -> dict:
    return {"status": "error", "source": location, "message_id": None, "error": error.kind, "reason": str(error)}


def draft_files(drafter: Drafter, paths: Iterable[Path], *, out: TextIO, batch_size: int = 8) -> bool:
    """Draft every message in the files, print one JSON line per drafted report (a skipped or malformed message:
    one line saying why); False if any was malformed."""
    ok = True
    batch: list[Envelope] = []
    line = 0  # the output line a log entry is about: file names are not logged (a sender may have chosen them)

    def flush() -> None:
        nonlocal ok, line
        for outcome in drafter.process(batch):
            ok &= outcome.status != "rejected"
            records = outcome_records(outcome)
            for s in outcome.skipped:
                log.info("skipped", extra={"output_line": line + 1, "index": s.source.index, "reason": s.reason.value})
            for rec in records:
                out.write(json.dumps(rec, sort_keys=True) + "\n")
            line += len(records)
            for oru in outcome.oru:  # --oru: the same draft as an HL7 v2 ORU^R01, one JSON line each
                out.write(json.dumps({"status": "oru", "source": outcome.envelope.location, "hl7v2": oru.decode()}) + "\n")
            line += len(outcome.oru)
        out.flush()
        batch.clear()

    for item in envelopes_from_files(paths, drafter.limits):
        if isinstance(item, Envelope):
            batch.append(item)
            if len(batch) >= batch_size:
                flush()
        else:
            if batch:
                flush()
            ok = False
            line += 1
            out.write(json.dumps(error_record(*item), sort_keys=True) + "\n")
    if batch:
        flush()
    return ok
