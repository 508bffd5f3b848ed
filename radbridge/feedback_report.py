"""The sign-off feedback report: acceptance by week, procedure and adapter, and the most edited cases (ids only).

Reads the feedback records (radbridge.service.signoff) from any iterable of JSON bytes (the topic, via the audit's
KafkaSource, or files) and writes CSV files and one self-contained HTML page (no external assets, the audit's look).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Iterable

from .audit.report_html import CSS, _bars, _svg
from .feedback import SignoffOutcome

COMPARED = tuple(o.value for o in SignoffOutcome if o is not SignoffOutcome.NO_DRAFT)  # a draft was compared
OUTCOMES = (*COMPARED, "no_draft", "no_impression")
MOST_EDITED = 25
CASE_FIELDS = ("accession", "signed_report", "signed_at", "procedure", "outcome", "draft", "adapter", "model",
               "template", "edit_ratio", "rouge_l", "edit_distance", "added", "removed", "laterality_changed",
               "flags", "flags_acted_on", "seconds_to_sign")


def load(values: Iterable[bytes]) -> list[dict]:
    """The feedback records, one per accession and signed report version (a redelivered record counts once;
    other JSON on the topic is ignored)."""
    latest: dict[tuple, dict] = {}
    for value in values:
        try:
            record = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            continue
        if not isinstance(record, dict) or record.get("type") != "signoff-feedback":
            continue
        key = ((record.get("accession") or {}).get("value"), record.get("signedReport"))
        latest[key] = record
    return list(latest.values())


def case_row(record: dict) -> dict:
    draft = (record.get("drafts") or [{}])[-1]
    flags = draft.get("flags") or []
    return {
        "accession": (record.get("accession") or {}).get("value"),
        "signed_report": record.get("signedReport"),
        "signed_at": record.get("signedAt"),
        "procedure": record.get("procedure"),
        "outcome": record.get("outcome"),
        "draft": (draft.get("draft") or {}).get("value"),
        "adapter": draft.get("adapter"),
        "model": draft.get("model"),
        "template": draft.get("template"),
        "edit_ratio": draft.get("edit_ratio"),
        "rouge_l": draft.get("rouge_l"),
        "edit_distance": draft.get("edit_distance"),
        "added": ";".join(draft.get("added") or []),
        "removed": ";".join(draft.get("removed") or []),
        "laterality_changed": ";".join(draft.get("laterality_changed") or []),
        "flags": len(flags),
        "flags_acted_on": sum(1 for f in flags if f.get("acted_on")),
        "seconds_to_sign": draft.get("seconds_to_sign"),
    }


def _week(signed_at: str | None) -> str:
    if not signed_at:
        return "unknown"
    year, week, _ = datetime.fromisoformat(signed_at).isocalendar()
    return f"{year}-W{week:02d}"


def group(rows: list[dict], by) -> list[dict]:
    """Counts per outcome and the acceptance rates of one grouping (rates over the compared sign-offs)."""
    groups: dict[str, dict] = defaultdict(lambda: {o: 0 for o in OUTCOMES})
    for row in rows:
        counts = groups[str(by(row) or "unknown")]
        if row["outcome"] in counts:
            counts[row["outcome"]] += 1
    out = []
    for name in sorted(groups):
        counts = groups[name]
        compared = sum(counts[o] for o in COMPARED)
        out.append({
            "group": name, "signed": sum(counts.values()), "compared": compared, **counts,
            "accepted_rate": round(counts["accepted"] / compared, 4) if compared else None,
            "accepted_or_light_rate": round((counts["accepted"] + counts["light_edit"]) / compared, 4) if compared else None,
        })
    return out


def most_edited(rows: list[dict], n: int = MOST_EDITED) -> list[dict]:
    compared = [r for r in rows if r["outcome"] in COMPARED and r["edit_ratio"] is not None]
    return sorted(compared, key=lambda r: (-r["edit_ratio"], r["accession"] or ""))[:n]


def _write_csv(path: Path, rows: list[dict], fields: Iterable[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)


def _table(rows: list[dict], fields: Iterable[str]) -> str:
    fields = list(fields)
    head = "".join(f"<th>{escape(f)}</th>" for f in fields)
    body = "".join("<tr>" + "".join(f"<td>{escape('' if r.get(f) is None else str(r.get(f)))}</td>" for f in fields)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(rows: list[dict], tables: dict[str, list[dict]], edited: list[dict], period: str) -> str:
    total = group(rows, lambda r: "all")
    figs = total[0] if total else {}
    weeks = tables["by_week"]
    plot = _svg("Accepted or lightly edited, % of compared sign-offs, by week",
                _bars([w["group"] for w in weeks], [round(100 * (w["accepted_or_light_rate"] or 0)) for w in weeks],
                      "ISO week", "%"), "weeks")
    group_fields = ("group", "signed", "compared", *OUTCOMES, "accepted_rate", "accepted_or_light_rate")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>radbridge sign-off feedback</title>",
        f"<style>{CSS}</style></head><body><h1>Sign-off feedback</h1>",
        f"<p class='meta'>{escape(period)} · {len(rows)} signed reports · ids, classes and scores only</p>",
        "<div class='figs'>",
        *(f"<div class='fig'><b>{escape(str(figs.get(k) if figs.get(k) is not None else '–'))}</b><small>{escape(k)}</small></div>"
          for k in ("signed", "compared", "accepted_rate", "accepted_or_light_rate", "no_draft", "no_impression")),
        f"</div><div class='plots'>{plot}</div>",
    ]
    for name, title in (("by_week", "By week"), ("by_procedure", "By procedure"), ("by_adapter", "By adapter version")):
        parts.append(f"<h2>{title}</h2>{_table(tables[name], group_fields)}")
    parts.append(f"<h2>Most edited ({len(edited)})</h2>{_table(edited, CASE_FIELDS)}</body></html>")
    return "".join(parts)


def write_report(records: list[dict], out: Path, *, period: str = "") -> dict:
    """feedback.csv (one row per signed report), by_week/by_procedure/by_adapter.csv, most_edited.csv, report.html."""
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted((case_row(r) for r in records), key=lambda r: (r["signed_at"] or "", r["accession"] or ""))
    tables = {
        "by_week": group(rows, lambda r: _week(r["signed_at"])),
        "by_procedure": group(rows, lambda r: r["procedure"]),
        "by_adapter": group(rows, lambda r: r["adapter"] or (r["model"] if r["draft"] else None)),
    }
    edited = most_edited(rows)
    _write_csv(out / "feedback.csv", rows, CASE_FIELDS)
    group_fields = ("group", "signed", "compared", *OUTCOMES, "accepted_rate", "accepted_or_light_rate")
    for name, table in tables.items():
        _write_csv(out / f"{name}.csv", table, group_fields)
    _write_csv(out / "most_edited.csv", edited, CASE_FIELDS)
    (out / "report.html").write_text(render(rows, tables, edited, period), encoding="utf-8")
    counts = {o: sum(1 for r in rows if r["outcome"] == o) for o in OUTCOMES}
    return {"signed": len(rows), **counts}

