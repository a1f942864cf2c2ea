"""Fixtures of the fault suite: the session's input folder, read-only folders, the run figures.

Set ``KNNTOOLS_FAULTS_REPORT=FILE`` to collect one JSON line per case (also across pytest-xdist
workers); the terminal summary then prints the totals that docs/reliability.md quotes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .harness import build_inputs


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """The good and bad input files, built once per session (see :func:`harness.build_inputs`)."""
    return build_inputs(tmp_path_factory.mktemp("fault-inputs"))


def make_readonly(folder: Path) -> str | None:
    """Make ``folder`` unwritable for this process; return how, or None when impossible.

    As a normal user ``chmod 555`` does it. root ignores file modes, so there the folder gets the
    immutable attribute (``chattr +i``, needs CAP_LINUX_IMMUTABLE); :func:`undo_readonly` removes it.
    """
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return "chmod"
    if shutil.which("chattr"):
        proc = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if proc.returncode == 0:
            try:
                (folder / ".probe").touch()
            except OSError:
                return "chattr"
            (folder / ".probe").unlink()
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    return None


def undo_readonly(folder: Path, how: str | None) -> None:
    if how == "chmod":
        folder.chmod(0o755)
    elif how == "chattr":
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)


def record(entry: dict) -> None:
    """Append one case's figures to $KNNTOOLS_FAULTS_REPORT (no-op when unset)."""
    path = os.environ.get("KNNTOOLS_FAULTS_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    path = os.environ.get("KNNTOOLS_FAULTS_REPORT")
    if not path or not os.path.exists(path) or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rows = [json.loads(line) for line in open(path) if line.strip()]
    if not rows:
        return
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    total = {
        "cases": len(rows),
        "by kind": kinds,
        "clean (every check of the case passed)": sum(r.get("clean", False) for r in rows),
        "wrong exit codes": sum(not r.get("exit_ok", True) for r in rows),
        "tracebacks": sum(r.get("traceback", False) for r in rows),
        "not one error line": sum(not r.get("one_line", True) for r in rows),
        "partial files left": sum(r.get("partials", 0) for r in rows),
        "kills": sum(r["kind"] == "kill" for r in rows),
        "kills that landed before the output was complete": sum(r["kind"] == "kill" and r.get("outcome") == "signalled" for r in rows),
        "SIGKILL temp files left, named for the next run to remove": sum(r.get("stray_after_kill", 0) for r in rows),
        "new files left": sum(r.get("new_files", 0) for r in rows),
        "pre-existing files changed": sum(r.get("changed", 0) for r in rows),
        "payloads run": sum(r.get("payload_ran", False) for r in rows),
    }
    terminalreporter.write_sep("=", "knntools fault suite figures")
    for k, v in total.items():
        terminalreporter.write_line(f"{k}: {v}")
