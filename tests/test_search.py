"""Contract tests of the search layer, parametrised over every registered backend x metric.

The reference is a float64 numpy brute force; ``exact`` must match it, ``hnsw`` must find >= 99 %
of the true neighbours on these small sets and report the true distance of what it returns.
"""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from knntools.errors import InputError, KnnToolsError
from knntools.search import BACKEND_NAMES, DISTANCE_UNITS, METRICS, knn_search, load_index, make_index, read_index_header
from knntools.search.base import header_path, recall_at_k
from knntools.search.registry import BACKENDS, backend_params, default_index_path

BACKEND_METRICS = [(b, m) for b in BACKEND_NAMES for m in METRICS]


def reference_distances(X: np.ndarray, Q: np.ndarray, metric: str) -> np.ndarray:
    """All query-to-base distances in float64, in knntools units."""
    X64, Q64 = X.astype(np.float64), Q.astype(np.float64)
    if metric == "l2":
        return np.sqrt(((Q64[:, None, :] - X64[None, :, :]) ** 2).sum(-1))
    if metric == "cosine":
        xn = X64 / np.linalg.norm(X64, axis=1, keepdims=True)
        qn = Q64 / np.linalg.norm(Q64, axis=1, keepdims=True)
        return 1 - qn @ xn.T
    return -(Q64 @ X64.T)


def reference_knn(X, Q, k, metric, exclude_self=False):
    D = reference_distances(X, X if Q is None else Q, metric)
    if exclude_self:
        np.fill_diagonal(D, np.inf)
    idx = np.argsort(D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, idx, 1), idx, D


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, size=(5, 12))
    X = (centers[rng.integers(0, 5, 400)] + rng.normal(size=(400, 12))).astype(np.float32)
    Q = (centers[rng.integers(0, 5, 60)] + rng.normal(size=(60, 12))).astype(np.float32)
    return X, Q


def check_result(backend, metric, X, Q, k, d, i, exclude_self=False):
    n_q = len(X) if Q is None else len(Q)
    assert d.shape == (n_q, k) and i.shape == (n_q, k)
    assert d.dtype == np.float32 and i.dtype == np.int64
    assert d.flags.c_contiguous and i.flags.c_contiguous
    assert (np.diff(d, axis=1) >= 0).all(), "distances must be ascending"
    assert ((i >= 0) & (i < len(X))).all()
    ref_d, ref_i, D = reference_knn(X, Q, k, metric, exclude_self)
    # units: the distance reported for each returned pair is that pair's true distance
    np.testing.assert_allclose(d, np.take_along_axis(D, i, 1), rtol=1e-4, atol=1e-4)
    if backend == "exact":
        np.testing.assert_array_equal(i, ref_i)
        np.testing.assert_allclose(d, ref_d, rtol=1e-5, atol=1e-5)
    else:
        assert recall_at_k(i, ref_i) >= 0.99


@pytest.mark.parametrize("backend,metric", BACKEND_METRICS)
def test_kneighbors_matches_reference(backend, metric, data):
    X, Q = data
    index = make_index(backend, metric=metric).fit(X)
    assert index.n_samples_ == 400 and index.n_features_ == 12
    d, i = index.kneighbors(Q, 7)
    check_result(backend, metric, X, Q, 7, d, i)


@pytest.mark.parametrize("backend,metric", BACKEND_METRICS)
def test_self_query_excludes_own_row(backend, metric, data):
    X, _ = data
    d, i = make_index(backend, metric=metric).fit(X).kneighbors(None, 5)
    assert not (i == np.arange(len(X))[:, None]).any()
    check_result(backend, metric, X, None, 5, d, i, exclude_self=True)


