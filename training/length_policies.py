"""Can a wording policy make a candidate's drafts long enough for the selection protocol's length rule? Tune part only.

    python -m training.length_policies runs/results/all30_select5_tune.json \
        --data runs/data/valid-tune.jsonl --train runs/data/train.jsonl \
        [--baseline runs/results/retrieval_valid_checker.json]

Re-applies policies to the model-alone drafts of one ``radbridge eval`` results file (no generation: seconds), so
they can be compared on the part the protocol tunes on (docs/model-results.md). Prints one line per policy:
ROUGE-L, clinical F1, laterality errors, mean words and the ratio to the references', and the tune ranking
(R-L + 0.25 x clinical F1); with ``--baseline``, also the ROUGE-L difference to that run's drafts and its paired
bootstrap 95 % interval (training.goals.check, ``--resamples``, 1,000 by default). The policies:

- ``select<k> len<l>``: ``+select<k>`` (radbridge.prompt.select) with a length term in the utility,
  −l × |log((words + 1) / (expected + 1))|, the expected length being the draft's own (``draft``) or the
  similarity-weighted mean of the 10 nearest signed impressions (``nn10``).
- ``complete``: after the model's draft (``model``) or after ``+select5`` (``select5``), the findings' first
  sentence asserting each observation the checker flags as omitted (``severe``: only when the draft calls the study
  normal), at most ``max`` sentences; ``replace`` puts them instead of a draft that calls the study normal.

Never run on the confirm part: a policy chosen here is confirmed once with ``training.goals`` like any candidate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from radbridge.evaluation import read_records, score
from radbridge.labeler import label
from radbridge.prompt import select
from radbridge.retrieval import Retriever
from radbridge.textclean import sentences
from radbridge.verify import FlagKind, check

from .goals import check as goals_check
from .goals import read_drafts


def words(text: str) -> int:
    return len(text.split())


def select_with_length(draft: str, candidates, findings: str, k: int, lam: float, expected: float) -> str:
    """``+select<k>`` (radbridge.prompt.select, its weights) with a length term in the utility around ``expected``."""
    chosen = select(draft, candidates[:k], findings, length_weight=lam, expected_words=expected)
    return draft if chosen is None else chosen.impression.strip()


def complete(draft: str, findings: str, *, severe_only: bool, at_most: int, replace: bool) -> str:
    omitted = [f for f in check(draft, findings).flags
               if f.kind is FlagKind.OMISSION and f.observation != "Support Devices" and (f.severe or not severe_only)]
    added: list[str] = []
    for flag in omitted:
        hit = next((s for s in sentences(findings) if label(s).labels.get(flag.observation) == "positive"), None)
        if hit and hit not in added:
            added.append(hit)
    added = added[:at_most]
    if not added:
        return draft
    if replace and any(f.severe for f in omitted):
        return " ".join(added)
    return f"{draft.rstrip()} {' '.join(added)}".strip()


def offline_args(doc: str, argv: list[str] | None) -> argparse.Namespace:
    """The arguments of the tools that re-apply policies to one results file's drafts (``tune_drafts``)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--baseline", type=Path, help="results file to compare ROUGE-L against (e.g. retrieval)")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for --baseline's intervals")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = offline_args(__doc__, argv)
    records, model = tune_drafts("length_policies", args.results, args.data)
    findings = [r["findings"] for r in records]
    nearest = [list(reversed(exs)) for exs in Retriever.from_jsonl(args.train).examples(findings, 10)]  # best first

    def nn10(exs) -> float:
        weights = [ex.similarity or 0.0 for ex in exs]
        return sum(w * words(ex.impression) for w, ex in zip(weights, exs)) / max(sum(weights), 1e-9)

    policies: dict[str, list[str]] = {"model alone": model}
    for k in (5, 10):
        for lam in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0):
            for name, expected in (("draft", lambda m, exs: words(m)), ("nn10", lambda m, exs: nn10(exs))):
                if lam == 0.0 and name == "nn10":
                    continue
                policies[f"select{k} len{lam} {name}"] = [
                    select_with_length(m, exs, f, k, lam, expected(m, exs)) for m, exs, f in zip(model, nearest, findings)]
    base = {"model": model, "select5": policies["select5 len0.0 draft"]}
    for base_name, drafts in base.items():
        for replace in (False, True):
            for severe_only in (False, True):
                for at_most in (1, 3):
                    policies[f"complete {base_name} {'replace' if replace else 'append'} severe={severe_only} max={at_most}"] = [
                        complete(d, f, severe_only=severe_only, at_most=at_most, replace=replace)
                        for d, f in zip(drafts, findings)]
    print_table(policies, records, read_drafts(args.baseline) if args.baseline else None, args.resamples)


