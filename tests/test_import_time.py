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


def test_help_imports_no_numpy_or_h5py():
    """`knntools CMD --help` parses and prints: no numerical library, not even numpy or h5py."""
    code = (
        "import sys\n"
        "from knntools.cli import main\n"
        "for argv in (['--help'], ['dknn', '--help'], ['index', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), exc.code\n"
        "heavy = [m for m in ('numpy', 'h5py', 'torch', 'hnswlib', 'sklearn', 'scipy', 'matplotlib', 'threadpoolctl') if m in sys.modules]\n"
        "print(','.join(heavy), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stderr.strip().splitlines()[-1:] in ([], [""]), f"--help imported: {proc.stderr.strip().splitlines()[-1]}"
