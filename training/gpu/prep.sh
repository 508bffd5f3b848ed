#!/usr/bin/env bash
# Stage a GPU training run under .device/ (ignored by git): ../shared/tools/device-prep.sh (the base model in two
# halves, the gguf wheel, the OpenI reports and split) plus the one pure-Python package training imports that the
# GPU image lacks (hl7apy, through radbridge.samples). Run from the project root after scripts/setup.sh.
# The two device calls that follow: docs/model-results.md, "Training on a lent GPU".
set -euo pipefail
bash ../shared/tools/device-prep.sh
version=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("hl7apy"))')
.venv/bin/python -m pip download -q --no-deps -d .device/whl "hl7apy==$version"
ls .device/whl
