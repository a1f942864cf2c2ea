#!/usr/bin/env bash
# Regenerate the shell completion scripts from the app (run from the repository root):
#   bash completions/generate.sh
# Install: bash:  source completions/knntools.bash   (or copy to /etc/bash_completion.d/)
#          zsh:   copy completions/_knntools into a folder on $fpath
#          fish:  copy completions/knntools.fish to ~/.config/fish/completions/
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}
for pair in bash:knntools.bash zsh:_knntools fish:knntools.fish; do
  shell=${pair%%:*}; file=${pair#*:}
  _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION=1 "$PY" -m knntools --show-completion "$shell" > "$file"
done
