"""The audit folder: cases and skips appended (and flushed) as they finish, run.json, and what a resume needs.

A crash loses at most the batch in flight: every finished case is a complete line of cases.jsonl. On reopening,
a torn last line is cut off, cases.csv is rebuilt from cases.jsonl, and the keys already there are not drafted
again. A folder audited with another model, adapter, template or generation settings is refused.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ConfigurationError
from .cases import COLUMNS, csv_row

CASES, CASES_CSV, SKIPPED, RUN = "cases.jsonl", "cases.csv", "skipped.jsonl", "run.json"


class AuditRefused(ConfigurationError):
    """The folder holds an audit by another model or template: its cases would not be comparable."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_jsonl(path: Path) -> list[dict]:
    """Complete lines only; a torn last line (a crash mid-write) is cut from the file so appends stay clean."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    good = raw[: raw.rfind(b"\n") + 1]
    if len(good) != len(raw):
        with path.open("r+b") as f:
            f.truncate(len(good))
    return [json.loads(line) for line in good.splitlines() if line.strip()]


@dataclass
class AuditDir:
    path: Path
    identity: dict
    cases: list[dict] = field(default_factory=list)  # every case in the folder, earlier runs' included
    skipped: list[dict] = field(default_factory=list)
    run: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path, identity: dict) -> "AuditDir":
        path.mkdir(parents=True, exist_ok=True)
        run_file = path / RUN
        previous = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else None
        if previous is not None and previous.get("identity") != identity:
            differ = sorted(k for k in set(identity) | set(previous.get("identity", {}))
                            if identity.get(k) != previous.get("identity", {}).get(k))
            raise AuditRefused(
                f"{path} holds an audit made with another {', '.join(differ)}; its cases would not be comparable: "
                "use a new --out folder"
            )
        audit = cls(path, identity, read_jsonl(path / CASES), read_jsonl(path / SKIPPED), previous or {})
        audit._rewrite_csv()
        audit._cases = (path / CASES).open("a", encoding="utf-8")
        audit._skips = (path / SKIPPED).open("a", encoding="utf-8")
        audit._csv_file = (path / CASES_CSV).open("a", encoding="utf-8", newline="")
        audit._csv = csv.writer(audit._csv_file)
        audit.done = {c["key"] for c in audit.cases}
        audit.skipped_keys = {s["key"] for s in audit.skipped}
        return audit

    def _rewrite_csv(self) -> None:
        with (self.path / CASES_CSV).open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for c in self.cases:
                w.writerow(csv_row(c))

    def add_case(self, case: dict) -> None:
        self._cases.write(json.dumps(case, ensure_ascii=False, sort_keys=True) + "\n")
        self._cases.flush()
        self._csv.writerow(csv_row(case))
        self._csv_file.flush()
        self.cases.append(case)
        self.done.add(case["key"])

    def add_skip(self, row: dict) -> None:
        """A report (or file) not audited, with its reason; listed once however often the audit is resumed."""
        if row["key"] in self.skipped_keys:
            return
        self._skips.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        self._skips.flush()
        self.skipped.append(row)
        self.skipped_keys.add(row["key"])

    def counts(self) -> dict:
        return {"audited": len(self.cases), "skipped": len(self.skipped),
                "skipped_by_reason": dict(sorted(Counter(s["reason"] for s in self.skipped).items()))}

    def write_run(self, record: dict) -> None:
        """run.json, replaced atomically (a crash leaves the previous one, never half a file)."""
        self.run = {**record, "identity": self.identity, "counts": {**record.get("counts", {}), **self.counts()}}
        tmp = self.path / (RUN + ".tmp")
        tmp.write_text(json.dumps(self.run, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path / RUN)

    def close(self) -> None:
        for f in (self._cases, self._skips, self._csv_file):
            f.close()
