"""One audited case: a signed report, its draft, and how they compare (the row of cases.jsonl / cases.csv)."""

from __future__ import annotations

from ..domain import Draft, Report
from ..evaluation import rouge_per_report
from ..labeler import abnormal
from ..verify import laterality_disagreements

#: cases.csv columns, in order (lists are joined with "; ").
COLUMNS = (
    "key", "source", "message_id", "index", "format", "accession", "modality", "procedure_code", "procedure", "date",
    "status", "signed_impression", "draft", "rouge1", "rouge2", "rougeL", "clinical_tp", "clinical_fp", "clinical_fn",
    "found", "missed", "added", "laterality_errors", "flags", "signed_words", "draft_words", "scope_rule",
)


def report_fields(report: Report) -> dict:
    """Where a report came from and what exam it is: no report text, no patient identifier."""
    src = report.source
    acc = report.accession
    return {
        "key": src.key,
        "source": src.location,
        "message_id": src.message_id,
        "index": src.index,
        "format": src.format,
        "accession": acc.value if acc else None,
        "modality": report.modality,
        "procedure_code": report.procedure.code if report.procedure else None,
        "procedure": report.procedure.display if report.procedure else None,
        "date": report.effective.isoformat() if report.effective else None,
        "status": report.status,
    }


def score_case(draft: Draft, scope_rule: str | None = None) -> dict:
    """The case row of one draft: the draft beside the signed impression, scored against it and the findings."""
    report = draft.report
    signed, text = report.impression or "", draft.impression or ""
    rouge = rouge_per_report([text], [signed])[0]
    drafted, reference = abnormal(text), abnormal(signed)
    return {
        **report_fields(report),
        "signed_impression": signed,
        "draft": text,
        **{k: round(v, 4) for k, v in rouge.items()},
        "clinical_tp": len(drafted & reference),
        "clinical_fp": len(drafted - reference),
        "clinical_fn": len(reference - drafted),
        "found": sorted(drafted & reference),
        "missed": sorted(reference - drafted),
        "added": sorted(drafted - reference),
        "laterality_errors": laterality_disagreements(text, report.findings or ""),
        "flags": [fl.as_dict() for fl in draft.flags],
        "signed_words": len(signed.split()),
        "draft_words": len(text.split()),
        "scope_rule": scope_rule,
    }


def csv_row(case: dict) -> list:
    def cell(key: str):
        value = case.get(key)
        if key == "flags":
            return "; ".join(f"{f['kind']}:{f['observation']}" for f in value or ())
        if isinstance(value, list):
            return "; ".join(map(str, value))
        return "" if value is None else value

    return [cell(k) for k in COLUMNS]
