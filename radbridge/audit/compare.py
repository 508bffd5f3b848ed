"""Two audits of the same history (``radbridge audit-compare A B``): paired bootstrap on the cases both drafted.

The site's evidence for switching adapters: for ROUGE-L (mean over cases), clinical F1 (micro), the share of drafts
the checker flagged and the share with a laterality error, A's figure, B's, A - B and its 95 % interval from
resampling the shared cases with replacement (seeded). An interval that contains 0: the history cannot tell them
apart. Also the cases whose ROUGE-L changed most, as CSV and one self-contained HTML page.
"""

from __future__ import annotations

import csv
import json
from html import escape
from pathlib import Path

from .report_html import CSS, _f1, word_diff
from .stats import mean, paired_bootstrap
from .writer import CASES, RUN, read_jsonl

FIGURES = {
    "rougeL": lambda cs: mean([c["rougeL"] for c in cs]),
    "clinical_f1": _f1,
    "flagged_share": lambda cs: mean([1.0 if c["flags"] else 0.0 for c in cs]),
    "laterality_error_share": lambda cs: mean([1.0 if c["laterality_errors"] else 0.0 for c in cs]),
}
CSV_COLUMNS = ("key", "accession", "source", "signed_impression", "draft_a", "draft_b", "rougeL_a", "rougeL_b",
               "rougeL_change", "flags_a", "flags_b")


def _load(folder: Path) -> tuple[dict, dict[str, dict]]:
    run_file = folder / RUN
    if not run_file.is_file():
        raise FileNotFoundError(f"{folder} is not an audit folder (no {RUN})")
    return json.loads(run_file.read_text(encoding="utf-8")), {c["key"]: c for c in read_jsonl(folder / CASES)}


def _flags(c: dict) -> str:
    return "; ".join(f"{f['kind']}:{f['observation']}" for f in c["flags"])


def compare(dir_a: Path, dir_b: Path, *, resamples: int = 2000, seed: int = 0, top: int = 25) -> dict:
    run_a, a = _load(Path(dir_a))
    run_b, b = _load(Path(dir_b))
    shared = [k for k in a if k in b]
    if not shared:
        raise ValueError(f"the two audits share no case ({len(a)} and {len(b)} cases): audit the same history")
    ca, cb = [a[k] for k in shared], [b[k] for k in shared]
    figures = {}
    for name, stat in FIGURES.items():
        diff, lo, hi = paired_bootstrap(ca, cb, stat, n=resamples, seed=seed)
        figures[name] = {"a": round(stat(ca), 4), "b": round(stat(cb), 4), "diff": round(diff, 4),
                         "ci95": [round(lo, 4), round(hi, 4)]}
    rows = [{"key": k, "accession": a[k].get("accession"), "source": a[k].get("source"),
             "signed_impression": a[k]["signed_impression"], "draft_a": a[k]["draft"], "draft_b": b[k]["draft"],
             "rougeL_a": a[k]["rougeL"], "rougeL_b": b[k]["rougeL"],
             "rougeL_change": round(b[k]["rougeL"] - a[k]["rougeL"], 4), "flags_a": _flags(a[k]),
             "flags_b": _flags(b[k])} for k in shared]
    rows.sort(key=lambda r: -abs(r["rougeL_change"]))
    return {"a": {"dir": str(dir_a), "identity": run_a.get("identity"), "cases": len(a)},
            "b": {"dir": str(dir_b), "identity": run_b.get("identity"), "cases": len(b)},
            "shared": len(shared), "only_a": len(a) - len(shared), "only_b": len(b) - len(shared),
            "resamples": resamples, "figures": figures, "changed_most": rows[:top], "_rows": rows}


def _who(side: dict) -> str:
    i = side.get("identity") or {}
    return f"{i.get('backend')} · {i.get('base_model')} · adapter {i.get('adapter') or 'none'} · {i.get('template')}"


def render(result: dict) -> str:
    figs = "".join(
        f"<tr><td>{escape(name)}</td><td class=num>{f['a']:.4f}</td><td class=num>{f['b']:.4f}</td>"
        f"<td class=num>{f['diff']:+.4f}</td><td class=num>[{f['ci95'][0]:+.4f}, {f['ci95'][1]:+.4f}]</td>"
        f"<td>{'no' if f['ci95'][0] <= 0 <= f['ci95'][1] else 'yes'}</td></tr>"
        for name, f in result["figures"].items())
    rows = []
    for r in result["changed_most"]:
        _, da = word_diff(r["signed_impression"], r["draft_a"])
        signed, db = word_diff(r["signed_impression"], r["draft_b"])
        rows.append(f"<tr><td>{escape(str(r['accession'] or ''))}</td><td class=num>{r['rougeL_a']:.3f}</td>"
                    f"<td class=num>{r['rougeL_b']:.3f}</td><td class=num>{r['rougeL_change']:+.3f}</td>"
                    f"<td class=text>{escape(r['signed_impression'])}</td><td class=text>{da}</td>"
                    f"<td class=text>{db}</td><td>{escape(r['flags_a'])}</td><td>{escape(r['flags_b'])}</td></tr>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>radbridge audit-compare</title><style>{CSS}</style></head><body>
<h1>radbridge audit-compare: A vs B on the same signed history</h1>
<p class="meta">A: {escape(_who(result['a']))} ({escape(result['a']['dir'])})<br>
B: {escape(_who(result['b']))} ({escape(result['b']['dir'])})</p>
<p><b>{result['shared']}</b> shared cases ({result['only_a']} only in A, {result['only_b']} only in B).
Intervals: paired bootstrap over the shared cases, {result['resamples']} resamples.</p>
<table id="figures"><tr><th>figure</th><th>A</th><th>B</th><th>A − B</th><th>95% CI</th><th>differs</th></tr>{figs}</table>
<h2>Cases whose ROUGE-L changed most</h2>
<table id="changed"><tr><th>accession</th><th>ROUGE-L A</th><th>ROUGE-L B</th><th>B − A</th><th>signed impression</th>
<th>draft A (<ins>not in signed</ins>)</th><th>draft B (<ins>not in signed</ins>)</th><th>flags A</th><th>flags B</th></tr>
{''.join(rows)}</table></body></html>
"""


def write(result: dict, out: Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "compare.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in result["_rows"]:
            w.writerow([r[c] for c in CSV_COLUMNS])
    public = {k: v for k, v in result.items() if k != "_rows"}
    (out / "compare.json").write_text(json.dumps(public, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "compare.html").write_text(render(result), encoding="utf-8")
