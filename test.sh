#!/usr/bin/env bash
# Install knntools with its test dependencies into ./.venv and run the test suite.
#   ./test.sh                 # whole suite (CPU only, well under 10 minutes on 2 cores)
#   ./test.sh -k noise -x     # extra arguments go to pytest
# Tests run on 2 worker processes (pytest-xdist, work-stealing so the slow example tests spread;
# KNNTOOLS_TEST_WORKERS=0 runs them in one process).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh ".[test]"
WORKERS=${KNNTOOLS_TEST_WORKERS:-2}
if [ "$WORKERS" != 0 ]; then set -- -n "$WORKERS" --dist worksteal "$@"; fi
exec .venv/bin/python -m pytest "$@"
