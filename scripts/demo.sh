#!/usr/bin/env bash
# Set up and run the demo: embedded Kafka-protocol broker + radbridge service + local model, sample messages in.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/radbridge demo "$@"