@pytest.mark.parametrize("backend,metric", BACKEND_METRICS)
def test_self_query_keeps_exact_duplicates(backend, metric):
    """Own row excluded by identity: a duplicate elsewhere is returned, at distance 0 (l2, cosine)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 6)).astype(np.float32) + 3
    X[10] = X[20]
    X[30] = X[31] = X[32]
    d, i = make_index(backend, metric=metric).fit(X).kneighbors(None, 2)
    assert not (i == np.arange(50)[:, None]).any()
    if metric != "ip":  # with ip, a longer vector can beat the duplicate
        assert i[10, 0] == 20 and i[20, 0] == 10
        assert set(i[30]) == {31, 32} and set(i[32]) == {30, 31}
        assert d[10, 0] == pytest.approx(0.0, abs=1e-6) and d[30, 1] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_units_on_hand_made_points(backend):
    X = np.array([[0, 0], [3, 4], [6, 8]], np.float32)
    d, i = make_index(backend, metric="l2").fit(X).kneighbors(np.array([[0, 0]], np.float32), 3)
    np.testing.assert_allclose(d, [[0, 5, 10]], atol=1e-5)  # Euclidean, not squared
    assert i.tolist() == [[0, 1, 2]]

    X = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)
    d, i = make_index(backend, metric="cosine").fit(X).kneighbors(np.array([[2, 0]], np.float32), 3)
    np.testing.assert_allclose(d, [[0, 1, 2]], atol=1e-5)  # 1 - cosine similarity
    assert i.tolist() == [[0, 1, 2]]

    X = np.array([[1, 0], [2, 0], [-1, 0]], np.float32)
    d, i = make_index(backend, metric="ip").fit(X).kneighbors(np.array([[1, 0]], np.float32), 3)
    np.testing.assert_allclose(d, [[-2, -1, 1]], atol=1e-5)  # negative inner product, most similar first
    assert i.tolist() == [[1, 0, 2]]


def test_exact_near_duplicates_are_precise():
    """Large offsets make ||q||^2 - 2q.x + ||x||^2 cancel; close pairs are recomputed directly."""
    rng = np.random.default_rng(2)
    X = (1000 + rng.normal(size=(200, 32))).astype(np.float32)
    Q = X[:20] + np.float32(1e-3) * rng.normal(size=(20, 32)).astype(np.float32)
    Q[0] = X[0]
    d, i = make_index("exact").fit(X).kneighbors(Q, 3)
    assert d[0, 0] == 0.0 and i[0, 0] == 0
    ref = reference_distances(X, Q, "l2")
    np.testing.assert_allclose(d, np.take_along_axis(ref, i, 1), rtol=1e-3, atol=1e-6)
    assert (i[:, 0] == np.arange(20)).all()


@pytest.mark.parametrize("metric", METRICS)
def test_exact_chunking_over_queries_and_base(metric, data):
    """Tiny blocks force several query blocks and base blocks with running top-k merges."""
    X, Q = data
    whole = make_index("exact", metric=metric).fit(X)
    chunked = make_index("exact", metric=metric, batch_size=7, base_batch_size=33).fit(X)
    for queries, k in ((Q, 9), (None, 4)):
        d0, i0 = whole.kneighbors(queries, k)
        d1, i1 = chunked.kneighbors(queries, k)
        np.testing.assert_array_equal(i0, i1)
        np.testing.assert_allclose(d0, d1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_fit_from_h5_dataset_and_float16(backend, data, tmp_path):
    X, Q = data
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["x32"] = X
        f["x16"] = X.astype(np.float16)
        f["x3d"] = X.reshape(400, 3, 4)
    with h5py.File(tmp_path / "x.h5", "r") as f:
        params = {"base_batch_size": 64} if backend == "exact" else {}
        d, i = make_index(backend, **params).fit(f["x32"]).kneighbors(Q, 5)
        check_result(backend, "l2", X, Q, 5, d, i)
        d3, i3 = make_index(backend, **params).fit(f["x3d"]).kneighbors(Q.reshape(60, 3, 4), 5)
        np.testing.assert_array_equal(i3, i)
        X16 = X.astype(np.float16).astype(np.float32)
        for source in (f["x16"], X.astype(np.float16)):
            d, i = make_index(backend, **params).fit(source).kneighbors(Q.astype(np.float16), 5)
            check_result(backend, "l2", X16, Q.astype(np.float16).astype(np.float32), 5, d, i)


@pytest.mark.parametrize("backend,metric", BACKEND_METRICS)
def test_save_load_roundtrip(backend, metric, data, tmp_path):
    X, Q = data
    index = make_index(backend, metric=metric).fit(X)
    path = tmp_path / f"train.layer.{backend}"
    index.save(path, metadata={"source_uuid": "u-1", "layer": "fc1"})
    head = read_index_header(path)
    assert head["backend"] == backend and head["metric"] == metric
    assert head["n_samples"] == 400 and head["n_features"] == 12
    assert head["distance_units"] == DISTANCE_UNITS[metric]
    assert head["metadata"] == {"source_uuid": "u-1", "layer": "fc1"}
    assert head["params"] == index.get_params()
    loaded = load_index(path, expected={"source_uuid": "u-1", "layer": "fc1", "metric": metric})
    assert type(loaded) is type(index) and loaded.metadata["layer"] == "fc1"
    for queries, k in ((Q, 6), (None, 3)):
        d0, i0 = index.kneighbors(queries, k)
        d1, i1 = loaded.kneighbors(queries, k)
        np.testing.assert_array_equal(i0, i1)
        np.testing.assert_allclose(d0, d1, rtol=1e-6)
    with pytest.raises(InputError, match="exists"):
        index.save(path)
    index.save(path, force=True)


def test_load_refuses_other_file_missing_sidecar_and_damage(data, tmp_path):
    X, _ = data
    path = tmp_path / "a.hnsw"
    make_index("hnsw").fit(X).save(path, metadata={"source_uuid": "u-1", "layer": "fc1"})
    with pytest.raises(InputError, match="another file"):
        load_index(path, expected={"source_uuid": "u-2"})
    with pytest.raises(InputError, match="another layer"):
        load_index(path, expected={"layer": "fc2"})
    with open(path, "ab") as f:
        f.write(b"junk")
    with pytest.raises(InputError, match="damaged"):
        load_index(path)
    header_path(path).unlink()
    with pytest.raises(InputError, match="not found"):
        load_index(path)
    with pytest.raises(InputError, match="no such index"):
        load_index(tmp_path / "missing.hnsw")


def test_hnsw_ef_is_stored_per_query_and_raised_to_k(data, tmp_path):
    X, Q = data
    index = make_index("hnsw", ef=37).fit(X)
    index.kneighbors(Q, 5)
    assert index._index.ef == 37
    index.kneighbors(Q, 5, ef=80)  # this call only
    assert index._index.ef == 80 and index.ef == 37
    index.kneighbors(Q, 5)
    assert index._index.ef == 37
    index.kneighbors(Q, 50)  # ef < k: raised to k for this query only
    assert index._index.ef == 50 and index.ef == 37
    index.save(tmp_path / "e.hnsw")
    loaded = load_index(tmp_path / "e.hnsw")
    assert loaded.ef == 37  # hnswlib itself forgets ef on load; the sidecar does not
    loaded.kneighbors(Q, 5)
    assert loaded._index.ef == 37
    default = make_index("hnsw").fit(X)
    assert default.effective_ef(10) == 200 and default.effective_ef(150) == 300
    assert default.effective_ef(10, ef=5) == 10


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_input_errors(backend, data):
    X, Q = data
    index = make_index(backend).fit(X)
    with pytest.raises(InputError, match=r"k=401 exceeds the 400 candidate rows \(400 rows\)"):
        index.kneighbors(Q, 401)
    with pytest.raises(InputError, match=r"k=400 exceeds the 399 candidate rows \(400 rows, each row.s own row excluded\)"):
        index.kneighbors(None, 400)
    with pytest.raises(InputError, match="positive integer"):
        index.kneighbors(Q, 0)
    with pytest.raises(InputError, match="query dimension 11 does not match the index dimension 12"):
        index.kneighbors(Q[:, :11], 3)
    bad = Q.copy()
    bad[4, 2] = np.inf
    with pytest.raises(InputError, match="at row 4"):
        index.kneighbors(bad, 3)
    badX = X.copy()
    badX[17, 0] = np.nan
    with pytest.raises(InputError, match="NaN or Inf.*row 17"):
        make_index(backend).fit(badX)
    with pytest.raises(InputError, match="2-D"):
        make_index(backend).fit(X[0])
    with pytest.raises(InputError, match="empty"):
        make_index(backend).fit(X[:0])
    with pytest.raises(KnnToolsError, match="not fitted"):
        make_index(backend).kneighbors(Q, 3)
    d, i = index.kneighbors(Q[:0], 3)
    assert d.shape == (0, 3) and i.dtype == np.int64


def test_registry_errors():
    with pytest.raises(InputError, match="unknown search backend 'faiss'; expected one of exact, hnsw"):
        make_index("faiss")
    with pytest.raises(InputError, match="unknown metric 'manhattan'"):
        make_index("exact", metric="manhattan")
    with pytest.raises(InputError, match="unknown parameter.*M.*accepted: device"):
        make_index("exact", M=16)
    with pytest.raises(InputError, match="M must be an integer >= 2"):
        make_index("hnsw", M=1)
    with pytest.raises(InputError, match="device"):
        make_index("exact", device="tpu")
    assert tuple(BACKENDS) == BACKEND_NAMES
    assert set(backend_params("hnsw")) == {"M", "ef_construction", "ef", "num_threads", "seed"}


def test_knn_search_and_recall(data):
    X, Q = data
    d, i = knn_search(X, Q, 4)
    ref_d, ref_i, _ = reference_knn(X, Q, 4, "l2")
    np.testing.assert_array_equal(i, ref_i)
    d, i = knn_search(X, None, 4, backend="hnsw", metric="cosine", exclude_self=True, M=8)
    assert not (i == np.arange(len(X))[:, None]).any()
    d2, i2 = knn_search(X, X, 4, exclude_self=True)
    assert i2.shape == (400, 4)
    with pytest.raises(InputError, match="exclude_self"):
        knn_search(X, Q, 4, exclude_self=True)
    with pytest.raises(InputError, match="Q is None"):
        knn_search(X, None, 4)
    assert recall_at_k(np.array([[1, 2], [3, 4]]), np.array([[2, 1], [3, 5]])) == 0.75


def test_exact_restores_torch_threads(data):
    import torch

    X, Q = data
    before = torch.get_num_threads()
    make_index("exact", num_threads=1).fit(X).kneighbors(Q, 3)
    assert torch.get_num_threads() == before


def test_hnsw_build_is_reproducible_single_thread(data):
    X, Q = data
    a = make_index("hnsw", num_threads=1, seed=3, ef=10).fit(X).kneighbors(Q, 5)
    b = make_index("hnsw", num_threads=1, seed=3, ef=10).fit(X).kneighbors(Q, 5)
    np.testing.assert_array_equal(a[1], b[1])


def test_default_index_path():
    assert str(default_index_path("runs/train.h5", "fc2")) == "runs/train.fc2.hnsw"


def test_light_imports():
    """The package and the CLI's search options import no numpy, torch or hnswlib."""
    code = (
        "import sys, json, knntools.search, knntools.cli._search_options;"
        "print(json.dumps([m for m in ('numpy', 'torch', 'hnswlib') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_cli_choices_match_registry():
    import typing

    from knntools.cli import _search_options as so

    assert typing.get_args(so.BackendName) == BACKEND_NAMES
    assert typing.get_args(so.MetricName) == METRICS
    assert so.search_params("hnsw", M=32, ef=None, num_threads=0, seed=1) == {"M": 32, "seed": 1}
    assert so.search_params("exact", num_threads=2, seed=1, device="cpu") == {"device": "cpu", "num_threads": 2}
    with pytest.raises(InputError, match="--M, --ef"):
        so.search_params("exact", M=8, ef=20)


def test_exact_on_closed_h5_file_says_so(data, tmp_path):
    X, Q = data
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["x"] = X
    with h5py.File(tmp_path / "x.h5", "r") as f:
        index = make_index("exact").fit(f["x"])
    with pytest.raises(KnnToolsError, match="closed"):
        index.kneighbors(Q, 3)
