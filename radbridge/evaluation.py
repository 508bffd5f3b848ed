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
from typing import Callable, Sequence

from .labeler import abnormal, label

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


def laterality_disagreements(draft: str, findings: str) -> list[str]:
    """Observations the draft puts on a side on which the findings never mention them."""
    d, f = label(draft), label(findings)
    wrong = []
    for obs, sides in d.sides.items():
        fsides = f.sides.get(obs)
        if fsides and not sides <= fsides:
            wrong.append(obs)
    return sorted(wrong)


def mean_words(texts: Sequence[str]) -> float:
    return statistics.fmean(len(t.split()) for t in texts) if texts else 0.0


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
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            r = json.loads(line)
            if (r.get("findings") or "").strip() and (r.get("impression") or "").strip():
                out.append(r)
            if limit is not None and len(out) >= limit:
                break
    return out


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
    result["drafts"] = [{"uid": r.get("uid"), "draft": d} for r, d in zip(records, drafts)]
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


class _ModelDrafter:
    """A Drafter that also keeps each cleaned completion as the model wrote it (``completions``), before ``settle``."""

    def __init__(self, draft: Callable[[Sequence[dict], list[str]], list[str]]):
        self._draft = draft
        self.completions: list[str] = []

    def __call__(self, records: Sequence[dict]) -> list[str]:
        self.completions = []
        return self._draft(records, self.completions)


def model_drafter(generator, template, params, *, retriever=None, batch_size: int = 8, progress: bool = True) -> Drafter:
    """Prompts from radbridge.prompt (examples from the retriever when the template asks), generated in batches."""
    from . import prompt as P

    def draft(records: Sequence[dict], completions: list[str]) -> list[str]:
        findings = [r["findings"] for r in records]
        examples = (
            retriever.examples(findings, template.n_examples)
            if template.n_examples and retriever is not None
            else [[] for _ in records]
        )
        if template.n_examples and retriever is None:
            raise ValueError(f"template {template.id} needs retrieval examples: pass a training JSONL")
        prompts = [
            P.build(template, r["findings"], indication=r.get("indication"), comparison=r.get("comparison"), examples=ex)
            for r, ex in zip(records, examples)
        ]
        out: list[str] = []
        batches = range(0, len(prompts), batch_size)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="generate", unit="batch")
        for i in batches:
            chunk = prompts[i : i + batch_size]
            for prompt, g in zip(chunk, generator.generate(chunk, params), strict=True):
                completion = P.clean_completion(g.text)
                completions.append(completion)
                out.append(P.settle(template, prompt, completion)[0])
        return out

    return _ModelDrafter(draft)


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
            f" | model alone (before the wording policy, {result['wording_copied']} drafts changed): "
            f"RL={result['model_only']['rougeL']:.4f} clinF1={result['model_only']['clinical_f1']:.4f} "
            f"words={result['model_only']['mean_draft_words']:.2f}"
            if "model_only" in result
            else ""
        )
    )


def _model(backend: str, url: str | None, adapter: str | Path | None, batch_size: int):
    """The generator to evaluate and the prompt template its manifest names (None when it names none)."""
    if backend != "local":
        # a model server (TGI / OpenAI-compatible) serving the adapter by name: the same wiring as the service
        from .bootstrap import build_generator
        from .settings import Settings

        settings = Settings(backend=backend, model_url=url, adapter=str(adapter) if adapter else None)
        return build_generator(settings), None
    from .adapters.model.local import LocalGenerator

    if adapter in (None, "none"):
        return LocalGenerator(batch_size=batch_size), None
    if (Path(adapter) / "manifest.json").is_file():
        generator = LocalGenerator.from_manifest(adapter, batch_size=batch_size)
        return generator, generator.manifest.prompt_template
    return LocalGenerator(adapter, batch_size=batch_size), None


def run(
    data: str | Path,
    out: str | Path,
    *,
    limit: int | None = None,
    baseline: str | None = None,
    train: str | Path | None = None,
    adapter: str | Path | None = None,
    template_id: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    progress: bool = True,
    backend: str = "local",
    url: str | None = None,
) -> dict:
    """What ``radbridge eval`` does: one row of the results table, written as JSON.

    ``baseline`` constant|retrieval, or the local model: ``adapter`` a released folder (with manifest.json,
    whose prompt template is used), a bare PEFT folder, or "none" for the untuned base model.
    """
    from .domain import GenerationParams
    from .prompt import PromptTemplate
    from .retrieval import Retriever, default_examples_file

    records = read_records(data, limit)
    meta: dict = {"data": str(data), "limit": limit}
    train_file = Path(train) if train else default_examples_file()
    if baseline == "constant":
        drafter, meta["system"] = constant_drafter(), "constant"
    elif baseline == "retrieval":
        if train_file is None:
            raise ValueError("the retrieval baseline needs --train FILE.jsonl")
        drafter, meta["system"] = retrieval_drafter(Retriever.from_jsonl(train_file)), "retrieval"
        meta["train"] = str(train_file)
    elif baseline:
        raise ValueError(f"unknown baseline {baseline!r}: constant | retrieval")
    else:
        generator, manifest_template = _model(backend, url, adapter, batch_size)
        template = PromptTemplate.from_id(template_id or manifest_template or "paper-v1")
        retriever = Retriever.from_jsonl(train_file) if template.n_examples and train_file else None
        params = GenerationParams(max_new_tokens=max_new_tokens)
        drafter = model_drafter(generator, template, params, retriever=retriever, batch_size=batch_size, progress=progress)
        info = generator.info
        meta.update(system=backend, adapter=str(adapter) if adapter else None, adapter_sha256=info.adapter_sha256,
                    base_model=info.base_model, prompt_template=template.id, params=params.as_dict(),
                    batch_size=batch_size, train=str(train_file) if retriever else None)
    result = evaluate(records, drafter, meta)
    write_results(result, out)
    return result
