"""Evaluation throughput (reports/s) of the local model at batch 1 and 8, and training tokens/s.

    python bench/bench_eval.py [--reports 16] [--adapter model] [--train-steps 2] [--depth-steps 2]

``--depth-steps`` also times the shipped variant's training both ways in one run: LoRA on all 30 layers, and on
the top 8 with the frozen 22 run once and cached (the per-step ratio, and what the cache costs once).

Numbers depend on what else runs on the machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import sys

    sys.path.insert(0, str(REPO))
    from radbridge.evaluation import run
    from radbridge.settings import Settings
    from training.data import load_split, write_jsonl
    from training.train import TrainConfig, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=16)
    ap.add_argument("--adapter", default=str(REPO / "model"))
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--depth-steps", type=int, default=2)
    ap.add_argument("--skip-eval", action="store_true")
    args = ap.parse_args()
    out: dict = {"load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "valid.jsonl"
        write_jsonl(data, load_split("valid")[: args.reports])
        for batch in () if args.skip_eval else (1, 8):
            t0 = time.perf_counter()
            settings = Settings(backend="local", adapter=args.adapter, max_new_tokens=64, local_batch_size=batch)
            r = run(settings, data, Path(tmp) / f"b{batch}.json", batch_size=batch, progress=False)
            out[f"eval_batch{batch}"] = {"reports_per_s": r["reports_per_second"], "n": r["n"],
                                         "wall_s_incl_load": round(time.perf_counter() - t0, 1)}
        if args.train_steps:
            cfg = TrainConfig(output_dir=str(Path(tmp) / "run"), effective_batch=16, micro_batch=16,
                              max_steps=args.train_steps, limit=16 * args.train_steps)
            s = train(cfg, progress=False)
            out["train"] = {"tokens_per_s": s["tokens_per_s"], "steps": s["steps"], "sequence_tokens": s["mean_sequence_tokens"],
                            "recipe": "paper-v1, LoRA r=8 q/v, micro-batch 16"}
        if args.depth_steps:
            out["train_depth"] = _depth(Path(tmp), args.depth_steps)
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


def _depth(tmp: Path, steps: int) -> dict:
    """Seconds per optimizer step (32 reports, the best config's prompt) with LoRA on every layer vs the top 8."""
    from training.train import TrainConfig, train

    base = TrainConfig.load(REPO / "training" / "configs" / "best.json",
                            [f"max_steps={steps}", f"limit={32 * steps}", "abnormal_weight=1", "epochs=1"])
    result = {}
    for name, layers in (("all_30_layers", None), ("top_8_layers_cached", 8)):
        cfg = replace(base, output_dir=str(tmp / name), lora_layers=layers)
        s = train(cfg, progress=False)
        result[name] = {"seconds_per_step": round(s["train_seconds"] / s["steps"], 1), "cache_seconds": s["cache_seconds"],
                        "sequence_tokens": s["mean_sequence_tokens"]}
    full, top = result["all_30_layers"], result["top_8_layers_cached"]
    result["step_speedup"] = round(full["seconds_per_step"] / top["seconds_per_step"], 2)
    result["reports"] = 32 * steps
    return result


if __name__ == "__main__":
    main()
