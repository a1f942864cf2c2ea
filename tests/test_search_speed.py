"""The fast paths of exact search return the float32 brute-force neighbours.

Fast paths: the GEMM engine (numpy's BLAS or torch, chosen by measurement; forced here with
``KNNTOOLS_GEMM``), the two-stage tile top-k, and low-precision scoring (``precision="bfloat16"`` /
``"float16"``) with float32 re-rank, certificate and fallback. The reference is a float32 numpy
brute force, ``||q - x||^2`` computed directly; the data are random, so there are no exact ties and
the neighbour *sets* must be identical.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from knntools.errors import InputError
from knntools.search import make_index
from knntools.search.base import drop_own_rows
from knntools.search.exact import gemm_engine, tile_topk

PRECISIONS = ("float32", "bfloat16", "float16")


def float32_brute_force(X: np.ndarray, Q: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Indices of the k nearest rows, computed in float32 without the GEMM expansion."""
    if metric == "l2":
        D = ((Q[:, None, :] - X[None, :, :]) ** 2).sum(-1, dtype=np.float32)
    elif metric == "cosine":
        xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        D = 1 - qn @ xn.T
    else:
        D = -(Q @ X.T)
    return np.argsort(D, axis=1, kind="stable")[:, :k]


def same_sets(a: np.ndarray, b: np.ndarray) -> bool:
    return all(set(x.tolist()) == set(y.tolist()) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    # non-negative, clustered rows like image pixels or ReLU activations, plus Gaussian ones
    centres = rng.random((8, 48)).astype(np.float32)
    X = np.clip(centres[rng.integers(0, 8, 1500)] + 0.15 * rng.standard_normal((1500, 48)), 0, None).astype(np.float32)
    Q = np.clip(centres[rng.integers(0, 8, 120)] + 0.15 * rng.standard_normal((120, 48)), 0, None).astype(np.float32)
    G = rng.standard_normal((1200, 33)).astype(np.float32)
    return X, Q, G


@pytest.mark.parametrize("engine", ["numpy", "torch"])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_fast_paths_match_float32_brute_force(data, monkeypatch, engine, precision, metric):
    X, Q, _ = data
    monkeypatch.setenv("KNNTOOLS_GEMM", engine)
    for k in (1, 10):
        index = make_index("exact", metric=metric, device="cpu", precision=precision, base_batch_size=500).fit(X)
        d, i = index.kneighbors(Q, k)
        assert same_sets(i, float32_brute_force(X, Q, k, metric))
        assert np.all(np.diff(d, axis=1) >= 0)
        if precision != "float32":
            st = index.last_stats_
            assert st["queries"] == len(Q) and st["certified"] + st["fallback"] == len(Q)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_fast_paths_self_query_and_distances(data, precision):
    _, _, G = data
    k = 5
    index = make_index("exact", metric="l2", device="cpu", precision=precision, rerank_factor=2).fit(G)
    d, i = index.kneighbors(None, k)
    ref = float32_brute_force(G, G, k + 1, "l2")
    ref, _ = drop_own_rows(ref, np.zeros(ref.shape), np.arange(len(G)))
    assert same_sets(i, ref)
    assert not (i == np.arange(len(G))[:, None]).any()
    true = np.sqrt(((G[i] - G[:, None, :]) ** 2).sum(-1))
    np.testing.assert_allclose(d, true, rtol=1e-4, atol=1e-5)


def test_low_precision_fallback_keeps_exactness(data):
    """rerank_factor 1 leaves no slack: many certificates fail and the float32 fallback answers."""
    X, Q, _ = data
    index = make_index("exact", precision="bfloat16", rerank_factor=1, device="cpu").fit(X)
    _, i = index.kneighbors(Q, 10)
    assert index.last_stats_["fallback"] > 0
    assert same_sets(i, float32_brute_force(X, Q, 10, "l2"))


def test_low_precision_h5_source(data, tmp_path):
    import h5py

    X, Q, _ = data
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["x"] = X
    with h5py.File(tmp_path / "x.h5", "r") as f:
        _, i = make_index("exact", precision="bfloat16", device="cpu", base_batch_size=400).fit(f["x"]).kneighbors(Q, 7)
    assert same_sets(i, float32_brute_force(X, Q, 7, "l2"))


def test_tile_topk_two_stage_equals_topk():
    import torch

    # 40,001 columns: the two-stage path runs for every k here (k = 75 too), with one tail column
    S = torch.from_numpy(np.random.default_rng(1).standard_normal((37, 40_001)).astype(np.float32))
    for k in (1, 3, 10, 75):
        v, c = tile_topk(torch, S, k)
        ref = torch.topk(S, k, dim=1).values
        assert torch.equal(torch.sort(v, dim=1, descending=True).values, ref)
        assert torch.equal(torch.gather(S, 1, c), v)


def test_gemm_engine_choice(monkeypatch):
    monkeypatch.setenv("KNNTOOLS_GEMM", "numpy")
    assert gemm_engine(785, 1) == "numpy"
    monkeypatch.delenv("KNNTOOLS_GEMM")
    assert gemm_engine(785, 1, flops=1e6) == "torch"  # too small to measure
    assert gemm_engine(100, 1) in ("numpy", "torch")


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_engine_measured_on_first_tile_keeps_results(monkeypatch, metric):
    """Unforced and uncached, a large enough search splits its first tile between numpy and torch
    (four row blocks), records the faster library and returns the float32 brute-force neighbours;
    h5-free in-memory source, several base blocks so later tiles use the recorded engine."""
    from knntools.search import exact

    monkeypatch.delenv("KNNTOOLS_GEMM", raising=False)
    monkeypatch.setattr(exact, "_ENGINE_CACHE", {})
    rng = np.random.default_rng(5)
    X = rng.standard_normal((16_000, 96), dtype=np.float32)
    Q = rng.standard_normal((800, 96), dtype=np.float32)
    index = make_index("exact", metric=metric, device="cpu", base_batch_size=6000).fit(X)
    _, i = index.kneighbors(Q, 9)
    assert list(exact._ENGINE_CACHE.values())[0] in ("numpy", "torch") and len(exact._ENGINE_CACHE) == 1
    assert same_sets(i, float32_brute_force(X, Q, 9, metric))


def test_split_tile_gemm_computes_the_whole_product():
    import torch

    from knntools.search.exact import _split_tile_gemm

    rng = np.random.default_rng(2)
    A = rng.standard_normal((400, 400), dtype=np.float32)  # quarters of 100 rows, 2.4e8 flops each
    B = rng.standard_normal((3000, 400), dtype=np.float32)
    S = np.full((400, 3000), np.nan, np.float32)
    choice = _split_tile_gemm(torch, A, B.T, S, torch.from_numpy(A), torch.from_numpy(B).t(), torch.from_numpy(S))
    assert choice in ("numpy", "torch")
    np.testing.assert_allclose(S, A @ B.T, rtol=1e-4, atol=1e-3)
    small = np.zeros((8, 30), np.float32)  # too small to split: nothing computed, None
    assert _split_tile_gemm(torch, A[:8], B[:30].T, small, torch.from_numpy(A[:8]), torch.from_numpy(B[:30]).t(), torch.from_numpy(small)) is None


def test_precision_errors():
    from knntools.cli._search_options import search_params

    with pytest.raises(InputError, match="precision 'int4' not understood"):
        make_index("exact", precision="int4")
    with pytest.raises(InputError, match="--precision bfloat16: applies to --backend exact only"):
        search_params("hnsw", precision="bfloat16")
    assert search_params("exact", precision="float16", device="cpu") == {"device": "cpu", "precision": "float16"}
    assert "precision" not in search_params("hnsw", precision="float32")


def test_cli_precision_with_hnsw_and_missing_cuda_exit_2(tmp_path):
    """One-line exit-2 errors, before any file is read."""
    import torch

    missing = tmp_path / "nope.h5"
    cases = [["--backend", "hnsw", "--precision", "bfloat16"]]
    if not torch.cuda.is_available():
        cases.append(["--device", "cuda"])
    for extra in cases:
        proc = subprocess.run([sys.executable, "-m", "knntools", "dknn", str(missing), str(missing), "-o", str(tmp_path / "o.h5"), *extra],
                              capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1, proc.stderr
        assert ("--precision" in lines[0]) or ("CUDA is not available" in lines[0])


def test_dknn_calibrate_predict_one_pass_equals_two_calls(data):
    from knntools.methods.dknn import DkNN

    X, Q, _ = data
    y = (X[:, 0] > np.median(X[:, 0])).astype(np.int64)
    layers = {"a": X, "b": X[:, :20]}
    cal = {"a": Q[:40], "b": Q[:40, :20]}
    test = {"a": Q[40:], "b": Q[40:, :20]}
    y_cal = (Q[:40, 0] > np.median(X[:, 0])).astype(np.int64)
    two = DkNN(k=7).fit(layers, y).calibrate(cal, y_cal).predict(test)
    one = DkNN(k=7).fit(layers, y).calibrate_predict(cal, y_cal, test)
    np.testing.assert_array_equal(one.p_values, two.p_values)
    np.testing.assert_array_equal(one.neighbors["a"]["rows"], two.neighbors["a"]["rows"])
