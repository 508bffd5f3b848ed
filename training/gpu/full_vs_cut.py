"""What the rank cut costs a full fine-tune, measured on one device call (docs/model-results.md, "The full
fine-tune recipe"):

    python3 training/gpu/full_vs_cut.py training/configs/full.json $OUT/drafts.json [--set KEY=VALUE ...]

Trains the config (``update`` must be ``full``), then writes greedy drafts of the valid split's tune part twice:
from the uncut model (the trained weights, 424 MB that cannot come back from a device call) and from the base model
with the rank-``lora_r`` adapter the run writes. Prompts are the training prompts (``training.train.prompt_text``,
the text serving sends for the config's template, two retrieved training reports as examples); a draft is the
completion up to the end of turn, through ``radbridge.prompt.clean_completion``. The two sets differ only in the
weights, so ``training/gpu/score_drafts.py`` compares them here (it needs rouge-score and the labeler, which the
device machine lacks). The confirm part is never drafted.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from training import train as T
from training.gpu_drafts import draft, tune_prompts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    ap.add_argument("--limit", type=int, help="draft only the first N tune reports (a dry run)")
    args = ap.parse_args(argv)
    cfg = T.TrainConfig.load(args.config, args.set)
    if cfg.update != "full":
        raise SystemExit("full_vs_cut: the config must have update=full")
    uids, prompts = tune_prompts(cfg, args.limit)
    result = {"config": str(args.config), "sets": args.set, "uids": uids}

    def drafts(stage, model, tokenizer):  # "trained": the uncut weights; "written": the base + the cut adapter
        t0 = time.perf_counter()
        result["uncut" if stage == "trained" else "cut"] = draft(model, tokenizer, prompts, cfg.chat_format)
        result["draft_seconds"] = round(result.get("draft_seconds", 0) + time.perf_counter() - t0, 1)

    result["summary"] = {k: v for k, v in T.train(cfg, progress=False, look=drafts).items() if k != "config"}
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("draft_seconds",)} | {"cut": result["summary"].get("cut")}))


if __name__ == "__main__":
    main()
