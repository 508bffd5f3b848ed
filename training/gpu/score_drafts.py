"""Score drafts brought back from a device call, here:

    PYTHONPATH=. python training/gpu/score_drafts.py DRAFTS.json [DRAFTS.json ...] \
        --baseline runs/results/retrieval_valid_checker.json --data runs/data/valid-tune.jsonl

A file is ``training/gpu/full_vs_cut.py``'s (drafts under ``uncut`` and ``cut``) or ``training.gpu_drafts``'s (under
``drafts``, one run's). Prints the goals lines (``training.goals``) of each set of drafts against retrieval, and for
a full_vs_cut file the paired difference uncut − cut (ROUGE-L and clinical F1 with their 95 % intervals).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from radbridge.evaluation import read_records

from training.compare import compare_drafts
from training.goals import check, lines, read_drafts


SYSTEMS = ("drafts", "uncut", "cut")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("drafts", type=Path, nargs="+")
    ap.add_argument("--baseline", required=True, help="a radbridge eval results file (retrieval)")
    ap.add_argument("--data", required=True, help="the reports drafted (the tune part)")
    args = ap.parse_args(argv)
    records = read_records(args.data)
    baseline = read_drafts(args.baseline)
    refs = [r["impression"] for r in records]
    for path in args.drafts:
        got = json.loads(path.read_text())
        systems = {name: dict(zip(got["uids"], got[name])) for name in SYSTEMS if name in got}
        if not systems:
            raise SystemExit(f"{path}: no drafts under any of {SYSTEMS}")
        for name, drafts in systems.items():
            print(f"--- {path} {name} (model alone, greedy)")
            print("\n".join(lines(check(drafts, baseline, records))))
        if {"uncut", "cut"} <= systems.keys():
            paired = compare_drafts([systems["uncut"][r["uid"]] for r in records],
                                    [systems["cut"][r["uid"]] for r in records], refs)
            for key in ("rougeL", "clinical_f1"):
                m = paired[key]
                print(f"uncut - cut {key}: {m['a']:.4f} - {m['b']:.4f} = {m['diff']:+.4f} "
                      f"[{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}]")


if __name__ == "__main__":
    main()
