"""Evaluation of draft impressions, the same way for every row of the results table.

ROUGE-1/2/L (rouge-score, stemming on, F1 averaged over reports), clinical F1 (micro-F1 of the positive
abnormal observations the labeler finds in the draft vs the reference impression), laterality errors (the
draft names a side for an observation that the findings only describe on the other side), and lengths.
Baselines (constant, retrieval) and models go through ``evaluate`` alike.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .domain import Report, SourceRef, sha256_of
from .labeler import abnormal
from .verify import FlagKind, check, laterality_disagreements

if TYPE_CHECKING:
    from . import pipeline
    from .ports import Generator
    from .settings import Settings

CONSTANT_IMPRESSION = "No acute cardiopulmonary abnormality."

Drafter = Callable[[Sequence[dict]], list[str]]


ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def rouge_per_report(drafts: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """ROUGE-1/2/L F1 of each draft against its reference (rouge-score, stemming on)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    rows = []
    for d, r in zip(drafts, references, strict=True):
        s = scorer.score(r, d)  # (target, prediction)
        rows.append({k: s[k].fmeasure for k in ROUGE_KEYS})
    return rows


def mean_rouge(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    n = max(len(rows), 1)
    return {k: sum(row[k] for row in rows) / n for k in ROUGE_KEYS}


def rouge(drafts: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    return mean_rouge(rouge_per_report(drafts, references))


@dataclass(frozen=True)
class ClinicalCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def f1(self) -> float:
        # No positive mention anywhere on either side: nothing to get right, nothing got wrong.
        if self.tp + self.fp + self.fn == 0:
            return 1.0
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn)

    @classmethod
    def total(cls, counts: Sequence["ClinicalCounts"]) -> "ClinicalCounts":
        return cls(sum(c.tp for c in counts), sum(c.fp for c in counts), sum(c.fn for c in counts))


def clinical_counts_per_report(drafts: Sequence[str], references: Sequence[str]) -> list[ClinicalCounts]:
    out = []
    for d, r in zip(drafts, references, strict=True):
        pd, pr = abnormal(d), abnormal(r)
        out.append(ClinicalCounts(len(pd & pr), len(pd - pr), len(pr - pd)))
    return out


def clinical_counts(drafts: Sequence[str], references: Sequence[str]) -> ClinicalCounts:
    return ClinicalCounts.total(clinical_counts_per_report(drafts, references))


def clinical_f1(drafts: Sequence[str], references: Sequence[str]) -> float:
    return clinical_counts(drafts, references).f1


def mean_words(texts: Sequence[str]) -> float:
    return statistics.fmean(len(t.split()) for t in texts) if texts else 0.0


# Observations a radiologist words interchangeably for one finding on a chest film (for ``recall_related``).
FAMILY: dict[str, str] = {
    **{o: "parenchyma" for o in ("Lung Opacity", "Consolidation", "Pneumonia", "Atelectasis", "Edema", "Lung Lesion")},
    **{o: "pleura" for o in ("Pleural Effusion", "Pleural Other")},
    **{o: "heart and mediastinum" for o in ("Cardiomegaly", "Enlarged Cardiomediastinum")},
}


def checker_agreement(drafts: Sequence[str], references: Sequence[str], findings: Sequence[str]) -> tuple[dict, list[list[dict]]]:
    """The draft checker (radbridge.verify) run on every draft, and how well its flags agree with the reference.

    - laterality: the laterality errors this evaluation counts are the checker's laterality flags (one rule), so
      every one is flagged by construction;
    - omission: flagged omissions (or contradictions, which also name a finding the draft gets wrong) vs the
      observations the reference names and the draft misses (clinical false negatives): recall is the share of
      those misses that carry a flag, precision the share of omission flags that name one;
      ``recall_related`` also counts a miss as caught when the flag names an observation of the same family
      (``FAMILY``: the radiologist reads "opacity" and writes "atelectasis" or "pneumonia"; the flag still points
      the reader at that finding);
    - unsupported: flagged vs the observations the draft asserts and the reference does not (false positives).
    Returns the totals and each report's flags.
    """
    per_report: list[list[dict]] = []
    by_kind: dict[str, int] = {k.value: 0 for k in FlagKind}
    lat_real = lat_flagged = missed = missed_flagged = missed_related = om_flags = om_real = un_flags = un_real = fp_total = 0
    for d, r, f in zip(drafts, references, findings, strict=True):
        flags = check(d, f).flags
        per_report.append([fl.as_dict() for fl in flags])
        for fl in flags:
            by_kind[fl.kind.value] += 1
        # eval's laterality errors are the checker's laterality flags (one rule, radbridge.verify): recall is 1 by
        # construction, reported so the table says so
        lateral = {fl.observation for fl in flags if fl.kind is FlagKind.LATERALITY}
        lat_real += len(lateral)
        lat_flagged += len(lateral)
        draft_pos, ref_pos = abnormal(d), abnormal(r)
        misses, extras = ref_pos - draft_pos, draft_pos - ref_pos
        named = {fl.observation for fl in flags if fl.kind in (FlagKind.OMISSION, FlagKind.CONTRADICTION)}
        related = {FAMILY.get(o, o) for o in named}
        omitted = {fl.observation for fl in flags if fl.kind is FlagKind.OMISSION}
        unsupported = {fl.observation for fl in flags if fl.kind is FlagKind.UNSUPPORTED}
        missed += len(misses)
        missed_flagged += len(misses & named)
        missed_related += sum(1 for o in misses if FAMILY.get(o, o) in related)
        om_flags += len(omitted)
        om_real += len(omitted & misses)
        un_flags += len(unsupported)
        un_real += len(unsupported & extras)
        fp_total += len(extras)

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    totals = {
        "flags": by_kind,
        "drafts_flagged": sum(1 for rows in per_report if rows),
        "laterality": {"errors": lat_real, "flagged": lat_flagged, "recall": ratio(lat_flagged, lat_real)},
        "omission": {"reference_misses": missed, "flagged": missed_flagged, "recall": ratio(missed_flagged, missed),
                     "flagged_related": missed_related, "recall_related": ratio(missed_related, missed),
                     "flags": om_flags, "flags_naming_a_miss": om_real, "precision": ratio(om_real, om_flags)},
        "unsupported": {"false_positives": fp_total, "flags": un_flags, "flags_naming_one": un_real,
                        "precision": ratio(un_real, un_flags), "recall": ratio(un_real, fp_total)},
    }
    return totals, per_report


def score(drafts: Sequence[str], references: Sequence[str], findings: Sequence[str]) -> dict:
    counts = clinical_counts(drafts, references)
    lat = sum(len(laterality_disagreements(d, f)) for d, f in zip(drafts, findings, strict=True))
    rows = rouge_per_report(drafts, references)
    return {
        **mean_rouge(rows),
        "clinical_f1": counts.f1,
        "clinical_counts": {"tp": counts.tp, "fp": counts.fp, "fn": counts.fn},
        "laterality_errors": lat,
        "n": len(drafts),
        "mean_draft_words": mean_words(drafts),
        "mean_reference_words": mean_words(references),
        "by_reference": by_reference(drafts, references, rows),
    }


def by_reference(drafts: Sequence[str], references: Sequence[str], rows: Sequence[dict[str, float]]) -> dict[str, dict]:
    """The same figures split by whether the reference impression asserts an abnormal observation.

    Most OpenI studies are normal, so the overall figures hide how a system does on the abnormal minority:
    radiologists write long impressions there, and that is where a draft that says "normal" loses.
    ``rows`` are the per-report ROUGE scores; ``drafts_abnormal``: how many drafts in the group assert an
    abnormal observation themselves.
    """
    groups: dict[str, list[int]] = {"abnormal": [], "normal": []}
    for i, r in enumerate(references):
        groups["abnormal" if abnormal(r) else "normal"].append(i)
    out = {}
    for name, idx in groups.items():
        ds = [drafts[i] for i in idx]
        out[name] = {
            "n": len(idx),
            "rougeL": mean_rouge([rows[i] for i in idx])["rougeL"],
            "mean_draft_words": mean_words(ds),
            "mean_reference_words": mean_words([references[i] for i in idx]),
            "drafts_abnormal": sum(1 for d in ds if abnormal(d)),
        }
    return out


def read_records(path: str | Path, limit: int | None = None) -> list[dict]:
    """Reports with non-empty findings and impression, in file order; ``limit`` keeps the first N."""
    from .samples import read_jsonl

    kept = [r for r in read_jsonl(path) if (r.get("findings") or "").strip() and (r.get("impression") or "").strip()]
    return kept[:limit] if limit is not None else kept


def evaluate(records: Sequence[dict], drafter: Drafter, meta: dict | None = None) -> dict:
    """Draft every record, score against its own impression; the result includes every draft."""
    t0 = time.perf_counter()
    drafts = drafter(records)
    seconds = time.perf_counter() - t0
    references, findings = [r["impression"] for r in records], [r["findings"] for r in records]
    result = score(drafts, references, findings)
    result["seconds"] = round(seconds, 3)
    result["reports_per_second"] = round(len(records) / seconds, 3) if seconds > 0 else None
    result["meta"] = meta or {}
    result["checker"], flags = checker_agreement(drafts, references, findings)
    result["drafts"] = [{"uid": r.get("uid"), "draft": d, "flags": fl} for r, d, fl in zip(records, drafts, flags)]
    # A wording policy (+copynormal) replaced some completions: keep what the model wrote, and score it too, so
    # one run shows the model alone and the policy's effect on the same drafts.
    completions = getattr(drafter, "completions", None)
    if completions is not None and len(completions) == len(drafts) and completions != drafts:
        changed = [(row, c) for row, c, d in zip(result["drafts"], completions, drafts) if c != d]
        for row, c in changed:
            row["model_draft"] = c
        model_only = score(completions, references, findings)
        result["model_only"] = {k: v for k, v in model_only.items() if k != "by_reference"}
        result["wording_copied"] = len(changed)
    return result


# --- drafters -------------------------------------------------------------------------------------------


def constant_drafter(text: str = CONSTANT_IMPRESSION) -> Drafter:
    return lambda records: [text for _ in records]


def retrieval_drafter(retriever) -> Drafter:
    return lambda records: retriever.nearest_impressions([r["findings"] for r in records])


def consensus_drafter(retriever, k: int = 10) -> Drafter:
    return lambda records: retriever.consensus_impressions([r["findings"] for r in records], k)


def record_report(record: dict, location: str | None = None) -> Report:
    """An evaluation record (findings, indication, comparison) as the domain Report the pipeline drafts."""
    body = json.dumps(record, sort_keys=True, ensure_ascii=False).encode()
    uid = record.get("uid")
    source = SourceRef(format="jsonl", sha256=sha256_of(body), message_id=None if uid is None else str(uid),  # type: ignore[arg-type]
                       location=location)
    return Report(source=source, status="preliminary", indication=record.get("indication") or None,
                  comparison=record.get("comparison") or None, findings=record.get("findings") or "")


class PipelineDrafter:
    """Drafts records through the pipeline's ``Drafter`` (the path messages take), ``batch_size`` at a time.

    ``completions`` keeps what the model wrote for each, before a wording policy (+copynormal) replaced it.
    """

    def __init__(self, drafter: "pipeline.Drafter", *, batch_size: int = 8, progress: bool = True):
        self.drafter = drafter
        self.batch_size = batch_size
        self.progress = progress
        self.completions: list[str] = []

    def __call__(self, records: Sequence[dict]) -> list[str]:
        reports = [record_report(r, f"record {i}") for i, r in enumerate(records)]
        batches = range(0, len(reports), self.batch_size)
        if self.progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="generate", unit="batch")
        drafts = [d for i in batches for d in self.drafter.draft_reports(reports[i : i + self.batch_size])]
        self.completions = [d.impression if d.model_text is None else d.model_text for d in drafts]
        return [d.impression for d in drafts]


