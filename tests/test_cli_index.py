"""`knntools index`: building, saving, reusing and querying indexes through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_blobs_activations, run_cli
from knntools.cli import app
from knntools.io.h5 import KFile
from knntools.io.kinds import write_activations, write_features
from knntools.io.neighbors import read_neighbors
from knntools.search import load_index, read_index_header

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["index", *map(str, args)])


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def reference_knn(X, Q, k):
    D = np.sqrt(((Q[:, None, :].astype(np.float64) - X[None].astype(np.float64)) ** 2).sum(-1))
    return np.argsort(D, axis=1, kind="stable")[:, :k]


def test_index_all_layers_beside_the_file(activations_pair):
    train, _ = activations_pair
    result = invoke(train, "--layers", "all", "-q")
    assert result.exit_code == 0, result.output
    with KFile(train) as kf:
        layers, uuid = kf.layers, kf.uuid
    assert layers == ["layer1", "layer2", "logits"]
    expected = [train.with_name(f"train.{name}.hnsw") for name in layers]
    assert result.stdout.split() == [str(p) for p in expected]
    for name, path in zip(layers, expected):
        head = read_index_header(path)
        assert head["backend"] == "hnsw" and head["metric"] == "l2"
        assert head["metadata"]["source_uuid"] == uuid and head["metadata"]["layer"] == name
        assert head["params"]["M"] == 16 and head["params"]["ef_construction"] == 200
        assert head["n_samples"] == 300
    # a second run refuses to overwrite, --force replaces
    assert invoke(train, "--layers", "all").exit_code == 2
    assert invoke(train, "--layers", "all", "--force", "-q").exit_code == 0


def test_index_options_are_recorded(activations_pair, tmp_path):
    train, _ = activations_pair
    out = tmp_path / "pen.hnsw"
    result = invoke(train, "--layers", "penultimate", "--metric", "cosine", "--M", "32", "--ef-construction", "100", "--ef", "64", "--seed", "3", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["indexes"] == [str(out)] and summary["layers"]["layer2"]["index"] == str(out)
    index = load_index(out)
    assert index.metric == "cosine" and (index.M, index.ef_construction, index.ef, index.seed) == (32, 100, 64, 3)
    assert index.metadata["layer"] == "layer2"


def test_query_writes_neighbors_file_and_checks_recall(activations_pair, tmp_path):
    train, test = activations_pair
    out = tmp_path / "nbrs.h5"
    proc = run_cli("index", train, "--layers", "penultimate", "--query", test, "-k", "10", "-o", out, "--check-recall", "50", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["output"] == str(out) and summary["k"] == 10 and summary["backend"] == "hnsw"
    assert summary["layers"]["layer2"]["recall_at_k"] >= 0.99
    assert summary["layers"]["layer2"]["recall_queries"] == 50
    assert files_in(tmp_path) == {"train.h5", "test.h5", "nbrs.h5"}  # the index is not saved without --save-index
    with KFile(out, kind="neighbors") as nf, KFile(train) as tf, KFile(test) as qf:
        assert nf.attrs["metric"] == "l2" and nf.attrs["k"] == 10 and nf.attrs["backend"] == "hnsw"
        assert nf.attrs["distance_units"] == "euclidean" and nf.attrs["layers"] == ["layer2"]
        assert nf.parents == [tf.uuid, qf.uuid]
        got = read_neighbors(nf, "layer2")
        assert got["ids"].dtype == np.int64 and got["indices"].dtype == np.int64 and got["distances"].dtype == np.float32
        assert got["indices"].shape == (120, 10)
        np.testing.assert_array_equal(got["ids"], tf.read("ids")[got["indices"]])
        np.testing.assert_array_equal(nf.read("ids"), qf.read("ids"))
        assert (np.diff(got["distances"], axis=1) >= 0).all()


def test_exact_backend_matches_reference_and_features_files(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)).astype(np.float32)
    Q = rng.normal(size=(30, 6)).astype(np.float32)
    write_features(tmp_path / "tr.h5", features=X, labels=np.zeros(200, int), classes=["a"], ids=np.arange(200) + 500)
    write_features(tmp_path / "te.h5", features=Q, labels=np.zeros(30, int), classes=["a"])
    out = tmp_path / "n.h5"
    result = invoke(tmp_path / "tr.h5", "--backend", "exact", "--query", tmp_path / "te.h5", "-k", "5", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    with KFile(out) as nf:
        got = read_neighbors(nf, "features")
        assert nf.attrs["backend"] == "exact"
    np.testing.assert_array_equal(got["indices"], reference_knn(X, Q, 5))
    np.testing.assert_array_equal(got["ids"], got["indices"] + 500)


def test_reuse_saved_index(activations_pair, tmp_path):
    train, test = activations_pair
    assert invoke(train, "--layers", "layer1", "--ef", "50", "-q").exit_code == 0
    index = train.with_name("train.layer1.hnsw")
    out = tmp_path / "n.h5"
    result = invoke(train, "--layers", "layer1", "--index", index, "--query", test, "-k", "7", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["layers"]["layer1"]["index"] == str(index) and summary["params"]["ef"] == 50
    assert summary["layers"]["layer1"]["ef"] == 50


def test_query_with_data_itself_excludes_own_rows(activations_pair, tmp_path):
    train, _ = activations_pair
    out = tmp_path / "self.h5"
    result = invoke(train, "--layers", "layer2", "--query", train, "-k", "5", "-o", out, "--check-recall", "40", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["layers"]["layer2"]["recall_at_k"] >= 0.99
    with KFile(out) as nf:
        got = read_neighbors(nf, "layer2")
        assert nf.attrs["exclude_self"] is True or nf.attrs["exclude_self"] == 1
    assert got["indices"].shape == (300, 5)
    assert not (got["indices"] == np.arange(300)[:, None]).any()
    assert invoke(train, "--layers", "layer2", "--query", train, "-k", "300", "-o", tmp_path / "x.h5").exit_code == 2


def test_save_index_with_query(activations_pair, tmp_path):
    train, test = activations_pair
    result = invoke(train, "--layers", "layer1,layer2", "--query", test, "-o", tmp_path / "n.h5", "--save-index", "-q")
    assert result.exit_code == 0, result.output
    assert {"train.layer1.hnsw", "train.layer1.hnsw.json", "train.layer2.hnsw.json", "n.h5"} <= files_in(tmp_path)


@pytest.fixture
def bad_files(activations_pair, tmp_path):
    """Extra files for the bad-input cases: another file's index, a narrower layer, NaN rows."""
    train, test = activations_pair
    assert invoke(train, "--layers", "layer2", "-q").exit_code == 0
    layers, logits, y = make_blobs_activations(n=40, dims=(16, 5), seed=3)
    write_activations(tmp_path / "narrow.h5", layers=layers, logits=logits, labels=y, ids=np.arange(40), classes=["a", "b", "c"])
    layers["layer1"][7, 3] = np.nan
    layers["layer2"] = layers["layer2"][:, :5]
    write_activations(tmp_path / "nan.h5", layers=layers, logits=logits, labels=y, ids=np.arange(40), classes=["a", "b", "c"])
    return tmp_path


