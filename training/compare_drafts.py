"""Compare two `radbridge eval` results files of the same reports, draft by draft.

    python training/compare_drafts.py A.json B.json

Prints, for the served drafts and for the model's own (``model_draft`` where a wording policy replaced it), how many
reports got the identical text, and each file's ROUGE-L, clinical F1, laterality errors and mean words. Exit 1 if the
two files do not hold the same reports. Used by training/tgi_vs_local.sh; it never prints draft text.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def model_drafts(results: dict) -> dict:
    return {d["uid"]: d.get("model_draft", d["draft"]) for d in results["drafts"]}


def served_drafts(results: dict) -> dict:
    return {d["uid"]: d["draft"] for d in results["drafts"]}


def identical(a: dict, b: dict) -> int:
    return sum(a[uid] == b[uid] for uid in a)


def summary(scores: dict) -> str:
    return (f"R-L {scores['rougeL']:.4f}  clinical F1 {scores['clinical_f1']:.3f}  "
            f"lat. {scores['laterality_errors']}  words {scores['mean_draft_words']:.2f}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    a, b = (json.loads(Path(p).read_text()) for p in argv)
    if set(served_drafts(a)) != set(served_drafts(b)):
        print("the two files do not hold the same reports", file=sys.stderr)
        return 1
    n = len(a["drafts"])
    print(f"A {argv[0]} ({a['meta'].get('system')})\nB {argv[1]} ({b['meta'].get('system')})\nreports {n}")
    print(f"served drafts identical: {identical(served_drafts(a), served_drafts(b))} of {n}")
    print(f"model drafts identical:  {identical(model_drafts(a), model_drafts(b))} of {n}")
    for name, res in (("A", a), ("B", b)):
        print(f"{name} served       {summary(res)}")
        if res.get("model_only"):
            print(f"{name} model alone  {summary(res['model_only'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
