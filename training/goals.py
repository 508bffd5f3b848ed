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

``--length-reference runs/data/train.jsonl`` (on the tune part) also prints the protocol's length gate as amended on
2026-11-27 (docs/model-results.md): the drafts' length against the training references' for the same kind of
findings (``stratified_length_ratio``), which must be within LENGTH_GATE to go to confirmation.
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
# The tune gate (amended 2026-11-27): narrower than the goal by the estimator's error on the adapter shipped before
# it (docs/model-results.md, "Amendment").
LENGTH_GATE = (0.85, 1.2)


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


def stratified_length_ratio(drafts: list[str], records: list[dict], reference: list[dict]) -> dict:
    """The drafts' mean length against the radiologists' in ``reference`` (the training reports), both taken per
    kind of findings (radbridge.labeler asserts an abnormal observation, or not) and mixed in ``reference``'s
    proportions. A small part of valid can be wordier than the department (OpenI's tune part: 9.2 words against 7.6
    in training); this asks instead whether the drafts are as long as the department writes for such findings."""
    from radbridge.labeler import abnormal

    def kinds(rows: list[dict]) -> list[bool]:
        return [bool(abnormal(r["findings"])) for r in rows]

    def mean(values: list[int], keep: list[bool], want: bool) -> float:
        chosen = [v for v, k in zip(values, keep) if k == want]
        if not chosen:
            raise ValueError(f"no report with {'abnormal' if want else 'normal'} findings to measure length on")
        return sum(chosen) / len(chosen)

    mine, theirs = kinds(records), kinds(reference)
    share = sum(theirs) / len(theirs)
    draft_words = [len(d.split()) for d in drafts]
    ref_words = [len(r["impression"].split()) for r in reference]
    mixed = {name: share * mean(w, k, True) + (1 - share) * mean(w, k, False)
             for name, w, k in (("draft_words", draft_words, mine), ("reference_words", ref_words, theirs))}
    ratio = mixed["draft_words"] / mixed["reference_words"]
    return mixed | {"abnormal_share": share, "ratio": ratio, "pass": LENGTH_GATE[0] <= ratio <= LENGTH_GATE[1]}


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
    ] + ([] if "length_gate" not in result else [
        f"{ok(result['length_gate'])} tune gate: length {result['length_gate']['draft_words']:.1f} words vs "
        f"{result['length_gate']['reference_words']:.1f} in the reference reports for the same kinds of findings: "
        f"x{result['length_gate']['ratio']:.2f} (gate: {LENGTH_GATE[0]}-{LENGTH_GATE[1]})"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("candidate")
    ap.add_argument("retrieval")
    ap.add_argument("--data", required=True, help="the part of valid to judge on (runs/data/valid-confirm.jsonl)")
    ap.add_argument("--model-only", action="store_true", help="the candidate's drafts before its wording policy")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--length-reference", type=Path, help="training reports: also print the tune part's length gate")
    args = ap.parse_args(argv)
    records = read_records(args.data)
    candidate = read_drafts(args.candidate, args.model_only)
    result = check(candidate, read_drafts(args.retrieval), records, resamples=args.resamples)
    if args.length_reference:
        result["length_gate"] = stratified_length_ratio([candidate[r["uid"]] for r in records], records,
                                                        read_records(args.length_reference))
    result.update(candidate=args.candidate, retrieval=args.retrieval, data=args.data, model_only=args.model_only)
    print("\n".join(lines(result)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
