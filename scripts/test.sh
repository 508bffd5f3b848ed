#!/usr/bin/env bash
# Set up and run the tests: all of them (unit + integration on the real broker, model and FHIR server) by default,
# or the paths and pytest options given (`make test-unit` passes tests/unit).
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
if [ $rc -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
exit $rc
