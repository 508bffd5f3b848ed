"""Score the drafts ``training/gpu/full_vs_cut.py`` brought back from a device call, here:

    PYTHONPATH=. python training/gpu/score_drafts.py runs/gpu/full_vs_cut_tune.json \
        --baseline runs/results/retrieval_valid_checker.json --data runs/data/valid-tune.jsonl

Prints the goals lines (``training.goals``) of the uncut model's drafts and of its rank-32 adapter's, each against
retrieval, then the paired difference uncut − cut (ROUGE-L and clinical F1 with their 95 % intervals).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from radbridge.evaluation import read_records

from training.compare import compare_drafts
from training.goals import check, lines, read_drafts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("drafts", type=Path)
    ap.add_argument("--baseline", required=True, help="a radbridge eval results file (retrieval)")
    ap.add_argument("--data", required=True, help="the reports drafted (the tune part)")
    args = ap.parse_args(argv)
    got = json.loads(args.drafts.read_text())
    records = read_records(args.data)
    baseline = read_drafts(args.baseline)
    systems = {name: dict(zip(got["uids"], got[name])) for name in ("uncut", "cut")}
    for name, drafts in systems.items():
        print(f"--- {name} (model alone, {got['config']} {' '.join(got['sets'])})")
        print("\n".join(lines(check(drafts, baseline, records))))
    refs = [r["impression"] for r in records]
    paired = compare_drafts([systems["uncut"][r["uid"]] for r in records], [systems["cut"][r["uid"]] for r in records], refs)
    for key in ("rougeL", "clinical_f1"):
        m = paired[key]
        print(f"uncut - cut {key}: {m['a']:.4f} - {m['b']:.4f} = {m['diff']:+.4f} [{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}]")


if __name__ == "__main__":
    main()
