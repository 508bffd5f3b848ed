#!/usr/bin/env bash
# Does the tgi backend write the local backend's drafts on a whole part, with a trained adapter and a template
# that holds the first unsure end (+end<pct>)? The local backend applies the rule as it decodes; the tgi backend
# reads TGI's top_n_tokens and sends one continuation request (radbridge/adapters/model/tgi.py). Here TGI is
# `radbridge serve-model` (TGI's protocol over the same local model), so any difference is the client's.
#
#   training/tgi_vs_local.sh ADAPTER TEMPLATE DATA LOCAL_RESULTS.json OUT_PREFIX
#
# LOCAL_RESULTS.json: `radbridge eval` of the same adapter, template and data on the local backend.
# Writes OUT_PREFIX.json (the tgi run's results) and prints the comparison (training/compare_drafts.py).
# Numerics: float32 on both sides (RADBRIDGE_LOCAL_DTYPE), as every tune and confirm row was scored.
set -euo pipefail
adapter=$1; template=$2; data=$3; local_results=$4; out=$5
cd "$(dirname "$0")/.."
source .venv/bin/activate
export PYTHONPATH=. RADBRIDGE_LOCAL_DTYPE=float32
port=${PORT:-8091}
radbridge serve-model --port "$port" --lora-adapters "radiology=$adapter" > "$out.server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/health" > /dev/null && break
  kill -0 $server 2>/dev/null || { echo "serve-model exited: $out.server.log"; exit 1; }
  sleep 2
done
radbridge eval --data "$data" --backend tgi --url "http://127.0.0.1:$port" --adapter radiology \
    --template "$template" --train runs/data/train.jsonl --out "$out.json" > "$out.log" 2>&1
python training/compare_drafts.py "$local_results" "$out.json"
