"""Which text rules to train with: the retrieval baseline on the valid split with each XXXX / prior-sentence rule.

    python bench/clean_rules_ablation.py --train runs/data/train.jsonl --valid runs/data/valid.jsonl

The rules rewrite the training side (what a model would learn to write); references stay as released.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from radbridge.evaluation import evaluate, read_records, retrieval_drafter, summary_line  # noqa: E402
from radbridge.retrieval import Retriever  # noqa: E402
from radbridge.textclean import CleanRules  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--train", required=True)
ap.add_argument("--valid", required=True)
args = ap.parse_args()
valid = read_records(args.valid)
for rules in (CleanRules(), CleanRules(drop_xxxx=True), CleanRules(drop_prior_sentences=True), CleanRules(True, True)):
    print(f"{rules.id:28s}", summary_line(evaluate(valid, retrieval_drafter(Retriever.from_jsonl(args.train, rules)))))
