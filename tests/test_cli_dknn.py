"""``knntools dknn``: outputs, calibration modes, quirk options, index reuse and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import make_blobs_activations, run_cli, run_json
from knntools.io.h5 import KFile
from knntools.io.kinds import write_activations

CLASSES = ["a", "b", "c"]


@pytest.fixture
def cli(capsys):
    """Run ``knntools ARGS`` in this process (fast); returns (exit code, stdout, stderr)."""
    from knntools.cli import main

    def run(*args):
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    def run_ok(*args):
        code, out, err = run(*args, "--json")
        assert code == 0, err
        lines = [l for l in out.splitlines() if l.strip()]
        assert len(lines) == 1, out
        return json.loads(lines[0])

    run.json = run_ok
    return run


def write_split(path: Path, n: int, seed: int, *, split: str, model: str = "model-0", classes=CLASSES, dims=(16, 8), ids=None, noise=1.2, attack=None):
    layers, logits, y = make_blobs_activations(n=n, seed=seed, dims=dims, noise=noise)
    attrs = {"dataset": "blobs", "split": split, "model_uuid": model}
    if attack:
        attrs["attack"] = attack
    write_activations(path, layers=layers, logits=logits, labels=y, ids=np.arange(n) if ids is None else ids, classes=classes,
                      labels_clean=y, attrs=attrs)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dknn")
    train = write_split(d / "train.h5", 300, 0, split="train")
    test = write_split(d / "test.h5", 160, 1, split="test")
    shifted = write_split(d / "test_noisy.h5", 160, 1, split="test", noise=3.0, attack="fgsm")  # same ids, harder inputs
    return d, train, test, shifted


def test_outputs_json_and_plot(files):
    d, train, test, _ = files
    out, png = d / "dknn.h5", d / "rel.png"
    s = run_json("dknn", train, test, "-k", "10", "--calibration", "40", "-o", out, "--plot", png)
    assert s["command"] == "dknn" and s["n_evaluated"] == 120 and s["calibration_size"] == 40
    assert s["layers"] == ["layer1", "layer2", "logits"]
    for key in ("accuracy", "dnn_accuracy", "mean_credibility_correct", "mean_credibility_wrong", "peak_rss_mb"):
        assert key in s
    assert s["accuracy"] > 0.8 and s["timing_s"]["search"] > 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    kf = KFile(out, kind="predictions")
    assert kf.n_samples == 120 and kf.attrs["method"] == "dknn"
    assert kf.attrs["params"]["k"] == 10 and kf.attrs["params"]["p_value"] == "smoothed"
    p = kf.read("scores")
    assert p.shape == (120, 3) and p.dtype == np.float32
    pred = kf.read("predictions")
    np.testing.assert_array_equal(pred, np.argmax(p, 1) * 0 + pred)  # stored
    np.testing.assert_allclose(kf.read("credibility"), p.max(1), atol=1e-6)
    assert (p[np.arange(120), pred] == p.max(1)).all()
    np.testing.assert_array_equal(kf.read("ids"), np.arange(40, 160))  # first 40 held out
    np.testing.assert_array_equal(kf.read("rows"), np.arange(40, 160))
    assert kf.read("dnn_predictions").shape == (120,)
    assert s["accuracy"] == pytest.approx(float((pred == kf.read("labels")).mean()))
    # every neighbour traces back to a training sample and its label
    with KFile(train) as tr:
        y_train = tr.read_labels()
        ids_train = tr.read("ids")
        X = tr.read_layer("layer2")
    nids = kf.read("neighbors/layer2/ids")
    assert nids.shape == (120, 10)
    np.testing.assert_array_equal(kf.read("neighbors/layer2/labels"), y_train[np.searchsorted(ids_train, nids)])
    # nonconformity recomputed from the stored neighbour labels
    alpha = sum(10 - (kf.read(f"neighbors/{n}/labels")[:, :, None] == np.arange(3)).sum(1) for n in ("layer1", "layer2", "logits"))
    np.testing.assert_array_equal(kf.read("nonconformity"), alpha)
    cal = kf.f["calibration/scores"][()]
    assert len(cal) == 40 and (np.diff(cal) >= 0).all()
    smoothed = (len(cal) - np.searchsorted(cal, alpha, side="left") + 1) / (len(cal) + 1)
    np.testing.assert_allclose(p, smoothed, atol=1e-6)
    # distances are Euclidean between L2-normalised vectors (default --normalize)
    with KFile(test) as te:
        q = te.read_layer("layer2", np.arange(40, 43))
    x = X[nids[:3]]
    ref = np.linalg.norm(q[:, None] / np.linalg.norm(q, axis=1)[:, None, None] - x / np.linalg.norm(x, axis=2, keepdims=True), axis=2)
    np.testing.assert_allclose(kf.read("neighbors/layer2/distances")[:3], ref, atol=1e-4)
    kf.close()


def test_calibration_file_excludes_same_ids_and_modes(files, cli):
    d, train, test, shifted = files
    out = d / "fgsm.h5"
    s = cli.json("dknn", train, shifted, "-k", "10", "--calibration-file", test, "--calibration", "50", "-o", out, "--layers", "layer2,logits")
    assert s["calibration_excluded_from_eval"] == 50 and s["n_evaluated"] == 110 and s["calibration_source"].endswith("test.h5")
    with KFile(out) as kf:
        np.testing.assert_array_equal(kf.read("ids"), np.arange(50, 160))
        np.testing.assert_array_equal(kf.f["calibration/ids"][()], np.arange(50))
        assert kf.attrs["attack"] == "fgsm" and list(kf.f["neighbors"]) == ["layer2", "logits"]
    out3 = d / "fgsm_strat.h5"  # non-contiguous calibration and evaluated rows (streamed row selection)
    cli.json("dknn", train, shifted, "-k", "10", "--calibration-file", test, "--calibration-mode", "stratified", "--calibration", "50", "-o", out3, "--layers", "layer2,logits")
    with KFile(out3) as kf, KFile(shifted) as sh:
        cal_ids = kf.f["calibration/ids"][()]
        assert len(cal_ids) == 50 and not np.array_equal(cal_ids, np.arange(50))
        np.testing.assert_array_equal(kf.read("ids"), np.setdiff1d(np.arange(160), cal_ids))
        # the evaluated rows' own neighbours: recompute one layer's labels directly
        rows = kf.read("rows")
        q = sh.read_layer("layer2")[rows]
        with KFile(train) as tr:
            X, y = tr.read_layer("layer2"), tr.read_labels()
        qn, xn = q / np.linalg.norm(q, axis=1, keepdims=True), X / np.linalg.norm(X, axis=1, keepdims=True)
        nn = np.argsort(((qn[:, None] - xn[None]) ** 2).sum(-1), axis=1)[:, :10]
        np.testing.assert_array_equal(np.sort(kf.read("neighbors/layer2/labels"), 1), np.sort(y[nn], 1))
    out2 = d / "strat.h5"
    s2 = cli.json("dknn", train, test, "-k", "10", "--calibration", "30", "--calibration-mode", "stratified", "--seed", "3", "-o", out2)
    with KFile(out2) as kf:
        cal_rows = kf.f["calibration/rows"][()]
        labels = kf.f["calibration/labels"][()]
        assert len(cal_rows) == 30 and not np.isin(kf.read("rows"), cal_rows).any()
        assert kf.n_samples == 130 and s2["n_evaluated"] == 130
    with KFile(test) as te:
        y = te.read_labels("labels_clean")
    np.testing.assert_array_equal(labels, y[cal_rows])
    counts = np.bincount(y[cal_rows], minlength=3)
    assert np.abs(counts - np.bincount(y, minlength=3) * 30 / 160).max() < 1.0


def test_reference_quirks(files, cli):
    d, train, test, _ = files
    out = d / "ref.h5"
    s = cli.json("dknn", train, test, "-k", "10", "--calibration", "60", "--reference", "-o", out, "--layers", "layer2,logits")
    assert s["p_value"] == "plain" and s["drop_zero_calibration"] and s["center"] and s["normalize"]
    with KFile(out) as kf:
        cal = kf.f["calibration/scores"][()]
        assert (cal > 0).all() and len(cal) == s["calibration_scores_kept"] < 60
        alpha = kf.read("nonconformity")
        plain = (len(cal) - np.searchsorted(cal, alpha, side="left")) / len(cal)
        np.testing.assert_allclose(kf.read("scores"), plain, atol=1e-6)


def test_hnsw_backend_and_index_reuse(files, cli):
    from knntools.search import make_index

    d, train, test, _ = files
    s_exact = cli.json("dknn", train, test, "-k", "10", "--calibration", "40", "-o", d / "ex.h5")
    s_hnsw = cli.json("dknn", train, test, "-k", "10", "--calibration", "40", "--backend", "hnsw", "-o", d / "hn.h5", "--num-threads", "1")
    with KFile(d / "ex.h5") as a, KFile(d / "hn.h5") as b:
        assert (a.read("predictions") == b.read("predictions")).mean() >= 0.99
    with KFile(train) as tr:
        uuid = tr.uuid
        X = tr.read_layer("layer1")
    idx_path = d / "train.layer1.hnsw"
    make_index("hnsw", metric="cosine", num_threads=1).fit(X).save(idx_path, metadata={"source_uuid": uuid, "layer": "layer1"})
    s = cli.json("dknn", train, test, "-k", "10", "--calibration", "40", "--backend", "hnsw", "--index", idx_path, "-o", d / "reuse.h5", "--num-threads", "1")
    assert s["accuracy"] == pytest.approx(s_hnsw["accuracy"], abs=0.02)
    # an index of the wrong metric or another file is refused before any work
    wrong = d / "train.layer1.l2.hnsw"
    make_index("hnsw", metric="l2", num_threads=1).fit(X).save(wrong, metadata={"source_uuid": uuid, "layer": "layer1"})
    code, _, err = cli("dknn", train, test, "--calibration", "40", "-k", "10", "--index", f"layer1={wrong}", "-o", d / "no.h5")
    assert code == 2 and "metric" in err and not (d / "no.h5").exists()
    other = d / "other.hnsw"
    make_index("hnsw", metric="cosine", num_threads=1).fit(X).save(other, metadata={"source_uuid": "someone-else", "layer": "layer1"})
    code, _, err = cli("dknn", train, test, "--calibration", "40", "-k", "10", "--index", other, "-o", d / "no.h5")
    assert code == 2 and "another file" in err
    assert s_exact["accuracy"] > 0.8


def test_bad_input_exit_2_nothing_written(files, tmp_path, cli):
    d, train, test, _ = files
    other_model = write_split(tmp_path / "other.h5", 100, 2, split="test", model="model-1")
    wide = write_split(tmp_path / "wide.h5", 100, 2, split="test", dims=(16, 9))
    classes = write_split(tmp_path / "classes.h5", 100, 2, split="test", classes=["x", "y", "z"])
    out, png = tmp_path / "o.h5", tmp_path / "o.png"
    cases = [
        ((train, other_model), "model_uuid"),
        ((train, wide), "layer 'layer2' has 9 features"),
        ((train, classes), "classes"),
        ((train, test, "--calibration", "160"), ">= the 160 rows"),
        ((train, test, "-k", "301", "--calibration", "10"), "k=301 exceeds the 300 candidate rows"),
        ((train, test, "--calibration-file", other_model), "model_uuid"),
        ((train, test, "--layers", "nope"), "layer 'nope' not found"),
        ((train, test, "--backend", "exact", "--ef", "50"), "--ef"),
        ((train, test, "--calibration-mode", "random"), "random"),
        ((train, d / "missing.h5"), "no such file"),
        ((test, test, "--calibration", "10", "--plot", out), "same path"),
    ]
    for args, needle in cases:
        code, stdout, stderr = cli("dknn", *args, "-o", out, "--plot", png) if "--plot" not in args else cli("dknn", *args, "-o", out)
        assert code == 2, (args, stderr)
        assert needle in stderr, (needle, stderr)
        assert stdout == ""
        assert len(stderr.strip().splitlines()) <= 2
        assert not out.exists() and not png.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    existing = tmp_path / "exists.h5"
    existing.write_bytes(b"x")
    proc = run_cli("dknn", train, test, "-o", existing)  # a real process: exit code and one-line message
    assert proc.returncode == 2 and "exists" in proc.stderr and existing.read_bytes() == b"x"
    assert proc.stderr.startswith("knntools dknn: error:") and proc.stdout == ""
