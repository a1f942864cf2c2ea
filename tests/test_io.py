"""The HDF5 format: round trips, validation errors, atomic writes, refusal to overwrite."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from knntools.errors import InputError, SchemaError
from knntools.io import h5
from knntools.io.h5 import KFile, check_same_source, create, write_array
from knntools.io.kinds import write_activations, write_features, write_labels, write_predictions


def _labels_file(path, n=50, C=4, **kw):
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, n)
    return write_labels(path, labels=y, labels_clean=y, ids=np.arange(n), transition_matrix=np.eye(C),
                        noise_matrix=np.eye(C), classes=[f"c{i}" for i in range(C)], attrs={"noise_kind": "uniform"}, seed=3, **kw)


def test_labels_round_trip_and_provenance(tmp_path):
    p = tmp_path / "l.h5"
    uid = _labels_file(p, parents=["parent-uuid"])
    with KFile(p, "labels") as kf:
        assert kf.kind == "labels" and kf.uuid == uid and kf.n_samples == 50
        assert kf.classes == ["c0", "c1", "c2", "c3"]
        assert kf.parents == ["parent-uuid"]
        for key in ("knntools_version", "created", "command", "seed", "format_version"):
            assert key in kf.attrs
        assert kf.attrs["seed"] == 3 and kf.attrs["format_version"] == 1
        assert kf.attrs["created"].endswith("Z")
        assert isinstance(kf.attrs["command"], list)
        y = kf.read_labels()
        assert y.dtype == np.int64 and y.shape == (50,)
        assert kf.read("transition_matrix").shape == (4, 4)
        assert "P(noisy = j | clean = i)" in kf.dataset("transition_matrix").attrs["convention"]


def test_every_file_gets_a_new_uuid(tmp_path):
    a, b = _labels_file(tmp_path / "a.h5"), _labels_file(tmp_path / "b.h5")
    assert a != b


def test_activations_round_trip_layers(tmp_path):
    p = tmp_path / "act.h5"
    rng = np.random.default_rng(1)
    layers = {"conv1": rng.normal(size=(20, 2, 3, 3)).astype(np.float32), "fc": rng.normal(size=(20, 5)).astype(np.float32)}
    write_activations(p, layers=layers, logits=rng.normal(size=(20, 3)), labels=rng.integers(0, 3, 20), ids=np.arange(20),
                      classes=["a", "b", "c"], attrs={"model_uuid": "m1"}, dtype=np.float16)
    with KFile(p, "activations") as kf:
        assert kf.layers == ["conv1", "fc", "logits"]
        assert kf.penultimate == "fc"
        assert kf.resolve_layers("all") == ["conv1", "fc", "logits"]
        assert kf.resolve_layers("penultimate,logits") == ["fc", "logits"]
        assert kf.layer_dim("conv1") == 18
        x = kf.read_layer("conv1")
        assert x.dtype == np.float32 and x.shape == (20, 18)
        np.testing.assert_allclose(x, layers["conv1"].reshape(20, -1), atol=1e-2)
        assert h5.read_attrs(kf.layer("conv1"))["shape"] == [2, 3, 3]
        rows = kf.read_layer("fc", rows=np.array([5, 1, 5]))
        np.testing.assert_allclose(rows, layers["fc"][[5, 1, 5]], atol=1e-2)
        blocks = list(kf.iter_rows("layers/fc", chunk_rows=7))
        assert [s for s, _ in blocks] == [0, 7, 14] and sum(len(b) for _, b in blocks) == 20
        with pytest.raises(InputError, match=r"layer 'nope' not found \(available: conv1, fc, logits"):
            kf.resolve_layers("nope")


def test_features_and_predictions_round_trip(tmp_path):
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    write_features(tmp_path / "f.h5", features=X, labels=[0, 1, 0, 1, 0, 1], classes=["n", "p"], synthetic=[0, 0, 0, 0, 1, 1])
    with KFile(tmp_path / "f.h5", "features") as kf:
        assert kf.layers == ["features"] and kf.penultimate == "features"
        np.testing.assert_array_equal(kf.read_layer("features"), X)
        assert kf.read("synthetic").tolist() == [False] * 4 + [True] * 2
    write_predictions(tmp_path / "p.h5", method="dknn", predictions=[0, 1], scores=[[0.9, 0.1], [0.2, 0.8]], ids=[0, 1],
                      labels=[0, 0], classes=["n", "p"], extras={"credibility": [0.9, 0.8]},
                      neighbors={"fc": {"ids": [[1, 2], [3, 4]]}}, params={"k": 2}, metrics={"accuracy": 0.5})
    with KFile(tmp_path / "p.h5", "predictions") as kf:
        assert kf.attrs["params"] == {"k": 2} and kf.attrs["metrics"]["accuracy"] == 0.5
        assert kf.read("neighbors/fc/ids").shape == (2, 2)


def test_refuses_to_overwrite_without_force(tmp_path):
    p = tmp_path / "l.h5"
    _labels_file(p)
    before = p.read_bytes()
    with pytest.raises(InputError, match="exists; pass force to overwrite"):
        _labels_file(p)
    assert p.read_bytes() == before
    _labels_file(p, force=True)
    assert p.read_bytes() != before


def test_failed_write_leaves_nothing_and_keeps_existing(tmp_path):
    p = tmp_path / "out.h5"
    with pytest.raises(RuntimeError):
        with create(p, "table") as f:
            write_array(f, "x", np.zeros(10))
            raise RuntimeError("boom")
    assert not p.exists()
    assert list(tmp_path.iterdir()) == []
    _labels_file(p)
    before = p.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with create(p, "labels", force=True) as f:
            write_array(f, "labels", np.zeros(3, dtype=np.int64))
            raise KeyboardInterrupt
    assert p.read_bytes() == before
    assert [q.name for q in tmp_path.iterdir()] == ["out.h5"]


def test_missing_output_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        _labels_file(tmp_path / "nope" / "l.h5")


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda f: f.attrs.__setitem__("format", "other"), "not a knntools file"),
        (lambda f: f.attrs.__setitem__("format_version", 99), "newer than this knntools"),
        (lambda f: f.attrs.__setitem__("kind", "weird"), "attribute 'kind'"),
    ],
)
def test_validation_errors(tmp_path, corrupt, match):
    p = tmp_path / "l.h5"
    _labels_file(p)
    with h5py.File(p, "a") as f:
        corrupt(f)
    with pytest.raises(SchemaError, match=match):
        KFile(p)


def test_wrong_kind_names_producer(tmp_path):
    p = tmp_path / "l.h5"
    _labels_file(p)
    with pytest.raises(SchemaError, match="expected 'activations'.*knntools embed"):
        KFile(p, "activations")


def test_axis0_mismatch_detected(tmp_path):
    p = tmp_path / "l.h5"
    _labels_file(p)
    with h5py.File(p, "a") as f:
        del f["ids"]
        ds = f.create_dataset("ids", data=np.arange(7))
        ds.attrs["axis0"] = "samples"
    with pytest.raises(SchemaError, match="disagree on their length"):
        KFile(p)


def test_labels_out_of_range_and_nonfinite(tmp_path):
    p = tmp_path / "l.h5"
    _labels_file(p)
    with h5py.File(p, "a") as f:
        f["labels"][0] = 9
    with KFile(p) as kf, pytest.raises(SchemaError, match=r"expected integers in \[0, 4\)"):
        kf.read_labels()
    q = tmp_path / "a.h5"
    X = np.ones((5, 3), dtype=np.float32)
    X[2, 1] = np.nan
    write_activations(q, layers={"fc": X}, logits=None, labels=np.zeros(5, dtype=int), ids=np.arange(5), classes=["a"])
    with KFile(q) as kf, pytest.raises(InputError, match="non-finite value .* at row 2"):
        kf.read_layer("fc")


def test_not_hdf5_and_missing(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_text("hello")
    with pytest.raises(SchemaError, match="not a readable HDF5 file"):
        KFile(bad)
    with pytest.raises(InputError, match="no such file"):
        KFile(tmp_path / "missing.h5")


def test_check_same_source(tmp_path):
    for name, uuid, d in (("a.h5", "m1", 4), ("b.h5", "m2", 4), ("c.h5", "m1", 5)):
        write_activations(tmp_path / name, layers={"fc": np.zeros((3, d))}, logits=None, labels=np.zeros(3, dtype=int),
                          ids=np.arange(3), classes=["a"], attrs={"model_uuid": uuid})
    a, b, c = (KFile(tmp_path / n) for n in ("a.h5", "b.h5", "c.h5"))
    with pytest.raises(InputError, match="model_uuid"):
        check_same_source(a, b, ["fc"])
    with pytest.raises(InputError, match="has 5 features"):
        check_same_source(a, c, ["fc"])


def test_chunking_is_row_wise():
    assert h5.row_chunks((60000, 784), np.float32)[1:] == (784,)
    rows = h5.row_chunks((60000, 784), np.float32)[0]
    assert rows * 784 * 4 <= h5.CHUNK_BYTES


def test_h5py_only_reader_can_read(tmp_path):
    """The README promises files readable with h5py alone."""
    p = tmp_path / "l.h5"
    _labels_file(p)
    with h5py.File(p, "r") as f:
        assert f.attrs["format"] == "knntools" and f.attrs["kind"] == "labels"
        assert json.loads(f.attrs["classes"]) == ["c0", "c1", "c2", "c3"]
        assert f["labels"].dtype == np.int64
