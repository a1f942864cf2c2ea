"""The committed completion scripts are current, and completion answers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shell, file", [("bash", "knntools.bash"), ("zsh", "_knntools"), ("fish", "knntools.fish")])
def test_completion_scripts_are_current(shell, file):
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    fresh = subprocess.run([sys.executable, "-m", "knntools", "--show-completion", shell], capture_output=True, text=True, env=env, check=True).stdout
    committed = (ROOT / "completions" / file).read_text()
    assert fresh == committed, f"completions/{file} is stale: run `bash completions/generate.sh`"


def test_bash_completion_completes_commands_and_options():
    env = {**os.environ, "_KNNTOOLS_COMPLETE": "complete_bash", "COMP_WORDS": "knntools noise --ki", "COMP_CWORD": "2"}
    out = subprocess.run([sys.executable, "-m", "knntools"], capture_output=True, text=True, env=env).stdout
    assert "--kind" in out.split()