@pytest.mark.parametrize(
    "args, message",
    [
        (["TRAIN", "--layers", "fc9"], r"layer 'fc9' not found \(available: layer1, layer2, logits"),
        (["TRAIN", "--layers", "layer2", "--query", "TEST", "-k", "301", "-o", "OUT"], r"k=301 exceeds the 300 candidate rows"),
        (["TRAIN", "--layers", "layer2", "--query", "NARROW", "-o", "OUT"], r"layer 'layer2' has 5 features but .* has 8"),
        (["NAN", "--layers", "layer1"], r"layers/layer1: non-finite value \(NaN or Inf\) at row 7"),
        (["TRAIN", "--layers", "layer1", "--query", "NAN", "-o", "OUT"], r"non-finite value .* at row 7"),
        (["NARROW", "--layers", "layer2", "--index", "INDEX", "--query", "NARROW", "-o", "OUT"], r"built from another file"),
        (["TRAIN", "--layers", "layer1", "--index", "INDEX", "--query", "TEST", "-o", "OUT"], r"indexes another layer"),
        (["TRAIN", "--layers", "layer2", "--index", "INDEX", "--metric", "ip", "--query", "TEST", "-o", "OUT"], r"index metric is 'l2'"),
        (["TRAIN", "--layers", "layer2", "--index", "INDEX"], r"nothing to do without --query"),
        (["TRAIN", "--layers", "all", "-o", "OUT"], r"-o: names one index file"),
        (["TRAIN", "--backend", "exact"], r"exact search has no index to save"),
        (["TRAIN", "--backend", "exact", "--M", "8", "--query", "TEST", "-o", "OUT"], r"--M: hnsw option"),
        (["TRAIN", "--backend", "exact", "--check-recall", "5", "--query", "TEST", "-o", "OUT"], r"--check-recall"),
        (["TRAIN", "--query", "TEST"], r"expected -o/--output"),
        (["TRAIN", "--backend", "exact", "--query", "TEST", "-o", "OUT", "--save-index"], r"--save-index: the exact backend"),
        (["TRAIN", "--layers", "layer2"], r"train.layer2.hnsw: output file exists"),
        (["MISSING"], r"no such file"),
    ],
)
def test_bad_input_exit_2_one_line_nothing_written(bad_files, activations_pair, args, message):
    train, test = activations_pair
    folder = bad_files
    subst = {"TRAIN": train, "TEST": test, "NARROW": folder / "narrow.h5", "NAN": folder / "nan.h5",
             "INDEX": folder / "train.layer2.hnsw", "OUT": folder / "out.h5", "MISSING": folder / "missing.h5"}
    before = files_in(folder)
    result = invoke(*[subst.get(a, a) for a in args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("knntools index: error: "), result.stderr
    assert re.search(message, errors[0]), errors[0]
    assert result.stdout == ""
    assert files_in(folder) == before, "nothing may be written on bad input"


def test_nan_in_a_later_layer_writes_no_index(tmp_path):
    """All layers' indexes are committed together: a bad layer leaves no index of the good ones."""
    layers, logits, y = make_blobs_activations(n=40, seed=3)
    layers["layer2"][5, 0] = np.inf
    write_activations(tmp_path / "t.h5", layers=layers, logits=logits, labels=y, ids=np.arange(40), classes=["a", "b", "c"])
    result = invoke(tmp_path / "t.h5", "--layers", "all")
    assert result.exit_code == 2 and "row 5" in result.stderr
    assert files_in(tmp_path) == {"t.h5"}


def test_help_lists_examples():
    result = runner.invoke(app, ["index", "--help"])
    assert result.exit_code == 0
    assert "--check-recall" in result.stdout and "knntools index train.h5 --layers all" in result.stdout
