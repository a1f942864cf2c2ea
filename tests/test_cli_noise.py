"""`knntools noise` and `knntools info` through the CLI, and the CLI conventions shared by all commands."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import run_cli, run_json
from knntools.cli import COMMANDS, app

FMNIST = Path("/usr/share/datasets/fashion-mnist")
runner = CliRunner()


def test_noise_digits_json_and_stdout_split(tmp_path):
    out = tmp_path / "l2.h5"
    proc = run_cli("noise", "--dataset", "digits", "--kind", "asymmetric-random", "--rate", "0.3", "--seed", "1", "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["output"] == str(out) and summary["kind"] == "asymmetric-random"
    assert abs(summary["actual_rate"] - 0.3) < 0.01
    assert "realised" in proc.stderr  # the human table goes to stderr
    with h5py.File(out) as f:
        assert f.attrs["kind"] == "labels" and f["labels"].shape == f["labels_clean"].shape


def test_noise_without_json_prints_path_only(tmp_path):
    out = tmp_path / "l.h5"
    proc = run_cli("noise", "--kind", "uniform", "--rate", "0.2", "-o", out, "-q")
    assert proc.returncode == 0 and proc.stdout.strip() == str(out) and proc.stderr == ""


def test_same_seed_same_labels(tmp_path):
    for name in ("a.h5", "b.h5"):
        run_cli("noise", "--kind", "permute", "--rate", "0.3", "--seed", "4", "-o", tmp_path / name, "-q", check=True)
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        assert a["labels"][()].tobytes() == b["labels"][()].tobytes()
        assert a.attrs["uuid"] != b.attrs["uuid"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--kind", "uniform", "--rate", "1.5"], r"error: --rate: noise rate 1.5: expected a number in \[0, 1\]"),
        (["--kind", "sideways", "--rate", "0.1"], "unknown noise kind"),
        (["--dataset", "imagenet7", "--rate", "0.1"], "dataset 'imagenet7' is unknown"),
        (["--dataset", "mnist", "--data-dir", "/nonexistent/dir", "--rate", "0.1"], "no such folder"),
        (["--kind", "semantic", "--dataset", "wine", "--rate", "0.1"], "no built-in class map"),
        (["--kind", "matrix", "--transition-matrix", "MATRIX"], "row 0 sums to"),
        (["--kind", "matrix", "--transition-matrix", "SMALL"], r"expected \(10, 10\)"),
    ],
)
def test_noise_bad_input_exit_2_one_line_no_output(tmp_path, args, message):
    np.savetxt(tmp_path / "m.csv", np.ones((10, 10)), delimiter=",")
    np.save(tmp_path / "s.npy", np.eye(3))
    args = [str(tmp_path / "m.csv") if a == "MATRIX" else str(tmp_path / "s.npy") if a == "SMALL" else a for a in args]
    out = tmp_path / "out.h5"
    proc = run_cli("noise", *args, "-o", out)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert err[0].startswith("knntools noise: error: "), proc.stderr
    import re

    assert re.search(message, err[0]), err[0]
    assert len(err) == 1
    assert not out.exists() and list(tmp_path.glob("*.partial")) == [] and list(tmp_path.glob(".*partial")) == []


def test_existing_output_refused_then_forced(tmp_path):
    out = tmp_path / "l.h5"
    run_cli("noise", "--rate", "0.1", "-o", out, "-q", check=True)
    before = out.read_bytes()
    proc = run_cli("noise", "--rate", "0.2", "-o", out)
    assert proc.returncode == 2 and "error: --force: " in proc.stderr and "output file exists" in proc.stderr
    assert out.read_bytes() == before
    run_cli("noise", "--rate", "0.2", "-o", out, "--force", "-q", check=True)
    assert out.read_bytes() != before


def test_user_transition_matrix_cli(tmp_path):
    T = np.full((10, 10), 0.02) + np.eye(10) * 0.8
    np.save(tmp_path / "T.npy", T)
    s = run_json("noise", "--kind", "matrix", "--transition-matrix", tmp_path / "T.npy", "-o", tmp_path / "l.h5")
    np.testing.assert_allclose(np.array(s["transition_matrix"]), T)


def test_corrupt_input_file_for_info(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n garbage")
    proc = run_cli("info", bad)
    assert proc.returncode == 2 and proc.stderr.startswith("knntools info: error: ") and "not a readable HDF5 file" in proc.stderr
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.zeros(3)
    proc = run_cli("info", tmp_path / "foreign.h5")
    assert proc.returncode == 2 and "not a knntools file" in proc.stderr


def test_info_human_and_json(tmp_path):
    out = tmp_path / "l.h5"
    run_cli("noise", "--rate", "0.1", "-o", out, "-q", check=True)
    proc = run_cli("info", out)
    assert proc.returncode == 0 and "labels file" in proc.stdout and "transition_matrix" in proc.stdout
    s = run_json("info", out, out)
    assert [f["kind"] for f in s["files"]] == ["labels", "labels"]
    assert s["files"][0]["datasets"]["labels"]["dtype"] == "int64"
    assert s["files"][0]["provenance"]["seed"] == 0


def test_usage_errors_exit_2_one_line():
    proc = run_cli("noise", "--no-such-flag")
    assert proc.returncode == 2
    assert proc.stderr.startswith("knntools noise: error: ")
    proc = run_cli("frobnicate")
    assert proc.returncode == 2 and "knntools: error:" in proc.stderr


def test_verbose_shows_traceback(tmp_path):
    proc = run_cli("noise", "--rate", "3", "-o", tmp_path / "x.h5", "-v")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_version_and_help():
    from knntools import __version__

    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"knntools {__version__}"
    proc = run_cli("--help")
    assert proc.returncode == 0
    for name, _, _ in COMMANDS:
        assert name in proc.stdout


@pytest.mark.parametrize("name", [c[0] for c in COMMANDS])
def test_every_command_has_help_with_reads_writes_and_examples(name):
    result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Reads:" in result.output and "Writes:" in result.output, result.output
    assert "Examples" in result.output
    assert "--json" in result.output or name == "info"


@pytest.mark.skipif(not FMNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_noise_fashion_mnist_as_written(tmp_path):
    s = run_json("noise", "--dataset", "fashion-mnist", "--data-dir", FMNIST, "--kind", "uniform", "--rate", "0.4",
                 "--seed", "0", "-o", tmp_path / "labels.h5")
    assert s["n_samples"] == 60000
    assert s["actual_rate"] == pytest.approx(0.4 * 9 / 10, abs=1e-4)
    s = run_json("noise", "--dataset", "fashion-mnist", "--data-dir", FMNIST, "--kind", "semantic", "--rate", "0.4",
                 "-o", tmp_path / "sem.h5")
    assert s["actual_rate"] == pytest.approx(0.4 * 7 / 10, abs=1e-3)
