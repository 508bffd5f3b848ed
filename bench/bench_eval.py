"""Evaluation throughput (reports/s) of the local model at batch 1 and 8, and training tokens/s.

    python bench/bench_eval.py [--reports 16] [--adapter model] [--train-steps 2]

Numbers depend on what else runs on the machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import sys

    sys.path.insert(0, str(REPO))
    from radbridge.evaluation import run
    from training.data import load_split, write_jsonl
    from training.train import TrainConfig, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=16)
    ap.add_argument("--adapter", default=str(REPO / "model"))
    ap.add_argument("--train-steps", type=int, default=2)
    args = ap.parse_args()
    out: dict = {"load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "valid.jsonl"
        write_jsonl(data, load_split("valid")[: args.reports])
        for batch in (1, 8):
            t0 = time.perf_counter()
            r = run(data, Path(tmp) / f"b{batch}.json", adapter=args.adapter, batch_size=batch, progress=False)
            out[f"eval_batch{batch}"] = {"reports_per_s": r["reports_per_second"], "n": r["n"],
                                         "wall_s_incl_load": round(time.perf_counter() - t0, 1)}
        if args.train_steps:
            cfg = TrainConfig(output_dir=str(Path(tmp) / "run"), effective_batch=16, micro_batch=16,
                              max_steps=args.train_steps, limit=16 * args.train_steps)
            s = train(cfg, progress=False)
            out["train"] = {"tokens_per_s": s["tokens_per_s"], "steps": s["steps"], "sequence_tokens": s["mean_sequence_tokens"],
                            "recipe": "paper-v1, LoRA r=8 q/v, micro-batch 16"}
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
