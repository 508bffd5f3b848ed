"""The audit loop: read the source, keep signed in-scope reports, draft them in batches, score, write.

Reports are read and drafted in source order, so a resumed run and a sample see the same history. Nothing here
writes to a topic or a FHIR server: the only outputs are the files of the audit folder.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .. import __version__
from ..domain import CLOSED_STATUSES, FINAL_STATUSES, Report, Skipped, sha256_of
from ..errors import MalformedMessage, PermanentError
from ..pipeline import Drafter, Envelope
from ..reading import read_payload
from .cases import score_case
from .sources import Source, Unreadable
from .writer import AuditDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filters:
    modality: tuple[str, ...] = ()  # OBR-24 / category codes, case-insensitive
    procedure: tuple[str, ...] = ()  # procedure code, or a word of its name
    limit: int | None = None
    sample: int | None = None
    seed: int = 0

    def keeps(self, report: Report) -> bool:
        if self.modality and (report.modality or "").upper() not in {m.upper() for m in self.modality}:
            return False
        if self.procedure:
            code = (report.procedure.code or "") if report.procedure else ""
            name = (report.procedure.display or "").lower() if report.procedure else ""
            if not any(p == code or p.lower() in name for p in self.procedure):
                return False
        return True

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


class NothingAudited(Exception):
    """Zero reports audited: the message says why (what was read and why each was skipped)."""


def identity(drafter: Drafter) -> dict:
    """What makes two drafts of one report comparable: a folder holds one identity."""
    info = drafter.generator.info
    return {"backend": info.backend, "base_model": info.base_model, "base_model_sha256": info.base_model_sha256,
            "adapter": info.adapter, "adapter_sha256": info.adapter_sha256, "template": drafter.template.id,
            "params": drafter.params.as_dict(),
            # other numerics word some drafts differently; only named when not float32, so older folders still match
            **({"numerics": info.numerics} if info.numerics else {})}


def _skip_row(key: str, location: str | None, index: int, reason: str, detail: str) -> dict:
    return {"key": key, "source": location, "index": index, "reason": reason, "detail": detail}


class _Selection:
    """Reports to draft, in source order; skips go to the folder as they are read."""

    def __init__(self, source: Source, drafter: Drafter, audit: AuditDir, filters: Filters):
        self.source, self.drafter, self.audit, self.filters = source, drafter, audit, filters
        self.read = self.filtered_out = self.resumed = self.not_selected = 0
        self.scope_rules: dict[str, str] = {}

    def _skip(self, key, location, index, reason, detail="") -> None:
        self.audit.add_skip(_skip_row(key, location, index, reason, detail))

    def _items(self, envelope: Envelope) -> Iterator[Report | Skipped]:
        try:
            # a payload is read whole, as the pipeline reads it: one unreadable message makes it unreadable
            yield from read_payload(envelope.data, location=envelope.location, received_at=envelope.received_at,
                                    limits=self.drafter.limits)[1]
        except PermanentError as exc:
            self._skip(f"{sha256_of(envelope.data)[:32]}-msg", envelope.location, 0, "unreadable", str(exc))
        except Exception as exc:  # a reader bug lists the message; it must not end an audit of years of history
            error = MalformedMessage(f"unreadable message ({type(exc).__name__})")
            self._skip(f"{sha256_of(envelope.data)[:32]}-msg", envelope.location, 0, "unreadable", str(error))

    def _eligible(self) -> Iterator[Report]:
        """Signed, in-scope reports passing the filters (finished ones included: they count toward --limit)."""
        for item in self.source.envelopes():
            if isinstance(item, Unreadable):
                self._skip(f"{sha256_of(item.data)[:32]}-file", item.location, 0, "unreadable", str(item.error))
                continue
            for r in self._items(item):
                self.read += 1
                src = r.source
                if isinstance(r, Skipped):
                    self._skip(src.key, src.location, src.index, r.reason.value, r.detail)
                elif not self.filters.keeps(r):
                    self.filtered_out += 1
                elif r.status in CLOSED_STATUSES:
                    self._skip(src.key, src.location, src.index, "cancelled", f"status {r.status}")
                elif r.status not in FINAL_STATUSES:
                    # an unsigned report has no radiologist's impression to audit against
                    self._skip(src.key, src.location, src.index, "not_signed", f"status {r.status}")
                elif not (r.impression or "").strip():
                    self._skip(src.key, src.location, src.index, "no_signed_impression",
                               "signed, but no impression section or conclusion")
                elif self.drafter.scope.declared and not (d := self.drafter.scope.decide(r)).in_scope:
                    self._skip(src.key, src.location, src.index, "out_of_scope", d.detail)
                else:
                    if self.drafter.scope.declared:
                        self.scope_rules[src.key] = d.rule
                    yield r

    def reports(self) -> Iterator[Report]:
        eligible: Iterator[Report] | list[Report] = self._eligible()
        f = self.filters
        if f.sample is not None:
            pool = list(eligible)
            if f.sample < len(pool):
                chosen = sorted(random.Random(f.seed).sample(range(len(pool)), f.sample))
                self.not_selected += len(pool) - len(chosen)
                pool = [pool[i] for i in chosen]
            eligible = pool
        taken = 0
        for r in eligible:
            if f.limit is not None and taken >= f.limit:
                self.not_selected += 1
                continue
            taken += 1
            if r.source.key in self.audit.done:
                self.resumed += 1
                continue
            yield r

    def counts(self) -> dict:
        return {"read": self.read, "filtered_out": self.filtered_out, "not_selected": self.not_selected}


def _batches(reports: Iterator[Report], size: int) -> Iterator[list[Report]]:
    batch: list[Report] = []
    for r in reports:
        batch.append(r)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Progress:
    """A bar with ETA on a terminal; otherwise a JSON log line every ``every_s`` seconds."""

    def __init__(self, total: int | None, every_s: float = 10.0):
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="audit", unit="report")
        self.n, self.every_s, self.last = 0, every_s, time.monotonic()

    def update(self, n: int, audited: int) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            log.info("audit progress", extra={"drafted_this_run": self.n, "audited": audited})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def audit(
    source: Source, drafter: Drafter, out: Path, *, filters: Filters = Filters(), batch_size: int = 8,
    on_case=None, bundles: bool = False,
) -> dict:
    """Audit ``source`` into the folder ``out`` (resuming what is there); returns run.json's record.

    Raises AuditRefused (another model in ``out``), NothingAudited (no case at all), and whatever stops the
    source or the model (run.json then says ``interrupted``; running again continues).
    """
    folder = AuditDir.open(out, identity(drafter))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    selection = _Selection(source, drafter, folder, filters)
    record = {"radbridge_version": __version__, "source": source.describe(), "filters": filters.as_dict(),
              "started": started, "status": "running", "runs": folder.run.get("runs", 0) + 1,
              "first_started": folder.run.get("first_started", started)}
    folder.write_run(record)
    progress = _Progress(filters.sample or filters.limit)
    t0 = time.perf_counter()
    drafted = 0
    try:
        for batch in _batches(selection.reports(), batch_size):
            for d in drafter.draft_reports(batch):
                case = score_case(d, selection.scope_rules.get(d.report.source.key))
                if bundles and d.impression.strip():
                    _write_bundle(out, d)  # before the case row: a resumed run never lacks a finished case's Bundle
                folder.add_case(case)
                if on_case is not None:
                    on_case(case)
            drafted += len(batch)
            progress.update(len(batch), len(folder.cases))
    except BaseException as exc:
        record.update(status="interrupted", error=type(exc).__name__, ended=_now())
        record["counts"] = {**selection.counts(), "resumed_cases": selection.resumed, "drafted_this_run": drafted}
        folder.write_run(record)
        folder.close()
        progress.close()
        raise
    progress.close()
    seconds = time.perf_counter() - t0
    record.update(status="complete", ended=_now(), seconds=round(seconds, 3),
                  reports_per_second=round(drafted / seconds, 2) if seconds > 0 and drafted else None)
    record["counts"] = {**selection.counts(), "resumed_cases": selection.resumed, "drafted_this_run": drafted}
    folder.write_run(record)
    folder.close()
    log.info("audit finished", extra={k: v for k, v in folder.run["counts"].items() if k != "skipped_by_reason"})
    if not folder.cases:
        c = folder.run["counts"]
        raise NothingAudited(
            f"no report audited: {c['read']} read, {c['filtered_out']} filtered out, skipped by reason "
            f"{c['skipped_by_reason'] or 'none'} (an audit needs signed reports with an impression, in the model's scope)"
        )
    return folder.run


def _write_bundle(out: Path, draft) -> None:
    """The draft's transaction Bundle under DIR/bundles/, marked as a replay, ids keyed by source and model."""
    from ..formats.fhir.writer import build_bundle, bundle_bytes, draft_key

    folder = out / "bundles"
    folder.mkdir(exist_ok=True)
    bundle = build_bundle(draft, recorded=datetime.now(timezone.utc), replay=True)
    path = folder / f"{draft_key(draft, replay=True)}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(bundle_bytes(bundle))
    tmp.replace(path)  # whole or absent, never half-written


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
