#!/usr/bin/env bash
# Install knntools with its test dependencies into ./.venv and run the test suite.
#   ./test.sh                 # whole suite (CPU only, well under 10 minutes on 2 cores)
#   ./test.sh -k noise -x     # extra arguments go to pytest
# Tests run on 2 worker processes (pytest-xdist, work-stealing so the slow example tests spread;
# KNNTOOLS_TEST_WORKERS=0 runs them in one process).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e ".[test]"
export PATH="$PWD/.venv/bin:$PATH"
WORKERS=${KNNTOOLS_TEST_WORKERS:-2}
if [ "$WORKERS" != 0 ]; then set -- -n "$WORKERS" --dist worksteal "$@"; fi
exec .venv/bin/python -m pytest "$@"
