"""Importing the CLI (for --help and shell completion) must not import heavy libraries."""

from __future__ import annotations

import subprocess
import sys


def test_cli_import_is_light():
    code = (
        "import sys, knntools.cli\n"
        "heavy = [m for m in ('torch', 'torchvision', 'hnswlib', 'sklearn', 'matplotlib', 'scipy') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"knntools.cli imported heavy modules: {out}"
