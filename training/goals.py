"""Does a candidate meet issue 16's goals against retrieval, on one part of valid? The confirmation step of the
selection protocol (docs/model-results.md, "Selection protocol").

    python -m training.goals runs/results/CANDIDATE.json runs/results/RETRIEVAL.json \
        --data runs/data/valid-confirm.jsonl [--model-only]

Both files are ``radbridge eval`` outputs (any superset of the reports: they are restricted to ``--data``'s
reports and rescored against its impressions). ``--model-only`` scores what the model wrote before a wording policy
(+copynormal) replaced it, so the policy is judged as a candidate like any other. Prints one line per goal, PASS or
FAIL, with the paired-bootstrap 95 % interval where there is one; exits 1 if any goal fails.

Goals (issue 16): ROUGE-L at least retrieval + 0.02 with the interval of the difference above 0; clinical F1 at
least 0.45; laterality errors no more than retrieval's; mean length 0.8-1.25 times the radiologists'.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from radbridge.evaluation import mean_words, read_records
from radbridge.verify import laterality_disagreements

from .compare import compare_drafts

RL_MARGIN = 0.02
MIN_CLINICAL_F1 = 0.45
LENGTH_RATIO = (0.8, 1.25)


def read_drafts(path: str | Path, model_only: bool = False) -> dict:
    rows = json.loads(Path(path).read_text())["drafts"]
    return {r["uid"]: (r.get("model_draft", r["draft"]) if model_only else r["draft"]) for r in rows}


def check(candidate: dict, baseline: dict, records: list[dict], *, resamples: int = 2000) -> dict:
    """``candidate``/``baseline``: uid -> draft. Every report of ``records`` must have a draft in both."""
    missing = [r["uid"] for r in records if r["uid"] not in candidate or r["uid"] not in baseline]
    if missing:
        raise ValueError(f"{len(missing)} reports of the data have no draft in one of the files (e.g. {missing[0]})")
    refs = [r["impression"] for r in records]
    findings = [r["findings"] for r in records]
    da = [candidate[r["uid"]] for r in records]
    db = [baseline[r["uid"]] for r in records]
    paired = compare_drafts(da, db, refs, n=resamples)
    rl, f1 = paired["rougeL"], paired["clinical_f1"]
    lat_a, lat_b = (sum(len(laterality_disagreements(d, f)) for d, f in zip(drafts, findings)) for drafts in (da, db))
    ratio = mean_words(da) / mean_words(refs)
    goals = {
        "rougeL": {"candidate": rl["a"], "retrieval": rl["b"], "diff": rl["diff"], "ci95": rl["ci95"],
                   "pass": rl["diff"] >= RL_MARGIN and rl["ci95"][0] > 0},
        "clinical_f1": {"candidate": f1["a"], "retrieval": f1["b"], "diff": f1["diff"], "ci95": f1["ci95"],
                        "pass": f1["a"] >= MIN_CLINICAL_F1},
        "laterality_errors": {"candidate": lat_a, "retrieval": lat_b, "pass": lat_a <= lat_b},
        "length_ratio": {"candidate": ratio, "draft_words": mean_words(da), "reference_words": mean_words(refs),
                         "pass": LENGTH_RATIO[0] <= ratio <= LENGTH_RATIO[1]},
    }
    return {"n": len(records), "goals": goals, "pass": all(g["pass"] for g in goals.values())}


def lines(result: dict) -> list[str]:
    g = result["goals"]
    ok = lambda goal: "PASS" if goal["pass"] else "FAIL"  # noqa: E731
    rl, cf, lat, ln = g["rougeL"], g["clinical_f1"], g["laterality_errors"], g["length_ratio"]
    return [
        f"{ok(rl)} ROUGE-L {rl['candidate']:.4f} vs retrieval {rl['retrieval']:.4f}: {rl['diff']:+.4f} "
        f"[{rl['ci95'][0]:+.4f}, {rl['ci95'][1]:+.4f}] (goal: >= +{RL_MARGIN}, interval above 0)",
        f"{ok(cf)} clinical F1 {cf['candidate']:.3f} (retrieval {cf['retrieval']:.3f}, {cf['diff']:+.3f} "
        f"[{cf['ci95'][0]:+.3f}, {cf['ci95'][1]:+.3f}]) (goal: >= {MIN_CLINICAL_F1})",
        f"{ok(lat)} laterality errors {lat['candidate']} vs retrieval {lat['retrieval']} (goal: no more)",
        f"{ok(ln)} length {ln['draft_words']:.1f} words vs radiologists' {ln['reference_words']:.1f}: "
        f"x{ln['candidate']:.2f} (goal: {LENGTH_RATIO[0]}-{LENGTH_RATIO[1]})",
        f"{'ALL GOALS MET' if result['pass'] else 'GOALS NOT MET'} on {result['n']} reports",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("candidate")
    ap.add_argument("retrieval")
    ap.add_argument("--data", required=True, help="the part of valid to judge on (runs/data/valid-confirm.jsonl)")
    ap.add_argument("--model-only", action="store_true", help="the candidate's drafts before its wording policy")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    result = check(read_drafts(args.candidate, args.model_only), read_drafts(args.retrieval), read_records(args.data),
                   resamples=args.resamples)
    result.update(candidate=args.candidate, retrieval=args.retrieval, data=args.data, model_only=args.model_only)
    print("\n".join(lines(result)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
