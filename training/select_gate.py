"""Where should ``+select`` choose? Tune part only.

    python -m training.select_gate runs/results/soup75_select5end90once_tune.json \
        --data runs/data/valid-tune.jsonl --train runs/data/train.jsonl \
        [--baseline runs/results/retrieval_valid_checker.json]

On the tune part ``+select5`` gained ROUGE-L where the findings assert no abnormal observation and lost it (and
length) where they do: the signed impressions it chooses among are short, and on abnormal studies they name less
than the model's draft (docs/model-results.md, "Where selection helps"). This re-applies ``+select<k>``
(radbridge.prompt.select, its frozen weights) to the model-alone drafts of one ``radbridge eval`` file, on all
reports or only on those whose findings assert nothing abnormal (``normal``: radbridge.labeler via
radbridge.prompt.abnormal), and prints training.length_policies' table, split by that gate as well. No generation:
seconds. Never run on the confirm part: a policy chosen here is confirmed once with ``training.goals``.
"""

from __future__ import annotations

from radbridge.prompt import abnormal, findings_agreement
from radbridge.retrieval import Retriever

from .goals import read_drafts
from .length_policies import offline_args, print_table, select_with_length, tune_drafts


def main(argv: list[str] | None = None) -> None:
    args = offline_args(__doc__, argv)
    records, model = tune_drafts("select_gate", args.results, args.data)
    findings = [r["findings"] for r in records]
    nearest = [list(reversed(exs)) for exs in Retriever.from_jsonl(args.train).examples(findings, 10)]  # best first
    normal = [not abnormal(f) for f in findings]

    policies: dict[str, list[str]] = {"model alone": model}
    for k in (5, 10):
        chosen = [select_with_length(m, exs, f, k, 0.0, 0.0) for m, exs, f in zip(model, nearest, findings)]
        policies[f"select{k} everywhere"] = chosen
        policies[f"select{k} where findings assert nothing"] = [c if n else m for c, m, n in zip(chosen, model, normal)]
        policies[f"select{k} there, elsewhere if it names more"] = [
            c if n or findings_agreement(c, abnormal(f)) > findings_agreement(m, abnormal(f)) else m
            for c, m, n, f in zip(chosen, model, normal, findings)]
    baseline = read_drafts(args.baseline) if args.baseline else None
    for part, keep in (("all", None), ("findings assert nothing abnormal", True), ("findings assert something", False)):
        rows = [i for i, n in enumerate(normal) if keep is None or n == keep]
        print(f"\n## {part} ({len(rows)} reports)")
        print_table({name: [drafts[i] for i in rows] for name, drafts in policies.items()},
                    [records[i] for i in rows], baseline, args.resamples)


if __name__ == "__main__":
    main()
