"""Which signed reports the prompt shows, measured on the tune part only: nearest first (as trained and served), or
re-ranked so that abnormal findings are shown examples that name the same abnormal observations.

    RADBRIDGE_LOCAL_DTYPE=float32 python -m training.example_order --adapter runs/soup75-fp16/adapter \
        --template paper-v1+examples2+exwords20+sim+fwords60+select5 \
        --data runs/data/valid-tune.jsonl --train runs/data/train.jsonl \
        --baseline runs/results/retrieval_valid_checker.json

The drafts are short because the nearest signed impressions the prompt shows are short (the retrieval baseline
writes 5.0 words against the tune references' 9.2; docs/model-results.md). Here, when the findings assert an
abnormal observation (radbridge.labeler), the 10 nearest reports are re-ranked before the template takes its
examples (and +select its candidates): ``match`` puts those whose impression names one of the asserted
observations closest to the question, then by similarity; ``long`` also prefers, among them, impressions of 8 words
or more. Normal findings keep the nearest. Each order drafts every report once through the pipeline's Drafter;
printed with training.length_policies' table (the model alone and after the template's wording policy).
Never run on the confirm part.
"""

from __future__ import annotations

import argparse

from radbridge.labeler import abnormal
from radbridge.prompt import Example

from .goals import read_drafts
from .length_policies import print_table, tune_args, tune_drafter

ORDERS = ("nearest", "match", "long")


class ReRanked:
    """An ExampleSource over ``source`` that re-ranks its 10 nearest reports for abnormal findings (``ORDERS``)."""

    POOL = 10

    def __init__(self, source, order: str):
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
        self.source, self.order = source, order

    def examples_for(self, findings: str, k: int) -> list[Example]:
        asserted = abnormal(findings)
        if self.order == "nearest" or not asserted:
            return list(self.source.examples_for(findings, k))
        near = list(self.source.examples_for(findings, max(k, self.POOL)))  # most similar last

        def key(ex: Example) -> tuple:
            names = bool(abnormal(ex.impression) & asserted)
            long = len(ex.impression.split()) >= 8 if self.order == "long" else False
            return names, long, ex.similarity or 0.0

        return sorted(near, key=key)[-k:]  # stable ascending sort: the best last, like the retriever


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tune_args(ap, "the served template (its wording policy is applied too)")
    ap.add_argument("--orders", nargs="+", default=list(ORDERS), choices=ORDERS)
    args = ap.parse_args(argv)
    from radbridge.evaluation import PipelineDrafter

    records, drafter = tune_drafter("example_order", args)
    nearest = drafter.examples
    policies: dict[str, list[str]] = {}
    for order in args.orders:
        drafter.examples = ReRanked(nearest, order)
        run = PipelineDrafter(drafter, batch_size=8, progress=True)
        served = run(records)
        policies[f"{order}: model alone"] = run.completions
        if drafter.template.select_from or drafter.template.copy_normal:
            policies[f"{order}: served ({drafter.template.id.rsplit('+', 1)[-1]})"] = served
    print_table(policies, records, read_drafts(args.baseline) if args.baseline else None, args.resamples)


if __name__ == "__main__":
    main()