def tune_drafts(tool: str, results: Path, data: Path) -> tuple[list[dict], list[str]]:
    """The reports of ``data``, a tune part (the confirm part is refused), and the model-alone drafts ``results``
    (a ``radbridge eval`` file) holds for them, in the same order."""
    if "confirm" in data.name:
        raise SystemExit(f"{tool}: tune part only (the confirm part is looked at once, by training.goals)")
    records = read_records(data)
    rows = json.loads(results.read_text())["drafts"]
    if [r.get("uid") for r in records] != [r["uid"] for r in rows]:
        raise SystemExit(f"{tool}: {results} does not hold the reports of {data}, in order")
    return records, [r.get("model_draft", r["draft"]) for r in rows]


def tune_args(ap: argparse.ArgumentParser, template_help: str) -> None:
    """The arguments of the tools that draft the tune part with one adapter (``tune_drafter``)."""
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--template", required=True, help=template_help)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--train", type=Path, required=True, help="the signed reports examples come from")
    ap.add_argument("--baseline", type=Path, help="results file to compare ROUGE-L against (e.g. retrieval)")
    ap.add_argument("--resamples", type=int, default=1000)


def tune_drafter(tool: str, args: argparse.Namespace):
    """The reports of ``args.data``, a tune part (the confirm part is refused), and the pipeline's Drafter for
    ``args.adapter`` with ``args.template`` on the local backend, as ``radbridge eval`` builds it."""
    if "confirm" in args.data.name:
        raise SystemExit(f"{tool}: tune part only (the confirm part is looked at once, by training.goals)")
    return read_records(args.data), local_drafter(args.adapter, args.template, args.train)


def local_drafter(adapter: str, template: str, train: Path, batch_size: int = 8):
    """The pipeline's Drafter for ``adapter`` with ``template`` on the local backend, examples from ``train``, as
    ``radbridge eval`` builds it (the model loads on first use)."""
    from radbridge.bootstrap import build_drafter
    from radbridge.settings import Settings

    return build_drafter(Settings(backend="local", adapter=adapter, prompt_template=template, examples_file=train,
                                  local_batch_size=batch_size, batch_size=batch_size))


def print_table(policies: dict[str, list[str]], records: list[dict], baseline: dict | None, resamples: int) -> None:
    """One line per policy (its drafts in ``records``' order): ROUGE-L, clinical F1, laterality errors, words, the
    ratio to the references' words, R-L + 0.25 x F1, and with ``baseline`` (uid -> draft) the paired difference."""
    references = [r["impression"] for r in records]
    findings = [r["findings"] for r in records]
    print(f"{'policy':48s}  R-L     clinF1  lat  words  x ref  R-L+0.25F1" + ("  R-L vs baseline [95% CI]" if baseline else ""))
    for name, drafts in policies.items():
        s = score(drafts, references, findings)
        ratio = s["mean_draft_words"] / s["mean_reference_words"]
        line = (f"{name:48s}  {s['rougeL']:.4f}  {s['clinical_f1']:.3f}   {s['laterality_errors']:<3d}  "
                f"{s['mean_draft_words']:5.2f}  {ratio:.3f}  {s['rougeL'] + 0.25 * s['clinical_f1']:.4f}")
        if baseline is not None:
            rl = goals_check({r["uid"]: d for r, d in zip(records, drafts)}, baseline, records,
                             resamples=resamples)["goals"]["rougeL"]
            line += f"  {rl['diff']:+.4f} [{rl['ci95'][0]:+.4f}, {rl['ci95'][1]:+.4f}]"
        print(line, flush=True)


if __name__ == "__main__":
    main()
