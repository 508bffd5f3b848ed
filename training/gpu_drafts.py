"""Greedy drafts of the valid split's tune part from a training run's adapter, on whatever device is at hand:

    python3 -m training.gpu_drafts RUN [--limit N]       # writes RUN/tune_drafts.json

For screening many runs on a lent GPU (``DRAFT_TUNE=1 training/gpu/many.sh ...`` drafts each finished run and packs
the drafts with it; 161 drafts take seconds there). Prompts are the training prompts for the run's template
(``training.train.prompt_text``, two retrieved training reports as examples), generation is greedy up to the end of
turn, and a draft goes through ``radbridge.prompt.clean_completion``: no wording policy, no ``+end`` rule. On one
adapter this path wrote 146 of 161 drafts identical to ``radbridge eval``'s greedy ones (ROUGE-L within 0.003;
docs/model-results.md), so it ranks models like the pipeline does; a candidate is still scored through
``radbridge eval`` before any choice. Score the files here with ``training/gpu/score_drafts.py``. The confirm part
is never drafted.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from radbridge import prompt as P
from radbridge.retrieval import Retriever

from training import train as T
from training.data import load_split, valid_part


def tune_prompts(cfg: T.TrainConfig, limit: int | None = None) -> tuple[list, list[str]]:
    """(the tune part's uids, their prompts for ``cfg``'s template)."""
    tune = [r for r in load_split("valid") if valid_part(r["uid"]) == "tune"][:limit]
    shots = Retriever(T.load_records(cfg), cfg.template.rules).examples([r["findings"] for r in tune],
                                                                         cfg.template.n_examples)
    return [r["uid"] for r in tune], [T.prompt_text(cfg, r, ex) for r, ex in zip(tune, shots)]


def draft(model, tokenizer, prompts: list[str], chat_format: str = "chatml", batch: int = 32,
          max_new_tokens: int = 48) -> list[str]:
    """Greedy completions of ``prompts`` in left-padded batches, each up to the end of turn, cleaned."""
    import torch

    eot_id = tokenizer.convert_tokens_to_ids(P.end_of_turn(chat_format))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tokenizer.padding_side = "left"
    tokenizer.pad_token_id = pad_id
    device = next(model.parameters()).device
    out = []
    model.eval()
    for i in range(0, len(prompts), batch):
        enc = tokenizer(prompts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eot_id,
                                 pad_token_id=pad_id)
        for row in ids[:, enc["input_ids"].shape[1] :]:
            out.append(P.clean_completion(tokenizer.decode(row, skip_special_tokens=True)))
    return out


def main(argv: list[str] | None = None) -> None:
    import torch
    from peft import PeftModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a training run folder (adapter/, summary.json)")
    ap.add_argument("--limit", type=int, help="only the first N tune reports (a dry run)")
    args = ap.parse_args(argv)
    cfg = T.TrainConfig.from_dict(json.loads((args.run / "summary.json").read_text())["config"])
    uids, prompts = tune_prompts(cfg, args.limit)
    base, tokenizer = T.load_base()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = PeftModel.from_pretrained(base.to(device), str(args.run / "adapter"))
    t0 = time.perf_counter()
    drafts = draft(model, tokenizer, prompts, cfg.chat_format)
    seconds = round(time.perf_counter() - t0, 1)
    (args.run / "tune_drafts.json").write_text(json.dumps(
        {"run": str(args.run), "template": cfg.template.id, "device": device, "seconds": seconds,
         "uids": uids, "drafts": drafts}, indent=1))
    print(f"{len(drafts)} tune drafts in {seconds}s on {device} -> {args.run / 'tune_drafts.json'}")


if __name__ == "__main__":
    main()
