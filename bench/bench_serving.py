"""Local serving paths side by side, in one run: the LoRA applied per layer (PEFT hooks), merged into the base
weights (float32), merged in bfloat16, and merged + dynamic int8 Linear layers.

    .venv/bin/python bench/bench_serving.py [--reports 48] [--batch 8] [--rounds 2]

Same prompts (the shipped adapter's manifest template, OpenI valid reports from ../shared), greedy, the service's
max_new_tokens. Each path drafts every report; rounds alternate the paths so a busy machine slows them alike. Prints
reports/s per path, the ratio to the unmerged path, and how many drafts are identical to the unmerged ones (and the
ROUGE-L of the differing ones against the unmerged draft), and which path the service's settings pick here
(RADBRIDGE_LOCAL_DTYPE, default auto: bfloat16 on a CPU with native bf16). docs/benchmarks.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from radbridge.adapters.model.local import LocalGenerator, native_bf16, resolve_dtype
from radbridge.bootstrap import local_dtype, build_examples, prompt_template
from radbridge.domain import GenerationParams
from radbridge.evaluation import read_records, record_report, rouge
from radbridge.pipeline import Drafter
from radbridge.settings import SHIPPED_MODEL_DIR, Settings

PATHS = {
    "unmerged": dict(merge=False),
    "merged": dict(merge=True),
    "merged+bf16": dict(merge=True, dtype="bfloat16"),
    "merged+int8": dict(merge=True, quantize="int8"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="runs/data/valid.jsonl")
    ap.add_argument("--reports", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    settings = Settings()
    template = prompt_template(settings)
    examples = build_examples(settings, template)
    records = read_records(args.data, args.reports)
    reports = [record_report(r, f"bench#{i}") for i, r in enumerate(records)]
    params = GenerationParams(max_new_tokens=settings.max_new_tokens)
    drafters = {}
    for name, kw in PATHS.items():
        gen = LocalGenerator.from_manifest(SHIPPED_MODEL_DIR, batch_size=args.batch, **kw)
        gen.load()
        drafters[name] = Drafter(gen, template=template, params=params, examples=examples, verify=False)
        drafters[name].draft_reports(reports[: args.batch])  # warm-up
    seconds = {name: 0.0 for name in PATHS}
    drafts: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for name, drafter in drafters.items():
            t0 = time.perf_counter()
            drafts[name] = [d.impression for d in drafter.draft_reports(reports)]
            seconds[name] += time.perf_counter() - t0
    base = drafts["unmerged"]
    out = {"reports": len(reports), "batch": args.batch, "rounds": args.rounds, "cpus": os.cpu_count(),
           "load_average": os.getloadavg(), "template": template.id, "max_new_tokens": params.max_new_tokens,
           "native_bf16": native_bf16(),
           "service_default": "merged+bf16" if resolve_dtype(local_dtype(settings)) == "bfloat16" else "merged"}
    for name in PATHS:
        rate = args.rounds * len(reports) / seconds[name]
        differing = [(a, b) for a, b in zip(drafts[name], base) if a != b]
        out[name] = {
            "reports_per_s": round(rate, 3),
            "speedup_vs_unmerged": round(rate / (args.rounds * len(reports) / seconds["unmerged"]), 3),
            "identical_to_unmerged": len(reports) - len(differing),
            "rougeL_of_differing_vs_unmerged": round(rouge([a for a, _ in differing], [b for _, b in differing])["rougeL"], 4)
            if differing else None,
            "rougeL_vs_reference": round(rouge(drafts[name], [r["impression"] for r in records])["rougeL"], 4),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
