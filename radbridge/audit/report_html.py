"""report.html: one self-contained file an auditor opens offline (no external script, font or image).

Summary figures with bootstrap intervals, four inline SVG plots, a filterable and sortable table of every case
(signed and draft side by side, word differences marked), and every skipped report with its reason. All text
from reports goes through ``html.escape``.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from html import escape
from pathlib import Path

from ..evaluation import ClinicalCounts
from .stats import bootstrap_interval, mean
from .writer import CASES, RUN, SKIPPED, read_jsonl

FLAG_KINDS = ("laterality", "contradiction", "omission", "unsupported")


def word_diff(signed: str, draft: str) -> tuple[str, str]:
    """Both texts as HTML: words only in the signed impression in <del>, words only in the draft in <ins>."""
    a, b = signed.split(), draft.split()
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        sa, sb = escape(" ".join(a[i1:i2])), escape(" ".join(b[j1:j2]))
        if op == "equal":
            left.append(sa)
            right.append(sb)
            continue
        if sa:
            left.append(f"<del>{sa}</del>")
        if sb:
            right.append(f"<ins>{sb}</ins>")
    return " ".join(left), " ".join(right)


def _f1(cases: list[dict]) -> float:
    return ClinicalCounts(sum(c["clinical_tp"] for c in cases), sum(c["clinical_fp"] for c in cases),
                          sum(c["clinical_fn"] for c in cases)).f1


def summary(cases: list[dict], *, resamples: int = 1000) -> dict:
    """Each figure over all cases, with its 95 % bootstrap interval over cases (seeded)."""
    if not cases:
        return {}
    figures = {
        "rouge1": lambda cs: mean([c["rouge1"] for c in cs]),
        "rouge2": lambda cs: mean([c["rouge2"] for c in cs]),
        "rougeL": lambda cs: mean([c["rougeL"] for c in cs]),
        "clinical_f1": _f1,
        "flagged_share": lambda cs: mean([1.0 if c["flags"] else 0.0 for c in cs]),
        "laterality_error_share": lambda cs: mean([1.0 if c["laterality_errors"] else 0.0 for c in cs]),
    }
    out = {}
    for name, stat in figures.items():
        value, lo, hi = bootstrap_interval(cases, stat, n=resamples)
        out[name] = {"value": round(value, 4), "ci95": [round(lo, 4), round(hi, 4)]}
    return out


# --- plots -------------------------------------------------------------------------------------------------
W, H, PAD = 420, 240, 36


def _svg(title: str, body: str, cls: str) -> str:
    return (f'<figure class="plot {cls}"><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" '
            f'width="{W}" height="{H}" role="img" aria-label="{escape(title)}">{body}</svg>'
            f"<figcaption>{escape(title)}</figcaption></figure>")


def _axes(xlabel: str, ylabel: str) -> str:
    return (f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 8}" y2="{H - PAD}" class="axis"/>'
            f'<line x1="{PAD}" y1="8" x2="{PAD}" y2="{H - PAD}" class="axis"/>'
            f'<text x="{(W + PAD) / 2}" y="{H - 6}" text-anchor="middle">{escape(xlabel)}</text>'
            f'<text x="10" y="{(H - PAD) / 2}" transform="rotate(-90 10 {(H - PAD) / 2})" text-anchor="middle">'
            f"{escape(ylabel)}</text>")


def _bars(labels: list[str], values: list[int], xlabel: str, ylabel: str) -> str:
    top = max(values + [1])
    n = max(len(labels), 1)
    bw = (W - PAD - 16) / n
    body = [_axes(xlabel, ylabel), f'<text x="{PAD - 4}" y="14" text-anchor="end">{top}</text>']
    for i, (label, v) in enumerate(zip(labels, values)):
        h = (H - PAD - 16) * v / top
        x = PAD + 4 + i * bw
        body.append(f'<rect class="bar" x="{x:.1f}" y="{H - PAD - h:.1f}" width="{bw - 6:.1f}" height="{h:.1f}">'
                    f"<title>{escape(label)}: {v}</title></rect>")
        if v:
            body.append(f'<text x="{x + (bw - 6) / 2:.1f}" y="{H - PAD - h - 3:.1f}" text-anchor="middle">{v}</text>')
        if n <= 10:
            body.append(f'<text x="{x + (bw - 6) / 2:.1f}" y="{H - PAD + 12}" text-anchor="middle" class="tick">'
                        f"{escape(label)}</text>")
    return "".join(body)


def rouge_plot(cases: list[dict]) -> str:
    bins = [0] * 10
    for c in cases:
        bins[min(int(c["rougeL"] * 10), 9)] += 1
    labels = [f"{i / 10:.1f}" for i in range(10)]
    return _svg("ROUGE-L per case (draft vs signed impression)", _bars(labels, bins, "ROUGE-L", "cases"), "rouge")


def flags_plot(cases: list[dict]) -> str:
    count = Counter(f["kind"] for c in cases for f in c["flags"])
    return _svg("Checker flags by kind", _bars(list(FLAG_KINDS), [count[k] for k in FLAG_KINDS], "flag kind", "flags"),
                "flags")


def observation_plot(cases: list[dict]) -> str:
    """Per observation: signed mentions the draft found (green), missed (red); draft-only mentions (amber)."""
    obs: dict[str, Counter] = {}
    for c in cases:
        for part in ("found", "missed", "added"):
            for o in c[part]:
                obs.setdefault(o, Counter())[part] += 1
    rows = sorted(obs.items(), key=lambda kv: -sum(kv[1].values()))[:10]
    if not rows:
        return _svg("Per-observation agreement (no abnormal observation named)",
                    f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no abnormal observation in any case</text>',
                    "observations")
    top = max(sum(c.values()) for _, c in rows)
    rh = (H - 24) / len(rows)
    left = 150
    body = []
    for i, (name, c) in enumerate(rows):
        y, x = 4 + i * rh, left
        body.append(f'<text x="{left - 4}" y="{y + rh * 0.7:.1f}" text-anchor="end" class="tick">{escape(name)} ({sum(c.values())})</text>')
        for part in ("found", "missed", "added"):
            w = (W - left - 12) * c[part] / top
            if w:
                body.append(f'<rect class="{part}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{rh * 0.8:.1f}">'
                            f"<title>{escape(name)} {part}: {c[part]}</title></rect>")
            x += w
    body.append(f'<text x="{left}" y="{H - 4}" class="tick">'
                '<tspan class="found-t">■ found</tspan> <tspan class="missed-t">■ missed</tspan> '
                '<tspan class="added-t">■ added by the draft</tspan></text>')
    return _svg("Per-observation agreement (top 10)", "".join(body), "observations")


def length_plot(cases: list[dict]) -> str:
    top = max([c["signed_words"] for c in cases] + [c["draft_words"] for c in cases] + [1])
    sx = (W - PAD - 12) / top
    sy = (H - PAD - 12) / top

    def xy(a, b):
        return PAD + a * sx, H - PAD - b * sy

    (x0, y0), (x1, y1) = xy(0, 0), xy(top, top)
    body = [_axes("signed impression (words)", "draft (words)"),
            f'<line x1="{x0}" y1="{y0}" x2="{x1:.1f}" y2="{y1:.1f}" class="diag"/>',
            f'<text x="{x1:.1f}" y="{H - PAD + 12}" text-anchor="end" class="tick">{top}</text>',
            f'<text x="{PAD - 4}" y="{y1 + 4:.1f}" text-anchor="end" class="tick">{top}</text>']
    for c in cases:
        x, y = xy(c["signed_words"], c["draft_words"])
        body.append(f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="3"><title>{escape(str(c.get("accession")))}: '
                    f'{c["signed_words"]} / {c["draft_words"]} words</title></circle>')
    return _svg("Draft vs signed length (one dot per case; diagonal = same length)", "".join(body), "lengths")


# --- page --------------------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.2em;color:#1b1b1b;font-size:14px}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.2em 0 .4em}
.meta{color:#555}.figs{display:flex;flex-wrap:wrap;gap:.6em}.fig{border:1px solid #ccd;border-radius:6px;padding:.5em .8em;min-width:10em}
.fig b{font-size:1.4em;display:block}.fig small{color:#555}
.plots{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}figcaption{font-size:.85em;color:#444;text-align:center}
svg text{font-size:10px;fill:#333}svg .tick{font-size:9px}.axis{stroke:#666}.diag{stroke:#aaa;stroke-dasharray:4 3}
.bar{fill:#4a78b5}.dot{fill:#4a78b5;fill-opacity:.6}.found{fill:#3a9a5b}.missed{fill:#c8453b}.added{fill:#e0a526}
.found-t{fill:#3a9a5b}.missed-t{fill:#c8453b}.added-t{fill:#b07d00}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #dde;padding:3px 5px;vertical-align:top;text-align:left}
th{background:#eef1f7;cursor:pointer;position:sticky;top:0}th.sorted-asc::after{content:" ▲"}th.sorted-desc::after{content:" ▼"}
td.text{max-width:28em}del{background:#fbd3d0;text-decoration:none}ins{background:#cfeccf;text-decoration:none}
.flag{display:inline-block;border-radius:3px;padding:0 4px;margin:1px;font-size:.85em;background:#fde2b8}
.flag.high{background:#f7b7b1}.controls{margin:.5em 0;display:flex;gap:.8em;align-items:center}
tr.hidden{display:none}.num{text-align:right;font-variant-numeric:tabular-nums}
"""

