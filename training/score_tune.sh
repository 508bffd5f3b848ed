#!/usr/bin/env bash
# Score candidates on the tune part the way the selection protocol does (docs/model-results.md):
#   training/score_tune.sh NAME=ADAPTER [NAME=ADAPTER ...]      (TEMPLATE=... to change the serving template)
# For each: `radbridge eval` on runs/data/valid-tune.jsonl with float32 numerics, written to
# runs/results/tune_NAME.json (skipped if it exists), then `training.goals` against retrieval,
# with and without --model-only, into runs/results/tune_NAME_goals[--model-only].txt. Never the confirm part.
set -u
cd "$(dirname "$0")/.."
source .venv/bin/activate
export PYTHONPATH=.
template=${TEMPLATE:-paper-v1+examples2+exwords20+sim+fwords60+select5+end90}
for pair in "$@"; do
  name=${pair%%=*}; adapter=${pair#*=}
  out=runs/results/tune_${name}.json
  if [ ! -f "$out" ]; then
    echo "== $name $(date +%T)"
    RADBRIDGE_LOCAL_DTYPE=float32 radbridge eval --data runs/data/valid-tune.jsonl --adapter "$adapter" \
        --template "$template" --train runs/data/train.jsonl --out "$out" > "runs/results/tune_${name}.log" 2>&1 \
        || { echo "eval failed: $name (runs/results/tune_${name}.log)"; continue; }
  fi
  for mo in "" --model-only; do
    python -m training.goals "$out" runs/results/retrieval_valid_checker.json --data runs/data/valid-tune.jsonl $mo \
        > "runs/results/tune_${name}_goals${mo}.txt" 2>&1
  done
  echo "done $name $(date +%T)"; head -4 "runs/results/tune_${name}_goals.txt"
done
