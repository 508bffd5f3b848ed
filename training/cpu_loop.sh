#!/usr/bin/env bash
# A long training run on CPU, restarted every RESTART_MIN minutes until it has written its summary.
#
#   training/cpu_loop.sh training/configs/all-layers.json runs/all30-2ep --set bf16=true
#
# Why: on this machine a bf16 (autocast) CPU run's memory grows steadily (9 GB after 3 steps, about +0.07 to
# +0.2 GB a minute), so one process cannot last the 3-4 hours of the all-layer recipe. A checkpoint is written after
# every step and a rerun of the same command resumes from it exactly (training/train.py), so a restart costs only
# the step in flight and the model load. Touch OUTPUT_DIR/STOP to end the loop after the current process.
# Output: OUTPUT_DIR/stdout.log (the runs' own output and each exit), OUTPUT_DIR/log.jsonl (one line a step).
set -u
config=$1; out=$2; shift 2
restart_min=${RESTART_MIN:-65}
cd "$(dirname "$0")/.."
mkdir -p "$out"
while [ ! -f "$out/summary.json" ]; do
  timeout $((restart_min * 60)) nice -n 5 .venv/bin/python -m training.train --config "$config" \
    --set "output_dir=\"$out\"" "$@" --no-progress >> "$out/stdout.log" 2>&1
  echo "exit $? at $(date -u +%FT%TZ)" >> "$out/stdout.log"
  [ -f "$out/STOP" ] && break
done