JS = """
(function(){
  var table=document.getElementById('cases'), body=table.tBodies[0];
  var q=document.getElementById('q'), kind=document.getElementById('kind'), shown=document.getElementById('shown');
  function filter(){
    var t=q.value.toLowerCase(), k=kind.value, n=0;
    Array.prototype.forEach.call(body.rows,function(r){
      var ok=(!t||r.textContent.toLowerCase().indexOf(t)>=0)&&(!k||(k==='none'?r.dataset.flags==='':(' '+r.dataset.flags+' ').indexOf(' '+k+' ')>=0));
      r.classList.toggle('hidden',!ok); if(ok)n++;});
    shown.textContent=n;
  }
  // a link can carry a filter (report.html#q=pneumothorax&flag=laterality): one auditor sends another the cases
  var h=new URLSearchParams(location.hash.slice(1)); if(h.get('q'))q.value=h.get('q'); if(h.get('flag'))kind.value=h.get('flag');
  q.addEventListener('input',filter); kind.addEventListener('change',filter);
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
    th.addEventListener('click',function(){
      var asc=!th.classList.contains('sorted-asc');
      Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){h.classList.remove('sorted-asc','sorted-desc');});
      th.classList.add(asc?'sorted-asc':'sorted-desc');
      var num=th.dataset.type==='num', rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){
        var x=a.cells[i].dataset.v!==undefined?a.cells[i].dataset.v:a.cells[i].textContent;
        var y=b.cells[i].dataset.v!==undefined?b.cells[i].dataset.v:b.cells[i].textContent;
        if(num){x=parseFloat(x)||0;y=parseFloat(y)||0;}
        return (x<y?-1:x>y?1:0)*(asc?1:-1);});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
  filter();
})();
"""