def write_results(result: dict, out: str | Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def summary_line(result: dict) -> str:
    return (
        f"n={result['n']} R1={result['rouge1']:.4f} R2={result['rouge2']:.4f} RL={result['rougeL']:.4f} "
        f"clinF1={result['clinical_f1']:.4f} lat={result['laterality_errors']} "
        f"words={result['mean_draft_words']:.1f}/{result['mean_reference_words']:.1f}"
        + "".join(
            f" | {name}: n={g['n']} RL={g['rougeL']:.4f} words={g['mean_draft_words']:.1f}/"
            f"{g['mean_reference_words']:.1f} drafts_abnormal={g['drafts_abnormal']}"
            for name, g in result.get("by_reference", {}).items()
        )
        + (
            f" | checker: flags={result['checker']['flags']} lateral {result['checker']['laterality']['flagged']}/"
            f"{result['checker']['laterality']['errors']} omission recall {result['checker']['omission']['recall']} "
            f"precision {result['checker']['omission']['precision']}"
            if "checker" in result
            else ""
        )
        + (
            f" | model alone (before the wording policy, {result['wording_copied']} drafts changed): "
            f"RL={result['model_only']['rougeL']:.4f} clinF1={result['model_only']['clinical_f1']:.4f} "
            f"words={result['model_only']['mean_draft_words']:.2f}"
            if "model_only" in result
            else ""
        )
    )


def run(
    settings: "Settings",
    data: str | Path,
    out: str | Path,
    *,
    limit: int | None = None,
    baseline: str | None = None,
    train: str | Path | None = None,
    batch_size: int = 8,
    progress: bool = True,
    generator: "Generator | None" = None,
) -> dict:
    """What ``radbridge eval`` does: one row of the results table, written as JSON.

    ``baseline`` constant|retrieval|consensus (the nearest impression that agrees most with the other 9 nearest);
    otherwise the model ``settings`` configure (built by ``bootstrap``, as the
    service builds it: a released adapter's manifest names the prompt template), drafting through the pipeline's
    ``Drafter``. ``train``: the reports the retrieval baseline answers from.
    """
    from .retrieval import Retriever, default_examples_file

    records = read_records(data, limit)
    meta: dict = {"data": str(data), "limit": limit}
    if baseline == "constant":
        drafter, meta["system"] = constant_drafter(), "constant"
    elif baseline in ("retrieval", "consensus"):
        train_file = Path(train) if train else default_examples_file()
        if train_file is None:
            raise ValueError(f"the {baseline} baseline needs --train FILE.jsonl")
        retriever = Retriever.from_jsonl(train_file)
        drafter = retrieval_drafter(retriever) if baseline == "retrieval" else consensus_drafter(retriever)
        meta["system"], meta["train"] = baseline, str(train_file)
    elif baseline:
        raise ValueError(f"unknown baseline {baseline!r}: constant | retrieval | consensus")
    else:
        from .bootstrap import build_drafter

        pipeline = build_drafter(settings, generator)
        drafter = PipelineDrafter(pipeline, batch_size=batch_size, progress=progress)
        info, template = pipeline.generator.info, pipeline.template
        meta.update(system=settings.backend, adapter="none" if settings.no_adapter else info.adapter,
                    adapter_sha256=info.adapter_sha256, base_model=info.base_model, numerics=info.numerics or "float32",
                    prompt_template=template.id,
                    params=pipeline.params.as_dict(), batch_size=batch_size,
                    train=str(settings.examples_file or default_examples_file()) if template.n_examples else None)
    result = evaluate(records, drafter, meta)
    write_results(result, out)
    return result
