"""Middleware cost and local generation speed, measured in one run.

    .venv/bin/python bench/bench_pipeline.py [--messages 400] [--gen-reports 16]

1. parse + extract + prompt + build output Bundle (no generation: the instant generator), messages/s on ONE core,
   separately for HL7 v2 and FHIR messages made from real OpenI reports (valid split);
2. local model generation (SmolLM2-135M + the shipped adapter), reports/s at batch 1 and batch 8.
Prints a JSON summary; docs/benchmarks.md records the figures with this command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from radbridge import samples
from radbridge.adapters.model.memory import InstantGenerator
from radbridge.pipeline import Drafter, Envelope


def middleware_rate(messages: list[bytes], batch: int = 8, repeats: int = 3) -> float:
    drafter = Drafter(InstantGenerator())
    envelopes = [Envelope(m, location=f"bench#{i}") for i, m in enumerate(messages)]
    drafter.process(envelopes[:batch])  # warm imports and caches
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        drafted = 0
        for i in range(0, len(envelopes), batch):
            drafted += sum(o.status == "drafted" for o in drafter.process(envelopes[i : i + batch]))
        elapsed = time.perf_counter() - start
        if drafted != len(envelopes):
            raise SystemExit(f"only {drafted}/{len(envelopes)} benchmark messages drafted")
        best = max(best, len(envelopes) / elapsed)
    return best


def generation_rate(messages: list[bytes], batch_size: int) -> float:
    """Reports/s through the whole pipeline with the default local model, `batch_size` reports per model call."""
    from radbridge.bootstrap import build_drafter
    from radbridge.settings import Settings

    drafter = build_drafter(Settings(backend="local", local_batch_size=batch_size, max_new_tokens=64))
    drafter.process([Envelope(messages[0])])  # load + warm up
    start = time.perf_counter()
    outcomes = [o for i in range(0, len(messages), batch_size) for o in drafter.process(
        [Envelope(m) for m in messages[i : i + batch_size]])]
    elapsed = time.perf_counter() - start
    if any(o.status != "drafted" for o in outcomes):
        raise SystemExit("a generation benchmark message was not drafted")
    return len(messages) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--gen-reports", type=int, default=16)
    ap.add_argument("--skip-generation", action="store_true")
    args = ap.parse_args()

    rows = [r for r in samples.openi_reports("valid") if r.get("findings")][: args.messages]
    if not rows:
        raise SystemExit("OpenI data not found under ../shared/data/openi")
    hl7 = [samples.to_hl7v2(r, with_impression=False) for r in rows]
    fhir = [samples.to_fhir(r) for r in rows]

    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the target is stated
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "middleware_messages_per_s_one_core": {
            "hl7v2": round(middleware_rate(hl7), 1),
            "fhir": round(middleware_rate(fhir), 1),
            "n_messages": len(rows),
        },
    }
    if not args.skip_generation:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        result["local_generation_reports_per_s"] = {
            "batch_1": round(generation_rate(hl7[: args.gen_reports], 1), 3),
            "batch_8": round(generation_rate(hl7[: args.gen_reports], 8), 3),
            "n_reports": args.gen_reports,
            "max_new_tokens": 64,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
