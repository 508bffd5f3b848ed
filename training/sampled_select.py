"""Selection among *sampled* drafts of the model (issue 16's MBR suggestion), measured on the tune part only.

    RADBRIDGE_LOCAL_DTYPE=float32 python -m training.sampled_select runs/results/all30_2ep_select5_tune.json \
        --adapter runs/all30-2ep/adapter --template paper-v1+examples2+exwords20+sim+fwords60 \
        --data runs/data/valid-tune.jsonl --train runs/data/train.jsonl \
        --baseline runs/results/retrieval_valid_checker.json --samples runs/results/all30_2ep_samples_tune.json

``+select<k>`` chooses among the greedy draft and the k nearest signed impressions, and the signed impressions are
short, so selection shortens the drafts (docs/model-results.md). Here the candidates are the greedy draft of the
results file given first (its ``model_draft``) and N drafts sampled from the same model with the same prompts
(temperature sampling, one seed per sample), so they are as long as the model writes. The samples are generated
once through the pipeline (as ``radbridge eval`` drafts) and kept in ``--samples``; a rerun reuses them.

Policies, each the minimum-Bayes-risk choice of ``radbridge.prompt.most_agreed`` with the findings term of
``+select`` (SELECT_FINDINGS_WEIGHT): among the model's drafts only (greedy and samples, weight 1 each), and among
those plus the k=5 nearest signed impressions (weight = similarity). Printed with training.length_policies'
table. Never run on the confirm part.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from radbridge.evaluation import PipelineDrafter
from radbridge.labeler import abnormal
from radbridge.prompt import SELECT_FINDINGS_WEIGHT, findings_agreement, most_agreed, selectable
from radbridge.retrieval import Retriever

from .goals import read_drafts
from .length_policies import local_drafter, print_table, tune_drafts


def sample_drafts(records: list[dict], *, adapter: str, template: str, train: Path, n: int, temperature: float,
                  top_p: float | None, batch_size: int = 8) -> list[list[str]]:
    """``n`` sampled model drafts per record (seeds 1..n), through the pipeline's Drafter as ``radbridge eval``."""
    drafter = local_drafter(adapter, template, train, batch_size)
    if drafter.template.select_from or drafter.template.copy_normal:
        raise SystemExit("sampled_select: --template must have no wording policy (the model's own drafts are wanted)")
    greedy = drafter.params
    samples: list[list[str]] = [[] for _ in records]
    for seed in range(1, n + 1):
        drafter.params = dataclasses.replace(greedy, do_sample=True, temperature=temperature, top_p=top_p, seed=seed)
        for i, text in enumerate(PipelineDrafter(drafter, batch_size=batch_size, progress=True)(records)):
            samples[i].append(text)
    return samples


def choose(texts: list[str], weights: list[float], findings: str) -> str:
    asserted = abnormal(findings)
    return texts[most_agreed(texts, weights, lambda t: SELECT_FINDINGS_WEIGHT * findings_agreement(t, asserted))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="radbridge eval results of the same adapter (greedy model_draft)")
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--template", required=True, help="the results' template without its wording policy")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--samples", type=Path, required=True, help="JSON the samples are kept in (reused when present)")
    ap.add_argument("-n", type=int, default=4, help="sampled drafts per report")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=None)
    ap.add_argument("--baseline", type=Path, help="results file to compare ROUGE-L against (e.g. retrieval)")
    ap.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args(argv)
    records, greedy = tune_drafts("sampled_select", args.results, args.data)
    setup = {"adapter": args.adapter, "template": args.template, "data": str(args.data), "n": args.n,
             "temperature": args.temperature, "top_p": args.top_p}
    kept = json.loads(args.samples.read_text()) if args.samples.is_file() else None
    if kept and kept["setup"] == setup and [row["uid"] for row in kept["drafts"]] == [r["uid"] for r in records]:
        samples = [row["samples"] for row in kept["drafts"]]
    else:
        samples = sample_drafts(records, adapter=args.adapter, template=args.template, train=args.train, n=args.n,
                                temperature=args.temperature, top_p=args.top_p)
        args.samples.write_text(json.dumps({"setup": setup, "drafts": [
            {"uid": r["uid"], "samples": s} for r, s in zip(records, samples)]}, indent=1, ensure_ascii=False) + "\n")
    findings = [r["findings"] for r in records]
    nearest = [list(reversed(exs))[:5] for exs in Retriever.from_jsonl(args.train).examples(findings, 5)]

    policies: dict[str, list[str]] = {"model alone (greedy)": greedy}
    for m in range(1, args.n + 1):
        policies[f"MBR greedy + {m} samples"] = [
            choose([g] + s[:m], [1.0] * (m + 1), f) for g, s, f in zip(greedy, samples, findings)]
    for w in (1.0, 0.5):
        policies[f"MBR greedy + {args.n} samples (w {w}) + 5 nearest"] = [
            choose([g] + s + [ex.impression.strip() for ex in pool],
                   [1.0] + [w] * len(s) + [ex.similarity or 0.0 for ex in pool], f)
            for g, s, f, pool in zip(greedy, samples, findings, (selectable(n, f) for n, f in zip(nearest, findings)))]
    print_table(policies, records, read_drafts(args.baseline) if args.baseline else None, args.resamples)


if __name__ == "__main__":
    main()
