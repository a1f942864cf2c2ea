"""Shared fixtures: synthetic activation/feature files built through knntools.io, a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Two cores: one torch thread per pytest-xdist worker (and its subprocesses), two without xdist.
# More threads than cores make torch's intra-op threads spin against each other.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")


def pytest_collection_modifyitems(config, items):
    """Run the slowest tests (example scripts, then ``slow``) first, so that pytest-xdist spreads them
    over its workers instead of leaving them queued on one worker at the end."""
    def rank(item):
        return 0 if item.get_closest_marker("examples") else 1 if item.get_closest_marker("slow") else 2
    items.sort(key=rank)  # stable: file order is kept within each group


def make_blobs_activations(n: int = 300, n_classes: int = 3, dims=(16, 8), seed: int = 0, noise: float = 0.5, centers_seed: int = 123):
    """Synthetic 'network' activations: class-separated Gaussian blobs per layer (centres fixed by
    ``centers_seed`` so train and test files share them), logits = negative squared distance to the
    class means of the last layer / 10. Returns (layers dict name -> float32 [n, d], logits [n, C], y int64 [n])."""
    crng = np.random.default_rng(centers_seed)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n).astype(np.int64)
    layers = {}
    centers_last = None
    for i, d in enumerate(dims):
        centers = crng.normal(0, 3, size=(n_classes, d))
        layers[f"layer{i + 1}"] = (centers[y] + rng.normal(0, noise * (i + 1), size=(n, d))).astype(np.float32)
        centers_last = centers
    last = layers[f"layer{len(dims)}"]
    logits = (-((last[:, None, :] - centers_last[None]) ** 2).sum(-1) / 10.0).astype(np.float32)
    return layers, logits, y


@pytest.fixture
def activations_pair(tmp_path: Path):
    """(train.h5, test.h5) synthetic activation files of the same 'model' (shared model_uuid)."""
    from knntools.io.kinds import write_activations

    classes = ["a", "b", "c"]
    out = []
    for split, seed, n in (("train", 0, 300), ("test", 1, 120)):
        layers, logits, y = make_blobs_activations(n=n, seed=seed)
        path = tmp_path / f"{split}.h5"
        write_activations(path, layers=layers, logits=logits, labels=y, ids=np.arange(n), classes=classes,
                          labels_clean=y, attrs={"dataset": "blobs", "split": split, "model_uuid": "model-0"})
        out.append(path)
    return tuple(out)


def run_cli(*args: str, cwd: str | Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m knntools ARGS`` in a subprocess (real stdout/stderr split and exit codes)."""
    proc = subprocess.run([sys.executable, "-m", "knntools", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def run_json(*args: str, cwd: str | Path | None = None) -> dict:
    """Run a command with --json, check exit 0, return the parsed single JSON object from stdout."""
    proc = run_cli(*args, "--json", cwd=cwd, check=True)
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def invoke(capsys, *args):
    """Run ``knntools ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from knntools.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def ok_json(capsys, *args):
    """Run ``knntools ARGS --json`` in-process; assert exit 0 and exactly one stdout line; return its JSON."""
    import json

    code, out, err = invoke(capsys, *args, "--json")
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    return json.loads(lines[0])