def _fig(label: str, fig: dict | None, fmt: str = "{:.3f}") -> str:
    if not fig:
        return ""
    lo, hi = fig["ci95"]
    return (f'<div class="fig"><small>{escape(label)}</small><b>{fmt.format(fig["value"])}</b>'
            f"<small>95% CI {fmt.format(lo)}–{fmt.format(hi)}</small></div>")


def _case_row(c: dict) -> str:
    left, right = word_diff(c["signed_impression"], c["draft"])
    kinds = sorted({f["kind"] for f in c["flags"]})
    flags = "".join(f'<span class="flag {escape(f["severity"])}">{escape(f["kind"])}: {escape(f["observation"])}</span>'
                    for f in c["flags"])
    clin = f'{c["clinical_tp"]}/{c["clinical_fp"]}/{c["clinical_fn"]}'
    cells = [
        f"<td>{escape(str(c.get('accession') or ''))}</td>",
        f"<td>{escape((c.get('date') or '')[:10])}</td>",
        f"<td>{escape(c.get('modality') or '')}</td>",
        f"<td>{escape(c.get('procedure') or c.get('procedure_code') or '')}</td>",
        f'<td class="num" data-v="{c["rougeL"]}">{c["rougeL"]:.3f}</td>',
        f'<td class="num" data-v="{c["clinical_fp"] + c["clinical_fn"]}">{clin}</td>',
        f'<td data-v="{len(c["flags"])}">{flags}</td>',
        f'<td class="text">{left}</td>',
        f'<td class="text">{right}</td>',
        f"<td>{escape(str(c.get('source') or ''))}</td>",
    ]
    return f'<tr data-flags="{escape(" ".join(kinds))}">' + "".join(cells) + "</tr>"


