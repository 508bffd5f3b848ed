"""When may a draft end? The end-of-turn rules of ``+end<pct>``, measured on the tune part only.

    RADBRIDGE_LOCAL_DTYPE=float32 python -m training.end_rules --adapter runs/soup75-fp16/adapter \
        --template paper-v1+examples2+exwords20+sim+fwords60+select5 --data runs/data/valid-tune.jsonl \
        --train runs/data/train.jsonl --baseline runs/results/retrieval_valid_checker.json \
        --rules 0.9:all 0.9:1 0.9:2 0.95:1 0.9:all:word 0.9:1:word

A rule is ``THRESHOLD:HOLDS[:word]``: the end of turn is held (the most likely other token taken instead) when it
is the most likely next token with less than THRESHOLD probability, at most HOLDS times per draft (``all``: every
time), and with ``word`` only when that other token has a letter or digit. The service's ``+end90`` is ``0.9:1``
(radbridge/adapters/model/local.py: _EndThreshold). Each rule drafts every report once through the pipeline's
Drafter (the template's wording policy applied, as served); printed with training.length_policies' table, the
model alone and as served, plus each rule's longest draft. Never run on the confirm part.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools

from .goals import read_drafts
from .length_policies import print_table, tune_args, tune_drafter


def parse_rule(text: str) -> tuple[float, int | None, bool]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "word"):
        raise argparse.ArgumentTypeError(f"rule {text!r} is not THRESHOLD:HOLDS[:word]")
    threshold = float(parts[0])
    if not 0.0 < threshold < 1.0:
        raise argparse.ArgumentTypeError(f"threshold {threshold} is not within (0, 1)")
    holds = None if parts[1] == "all" else int(parts[1])
    return threshold, holds, len(parts) == 3


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tune_args(ap, "without +end: the rules are set here")
    ap.add_argument("--rules", nargs="+", type=parse_rule, required=True, metavar="THRESHOLD:HOLDS[:word]")
    args = ap.parse_args(argv)
    from radbridge.adapters.model import local
    from radbridge.evaluation import PipelineDrafter

    records, drafter = tune_drafter("end_rules", args)
    if drafter.template.end_threshold_pct:
        raise SystemExit("end_rules: --template must have no +end (each rule sets its own)")
    served = local._EndThreshold
    policies: dict[str, list[str]] = {}
    try:
        for threshold, holds, word_only in args.rules:
            local._EndThreshold = functools.partial(served, holds=holds, word_only=word_only)
            drafter.params = dataclasses.replace(drafter.params, end_threshold=threshold)
            run = PipelineDrafter(drafter, batch_size=8, progress=True)
            out = run(records)
            name = f"p<{threshold} holds {'all' if holds is None else holds}{' word' if word_only else ''}"
            longest = max(len(d.split()) for d in run.completions)
            policies[f"{name} alone (longest {longest})"] = run.completions
            policies[f"{name} served"] = out
    finally:
        local._EndThreshold = served
    print_table(policies, records, read_drafts(args.baseline) if args.baseline else None, args.resamples)


if __name__ == "__main__":
    main()
