# Sourced by run.sh and test.sh from the repository root: create ./.venv once, install knntools into
# it editable as the pip target $1 ("." or ".[test]"; always pass it: a bare `source` would hand this
# file the caller's own arguments), and put .venv/bin first on PATH.
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e "$1"
export PATH="$PWD/.venv/bin:$PATH"
