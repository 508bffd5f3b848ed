"""Is system A better than system B on the same reports? Paired bootstrap over reports, from two results files.

    python -m training.compare runs/results/A.json runs/results/B.json --data runs/data/valid.jsonl

Both files are ``radbridge eval`` outputs on the same data (their per-report drafts are rescored here against
``--data``). Prints, for ROUGE-L (per report) and clinical F1 (micro, recomputed per resample), A's figure, B's,
the difference and its 95 % interval from resampling the reports with replacement (seeded, deterministic).
An interval that contains 0 means the data cannot tell the two apart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from radbridge.evaluation import (
    ClinicalCounts,
    clinical_counts_per_report,
    read_records,
    rouge_per_report,
)
from radbridge.audit.stats import paired_bootstrap  # one implementation, also behind radbridge audit-compare


def _f1(counts: list[ClinicalCounts]) -> float:
    return ClinicalCounts.total(counts).f1


def _mean(xs) -> float:
    return sum(xs) / len(xs)


def compare(a_path: str, b_path: str, data: str, *, n: int = 2000) -> dict:
    records = {r.get("uid"): r for r in read_records(data)}
    a = {x["uid"]: x["draft"] for x in json.loads(Path(a_path).read_text())["drafts"]}
    b = {x["uid"]: x["draft"] for x in json.loads(Path(b_path).read_text())["drafts"]}
    uids = [u for u in a if u in b and u in records]
    if len(uids) != len(a) or len(uids) != len(b):
        raise SystemExit(f"the two files cover different reports ({len(a)} / {len(b)}, {len(uids)} shared)")
    refs = [records[u]["impression"] for u in uids]
    return compare_drafts([a[u] for u in uids], [b[u] for u in uids], refs, n=n)


def compare_drafts(da: list[str], db: list[str], refs: list[str], *, n: int = 2000) -> dict:
    """ROUGE-L (mean per report) and clinical F1 (micro) of two systems' drafts of the same reports: each
    system's figure, the difference and its paired-bootstrap 95 % interval."""
    ra, rb = ([row["rougeL"] for row in rouge_per_report(d, refs)] for d in (da, db))
    ca, cb = clinical_counts_per_report(da, refs), clinical_counts_per_report(db, refs)
    return {
        "n": len(refs),
        "rougeL": dict(zip(("a", "b"), (_mean(ra), _mean(rb)))) | _interval(paired_bootstrap(ra, rb, _mean, n=n)),
        "clinical_f1": dict(zip(("a", "b"), (_f1(ca), _f1(cb)))) | _interval(paired_bootstrap(ca, cb, _f1, n=n)),
    }


def _interval(t: tuple[float, float, float]) -> dict:
    return {"diff": t[0], "ci95": [t[1], t[2]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--data", required=True)
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    out = compare(args.a, args.b, args.data, n=args.resamples)
    for key in ("rougeL", "clinical_f1"):
        s = out[key]
        print(f"{key:12s} A={s['a']:.4f} B={s['b']:.4f} A-B={s['diff']:+.4f} 95% CI [{s['ci95'][0]:+.4f}, {s['ci95'][1]:+.4f}] (n={out['n']})")


if __name__ == "__main__":
    main()