def render(run: dict, cases: list[dict], skipped: list[dict]) -> str:
    s = summary(cases)
    ident = run.get("identity", {})
    counts = run.get("counts", {})
    src = run.get("source", {})
    head = ("<tr><th>accession</th><th>date</th><th>modality</th><th>procedure</th><th data-type=num>ROUGE-L</th>"
            "<th data-type=num title='observations found / added by the draft / missed'>clinical tp/fp/fn</th>"
            "<th data-type=num>flags</th><th>signed impression (<del>only here</del>)</th>"
            "<th>draft (<ins>only here</ins>)</th><th>source</th></tr>")
    reasons = "".join(f"<tr><td>{escape(r)}</td><td class=num>{n}</td></tr>"
                      for r, n in counts.get("skipped_by_reason", {}).items())
    skip_rows = "".join(f"<tr><td>{escape(str(k.get('source')))}</td><td class=num>{k.get('index')}</td>"
                        f"<td>{escape(k['reason'])}</td><td>{escape(k.get('detail') or '')}</td></tr>" for k in skipped)
    options = "".join(f'<option value="{k}">{k}</option>' for k in FLAG_KINDS)
    model = f"{ident.get('backend')} · {ident.get('base_model')} · adapter {ident.get('adapter') or 'none'}"
    figs = "".join([
        _fig("ROUGE-1", s.get("rouge1")), _fig("ROUGE-2", s.get("rouge2")), _fig("ROUGE-L", s.get("rougeL")),
        _fig("clinical F1 (micro)", s.get("clinical_f1")), _fig("drafts flagged", s.get("flagged_share"), "{:.1%}"),
        _fig("drafts with a laterality error", s.get("laterality_error_share"), "{:.1%}"),
    ])
    plots = "".join([rouge_plot(cases), observation_plot(cases), flags_plot(cases), length_plot(cases)]) if cases else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>radbridge audit</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>
<h1>radbridge audit: AI drafts beside signed impressions</h1>
<p class="meta">{escape(model)} · template {escape(str(ident.get('template')))} ·
adapter sha256 {escape(str(ident.get('adapter_sha256') or '–'))[:16]} · radbridge {escape(str(run.get('radbridge_version')))}<br>
source: {escape(str(src.get('kind')))} {escape(', '.join(map(str, src.get('paths') or [src.get('topic') or src.get('url') or ''])))}
(digest {escape(str(src.get('digest', ''))[:16])}) · run {escape(str(run.get('status')))} ·
started {escape(str(run.get('first_started')))} · ended {escape(str(run.get('ended')))}</p>
<h2>Summary</h2>
<p><b id="n-audited">{len(cases)}</b> cases audited · {counts.get('read', 0)} reports read in the last run ·
{len(skipped)} not audited · {counts.get('resumed_cases', 0)} resumed from an earlier run.
Intervals: 95% bootstrap over cases (1000 resamples).</p>
<div class="figs">{figs}</div>
<h2>Plots</h2><div class="plots">{plots}</div>
<h2>Cases</h2>
<div class="controls"><label>filter <input id="q" type="search" placeholder="text, accession, observation"></label>
<label>flag <select id="kind"><option value="">any</option><option value="none">no flag</option>{options}</select></label>
<span><span id="shown"></span> shown · click a heading to sort</span></div>
<table id="cases"><thead>{head}</thead><tbody>{''.join(_case_row(c) for c in cases)}</tbody></table>
<h2>Not audited, by reason</h2><table id="reasons"><tr><th>reason</th><th>reports</th></tr>{reasons}</table>
<table id="skipped"><thead><tr><th>source</th><th>index</th><th>reason</th><th>detail</th></tr></thead>
<tbody>{skip_rows}</tbody></table>
<script>{JS}</script></body></html>
"""


def write_report(folder: Path) -> Path:
    folder = Path(folder)
    run = json.loads((folder / RUN).read_text(encoding="utf-8")) if (folder / RUN).is_file() else {}
    page = render(run, read_jsonl(folder / CASES), read_jsonl(folder / SKIPPED))
    target = folder / "report.html"
    target.write_text(page, encoding="utf-8")
    return target
