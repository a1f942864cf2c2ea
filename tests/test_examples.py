"""Every example script runs at toy size (TOY=1): a smoke test that fails when a command's interface
drifts from the examples. Each script writes into its own temporary OUT folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "examples").glob("*.sh"))


def _env(tmp_path: Path) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "TOY": "1", "OUT": str(tmp_path / "out"), "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
            "PYTHON": sys.executable, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


@pytest.mark.examples
@pytest.mark.parametrize("script", SCRIPTS)
def test_example_script_runs_at_toy_size(script, tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "examples" / script)], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0, f"{script} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    assert (tmp_path / "out").exists() and any((tmp_path / "out").rglob("*")), f"{script} wrote nothing into OUT"


@pytest.mark.examples
def test_compare_toy_and_resume_by_provenance(tmp_path):
    env = _env(tmp_path)
    cmd = [sys.executable, str(ROOT / "examples" / "compare.py"), "--toy", "--settings", "uniform40", "--out", str(tmp_path / "cmp"), "--json"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    s1 = json.loads(first.stdout.strip().splitlines()[-1])
    assert s1["steps_run"] == 10 and s1["steps_reused"] == 0
    row = s1["rows"][0]
    for key in ("dnn", "knn_best", "dknn", "lasenn", "knet"):
        assert 0.0 <= row[key] <= 1.0, (key, row)
    for name in ("results.md", "results.csv", "results.png"):
        assert (tmp_path / "cmp" / name).exists()
    # the table agrees with the command's own output file
    import h5py

    with h5py.File(tmp_path / "cmp" / "uniform40" / "lasenn.h5") as f:
        assert abs(json.loads(f.attrs["metrics"])["accuracy"] - row["lasenn"]) < 1e-12
    # a re-run reuses everything; touching the model (a new uuid) re-runs what depends on it
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    s2 = json.loads(second.stdout.strip().splitlines()[-1])
    assert s2["steps_run"] == 0 and s2["steps_reused"] == 10, second.stderr[-2000:]
    (tmp_path / "cmp" / "uniform40" / "lasenn.h5").unlink()
    # the step re-runs as its own `knntools` process: the same provenance and the same numbers as in-process
    third = subprocess.run([*cmd, "--subprocess"], env=env, capture_output=True, text=True, cwd=tmp_path)
    s3 = json.loads(third.stdout.strip().splitlines()[-1])
    assert s3["steps_run"] == 1 and s3["steps_reused"] == 9, third.stderr[-2000:]
    assert s3["rows"] == s1["rows"]


FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.examples
@pytest.mark.skipif(not FMNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_memorisation_toy_runs_and_resumes(tmp_path):
    """The memorisation study at toy size: every method's column is filled from its command's summary,
    the figures are written, and a re-run reuses every step by provenance."""
    env = _env(tmp_path)
    cmd = [sys.executable, str(ROOT / "examples" / "memorisation.py"), "--toy", "--data-dir", str(FMNIST), "--out", str(tmp_path / "mem"), "--json"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    s1 = json.loads(first.stdout.strip().splitlines()[-1])
    (row,) = s1["rows"]
    assert row["setting"] == "permute32" and abs(row["labels_changed"] - 0.32 * 0.9) < 0.02  # permuted rows keep their label 1 in 10 times
    for key in ("dnn", "knn", "knn_1", "dknn", "lasenn", "knet", "p_same_penultimate"):
        assert 0.0 <= row[key] <= 1.0, (key, row)
    assert row["lasenn_w_q"] is not None and row["knet_k"] is not None and row["knn_val_k"] is not None
    for name in ("results.md", "results.csv", "layers.csv", "curves.csv", "accuracy_vs_noise.png", "gain_vs_noise.png",
                 "p_same_over_training.png"):
        assert (tmp_path / "mem" / name).stat().st_size > 0, name
    steps = {line.split(",")[1] for line in (tmp_path / "mem" / "curves.csv").read_text().splitlines()[1:]}
    assert steps == {"16.0", "32.0"}, steps  # the step checkpoints, named by their optimizer step
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    s2 = json.loads(second.stdout.strip().splitlines()[-1])
    assert s2["steps_run"] == 0 and s2["steps_reused"] == s1["steps_run"], second.stderr[-2000:]
    assert s2["rows"] == s1["rows"]
