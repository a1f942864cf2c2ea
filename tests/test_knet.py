"""Library tests for kNet (knntools.methods.knet): targets, architecture, determinism, checkpoints."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from knntools.errors import InputError
from knntools.methods import knet as kn
from knntools.search import make_index


def _data(n=200, d=12, C=3, seed=0, flip=0.3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(C, d))
    y = rng.integers(0, C, size=n)
    X = (centers[y] + rng.normal(0, 1.0, size=(n, d))).astype(np.float32)
    noisy = y.copy()
    m = rng.random(n) < flip
    noisy[m] = rng.integers(0, C, size=int(m.sum()))
    return X, y.astype(np.int64), noisy.astype(np.int64)


def _direct_targets(X, labels, k, C, include_self=False):
    """Brute force: for every row, the label histogram of its k nearest (other) rows / k."""
    D = ((X[:, None, :].astype(np.float64) - X[None, :, :]) ** 2).sum(-1)
    out = np.zeros((len(X), C))
    for i in range(len(X)):
        order = np.argsort(D[i], kind="stable")
        order = order[order != i]
        nbrs = np.concatenate([[i], order[: k - 1]]) if include_self else order[:k]
        out[i] = np.bincount(labels[nbrs], minlength=C) / k
    return out


@pytest.mark.parametrize("include_self", [False, True])
def test_targets_match_direct_computation(include_self):
    X, _, noisy = _data()
    C, k_max = 3, 25
    index = make_index("exact", metric="l2", device="cpu").fit(X)
    nb = kn.training_neighbors(index, k_max, include_self=include_self)
    assert nb.shape == (len(X), k_max) and nb.dtype == np.int64
    if include_self:
        assert (nb[:, 0] == np.arange(len(X))).all()
    else:
        assert not (nb == np.arange(len(X))[:, None]).any()
    cum = kn.cumulative_votes(kn.neighbor_labels_from_indices(nb, noisy), C)
    assert cum.shape == (len(X), k_max, C) and cum.dtype == np.uint8
    for k in (1, 2, 7, 25):
        want = _direct_targets(X, noisy, k, C, include_self=include_self)
        got = kn.vote_targets(cum, np.arange(len(X)), np.full(len(X), k))
        np.testing.assert_allclose(got, want, atol=1e-6)
        # torch path gives the same
        got_t = kn.vote_targets(torch.from_numpy(cum), torch.arange(len(X)), torch.full((len(X),), k))
        np.testing.assert_allclose(got_t.numpy(), want, atol=1e-6)
    # mixed ks per row
    rows = np.array([0, 5, 9])
    ks = np.array([1, 3, 25])
    got = kn.vote_targets(cum, rows, ks)
    for r, k, g in zip(rows, ks, got):
        np.testing.assert_allclose(g, _direct_targets(X, noisy, int(k), C, include_self)[r], atol=1e-6)


def test_cumulative_votes_wide_dtype():
    nl = np.zeros((2, 300), dtype=np.int64)
    cum = kn.cumulative_votes(nl, 2)
    assert cum.dtype == np.uint16 and cum[0, -1, 0] == 300


def test_knn_vote_and_tie_break():
    nl = np.array([[2, 1, 1, 2], [0, 0, 1, 1]])
    proba, pred = kn.knn_vote(nl, 2, 3)
    np.testing.assert_allclose(proba, [[0, 0.5, 0.5], [1, 0, 0]])
    assert pred.tolist() == [2, 0]  # tie 1 vs 2 at k=2 goes to the nearest neighbour's class
    proba, pred = kn.knn_vote(nl, 4, 3)
    assert pred.tolist() == [2, 0]
    _, pred1 = kn.knn_vote(nl, 1, 3)
    assert pred1.tolist() == [2, 0]


def test_check_k_range():
    assert kn.check_k_range(1, 99, 100) == (1, 99)
    with pytest.raises(InputError, match="<= 99"):
        kn.check_k_range(1, 100, 100)
    assert kn.check_k_range(1, 100, 100, include_self=True) == (1, 100)
    with pytest.raises(InputError):
        kn.check_k_range(0, 5, 100)
    with pytest.raises(InputError):
        kn.check_k_range(6, 5, 100)


@pytest.mark.parametrize("d,C,hidden", [(128, 10, None), (64, 10, None), (12, 3, None), (20, 4, 7)])
def test_architecture_table1(d, C, hidden):
    model = kn.KNet(d, C, hidden=hidden, k_scale=101)
    h = hidden or max(1, math.ceil(d / 16))
    assert model.hidden == h == (hidden or kn.default_hidden(d))
    assert tuple(model.fc1.weight.shape) == (h, d + 1)
    assert tuple(model.bn.weight.shape) == (h,)
    assert tuple(model.fc2.weight.shape) == (C, h)
    assert [type(m).__name__ for m in model.children()] == ["Linear", "ReLU", "BatchNorm1d", "Linear"]
    assert model.n_parameters() == (d + 1) * h + h + 2 * h + h * C + C
    model.eval()
    x = torch.randn(5, d)
    p = model.proba(x, 11)
    assert p.shape == (5, C)
    torch.testing.assert_close(p.sum(1), torch.ones(5))
    # k enters as one feature k / k_scale: per-sample ks give the same as a scalar k
    torch.testing.assert_close(model(x, torch.full((5,), 11)), model(x, 11))


def test_paper_size_for_dknn_cnn_penultimate():
    # 128-d penultimate layer, 10 classes: a little over a thousand parameters (paper: "3K to 5K" for 64-512-d)
    assert kn.KNet(128, 10).n_parameters() == 129 * 8 + 8 + 16 + 8 * 10 + 10


def _fit(X, cum, seed, **kw):
    return kn.fit_knet(X, cum, k_range=(1, 15), epochs=kw.pop("epochs", 3), batch_size=32, seed=seed, **kw)


def test_fit_is_deterministic_and_leaves_global_rng():
    X, _, noisy = _data()
    cum = kn.cumulative_votes(kn.neighbor_labels_from_indices(
        kn.training_neighbors(make_index("exact", device="cpu").fit(X), 15), noisy), 3)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = _fit(X, cum, seed=7)
    after = torch.rand(1)
    assert torch.equal(before, after), "fit_knet must not consume the global torch RNG"
    b = _fit(X, cum, seed=7)
    c = _fit(X, cum, seed=8)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.losses == b.losses and len(a.losses) == 3


def test_fit_learns_and_fixed_k():
    X, y, noisy = _data(n=400, flip=0.3)
    nb = kn.training_neighbors(make_index("exact", device="cpu").fit(X), 15)
    cum = kn.cumulative_votes(kn.neighbor_labels_from_indices(nb, noisy), 3)
    res = kn.fit_knet(X, cum, k_range=(1, 15), epochs=40, batch_size=32, lr=1e-2, seed=0)
    assert res.losses[-1] < res.losses[0]
    acc = kn.accuracy(kn.predict_proba(res.model, X, 11).argmax(1), y)
    assert acc > 0.85, acc
    fixed = kn.fit_knet(X, cum, fixed_k=1, k_range=(1, 15), epochs=5, batch_size=32, seed=0)
    assert fixed.model.k_scale == 15.0 and fixed.params["fixed_k"] == 1 and fixed.params["k_range"] == [1, 1]


def test_fit_bad_input():
    X, _, noisy = _data(n=50)
    cum = kn.cumulative_votes(np.zeros((50, 5), dtype=np.int64), 3)
    with pytest.raises(InputError, match="k range"):
        kn.fit_knet(X, cum, k_range=(1, 6), epochs=1)
    with pytest.raises(InputError):
        kn.fit_knet(X[:10], cum, epochs=1)
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        kn.fit_knet(Xn, cum, k_range=(1, 5), epochs=1)
    with pytest.raises(InputError):
        kn.predict_proba(kn.KNet(4, 3), X, 3)


def test_checkpoint_roundtrip_weights_only():
    model = kn.KNet(12, 3)
    ck = kn.to_checkpoint(model, {"source_uuid": "u", "layer": "fc", "classes": ["a", "b", "c"], "k_range": (1, 101),
                                  "n": np.int64(5), "losses": [0.5]})
    buf = io.BytesIO()
    torch.save(ck, buf)
    buf.seek(0)
    obj = torch.load(buf, weights_only=True)
    assert obj["config"] == {"d": 12, "n_classes": 3, "hidden": 1, "k_scale": 101.0, "k_encoding": kn.K_ENCODING}
    m2, meta = kn.from_checkpoint(obj)
    assert meta["k_range"] == [1, 101] and meta["n"] == 5 and meta["k_encoding"] == kn.K_ENCODING
    x = np.random.default_rng(0).normal(size=(4, 12)).astype(np.float32)
    np.testing.assert_array_equal(kn.predict_proba(model, x, 5), kn.predict_proba(m2, x, 5))
    assert (obj["format"], obj["kind"]) == ("knntools-checkpoint", "knet")
    with pytest.raises(InputError, match="not a knntools checkpoint .*expected a kNet checkpoint"):
        kn.from_checkpoint({"state_dict": {}})
    with pytest.raises(InputError, match="kind: a model checkpoint"):
        kn.from_checkpoint(dict(obj, kind="model"))
    legacy = dict(obj, format="knntools-knet", format_version=1)  # written by earlier releases
    del legacy["kind"]
    assert kn.from_checkpoint(legacy)[1]["k_range"] == [1, 101]
    bad = dict(obj, config=dict(obj["config"], d=13))
    with pytest.raises(InputError, match="does not fit"):
        kn.from_checkpoint(bad)


def test_approximation_stats_and_memory():
    a = np.array([[0.5, 0.5], [1.0, 0.0]])
    b = np.array([[1.0, 0.0], [1.0, 0.0]])
    s = kn.approximation_stats(a, b)
    assert s["mad"] == pytest.approx(0.25) and s["l1"] == pytest.approx(0.5)
    assert s["max_knn"] == pytest.approx(1.0) and s["max_knet"] == pytest.approx(0.75) and s["agreement"] == 1.0
    mem = kn.memory_footprint(kn.KNet(128, 10), 60000, 128)
    assert mem["knn_parameters"] == 60000 * 128 and mem["knet_parameters"] == kn.KNet(128, 10).n_parameters()
