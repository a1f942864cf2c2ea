"""knntools.methods.dknn (Algorithm 1 of the DkNN report) and knntools.plotting.reliability."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from conftest import make_blobs_activations
from knntools.errors import InputError
from knntools.methods import dknn as dk


# ------------------------------------------------------------------------------------------
# Direct reference computations (loops, straight from Algorithm 1)
# ------------------------------------------------------------------------------------------


def ref_alpha(neigh_labels: list[np.ndarray], C: int) -> np.ndarray:
    n = len(neigh_labels[0])
    out = np.zeros((n, C), dtype=np.int64)
    for i in range(n):
        for j in range(C):
            out[i, j] = sum(sum(1 for lab in omega[i] if lab != j) for omega in neigh_labels)
    return out


def ref_p(alpha: np.ndarray, A: list[int], smoothed: bool) -> np.ndarray:
    p = np.zeros(alpha.shape)
    for i in range(alpha.shape[0]):
        for j in range(alpha.shape[1]):
            ge = sum(1 for a in A if a >= alpha[i, j])
            p[i, j] = (ge + 1) / (len(A) + 1) if smoothed else ge / len(A)
    return p


def ref_knn(X: np.ndarray, Q: np.ndarray, k: int) -> np.ndarray:
    d = ((Q[:, None, :].astype(np.float64) - X[None].astype(np.float64)) ** 2).sum(-1)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def unit(X: np.ndarray) -> np.ndarray:
    return X / np.linalg.norm(X, axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------
# Pure functions
# ------------------------------------------------------------------------------------------


def test_nonconformity_matches_reference():
    rng = np.random.default_rng(0)
    labs = [rng.integers(0, 4, size=(30, k)) for k in (5, 7, 3)]
    alpha = dk.nonconformity(labs, 4)
    assert alpha.dtype == np.int64 and alpha.shape == (30, 4)
    np.testing.assert_array_equal(alpha, ref_alpha(labs, 4))
    # every row: sum over classes of (total - count) = total * (C - 1)
    assert (alpha.sum(1) == 15 * 3).all()
    np.testing.assert_array_equal(dk.nonconformity({"a": labs[0], "b": labs[1], "c": labs[2]}, 4), alpha)
    with pytest.raises(ValueError):
        dk.nonconformity([np.array([[0, 5]])], 4)


@pytest.mark.parametrize("smoothed", [True, False])
def test_p_values_confidence_credibility_match_reference(smoothed):
    rng = np.random.default_rng(1)
    C, k, L = 3, 6, 2
    cal_labs = [rng.integers(0, C, size=(40, k)) for _ in range(L)]
    y_cal = rng.integers(0, C, size=40)
    test_labs = [rng.integers(0, C, size=(25, k)) for _ in range(L)]
    cal_alpha = ref_alpha(cal_labs, C)
    A = [int(cal_alpha[i, y_cal[i]]) for i in range(40)]
    scores = dk.calibration_scores(dk.nonconformity(cal_labs, C), y_cal)
    assert scores.tolist() == sorted(A)
    alpha = ref_alpha(test_labs, C)
    p = dk.p_values(dk.nonconformity(test_labs, C), scores, smoothed=smoothed)
    np.testing.assert_allclose(p, ref_p(alpha, A, smoothed))
    pred, conf, cred = dk.predict_from_p_values(p, alpha)
    for i in range(25):
        assert p[i, pred[i]] == p[i].max()
        assert cred[i] == pytest.approx(p[i].max())
        assert conf[i] == pytest.approx(1 - np.sort(p[i])[-2])
        # ties: the smallest nonconformity among the maximal p wins
        tied = np.flatnonzero(p[i] == p[i].max())
        assert alpha[i, pred[i]] == alpha[i, tied].min()


def test_predict_tie_break_and_single_class():
    p = np.array([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9]])
    a = np.array([[3, 2, 5], [5, 1, 0]])
    pred, conf, cred = dk.predict_from_p_values(p, a)
    assert pred.tolist() == [1, 2]
    np.testing.assert_allclose(conf, [0.5, 0.1])
    np.testing.assert_allclose(cred, [0.5, 0.9])
    assert dk.predict_from_p_values(p)[0].tolist() == [0, 1]  # no alpha: lowest index
    pred, conf, cred = dk.predict_from_p_values(np.array([[0.3]]))
    assert pred.tolist() == [0] and conf.tolist() == [1.0]


def test_calibration_scores_drop_zero_quirk():
    alpha = np.array([[0, 3], [2, 0], [1, 4], [0, 0]])
    y = np.array([0, 1, 0, 1])
    assert dk.calibration_scores(alpha, y).tolist() == [0, 0, 0, 1]
    assert dk.calibration_scores(alpha, y, drop_zero=True).tolist() == [1]
    with pytest.raises(InputError, match="no calibration scores"):
        dk.calibration_scores(np.zeros((3, 2), int), np.zeros(3, int), drop_zero=True)
    # plain p-values with the reference's trimmed set: a test alpha of 0 still gets p = 1
    assert dk.p_values(np.array([[0, 2]]), np.array([1]), smoothed=False).tolist() == [[1.0, 0.0]]


def test_select_calibration_modes():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    assert dk.select_calibration(y, 7).tolist() == list(range(7))
    rows = dk.select_calibration(y, 10, "stratified", random_state=0)
    assert len(rows) == 10 and len(set(rows.tolist())) == 10 and (np.diff(rows) > 0).all()
    assert np.bincount(y[rows], minlength=3).tolist() == [5, 3, 2]
    np.testing.assert_array_equal(rows, dk.select_calibration(y, 10, "stratified", random_state=0))
    assert not np.array_equal(rows, dk.select_calibration(y, 10, "stratified", random_state=1))
    rows = dk.select_calibration(y, 7, "stratified", random_state=0)  # 3.5 / 2.1 / 1.4 -> 4 / 2 / 1
    assert np.bincount(y[rows], minlength=3).tolist() == [4, 2, 1]
    for bad in (0, 101):
        with pytest.raises(InputError):
            dk.select_calibration(y, bad)
    with pytest.raises(InputError):
        dk.select_calibration(y, 5, "random")


def test_search_plan():
    assert dk.search_plan("l2", True, False) == dk.SearchPlan("cosine", False, "cos_to_l2")
    assert dk.search_plan("l2", True, True) == dk.SearchPlan("cosine", False, "cos_to_l2")  # centring: no-op under l2
    assert dk.search_plan("l2", False, True) == dk.SearchPlan("l2", False, "same")
    assert dk.search_plan("cosine", True, True).materialize
    assert dk.search_plan("ip", True, False) == dk.SearchPlan("cosine", False, "cos_to_ip")
    with pytest.raises(InputError):
        dk.search_plan("manhattan", True, False)


# ------------------------------------------------------------------------------------------
# The estimator against a brute-force reference
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs():
    train_layers, _, y_train = make_blobs_activations(n=240, seed=0, noise=1.2)
    test_layers, _, y_test = make_blobs_activations(n=90, seed=1, noise=1.2)
    return train_layers, y_train, test_layers, y_test


def reference_dknn(train_layers, y_train, test_layers, y_test, k, n_cal, normalize, smoothed=True, drop_zero=False):
    names = list(train_layers)
    neigh = {}
    for name in names:
        X, Q = train_layers[name], test_layers[name]
        if normalize:
            X, Q = unit(X), unit(Q)
        neigh[name] = y_train[ref_knn(X, Q, k)]
    alpha = ref_alpha([neigh[n] for n in names], 3)
    A = [int(alpha[i, y_test[i]]) for i in range(n_cal)]
    if drop_zero:
        A = [a for a in A if a != 0]
    p = ref_p(alpha[n_cal:], A, smoothed)
    return p, {n: v[n_cal:] for n, v in neigh.items()}


@pytest.mark.parametrize("normalize,p_value,drop_zero", [(True, "smoothed", False), (False, "plain", True), (True, "plain", False)])
def test_dknn_matches_reference(blobs, normalize, p_value, drop_zero):
    train_layers, y_train, test_layers, y_test = blobs
    k, n_cal = 7, 30
    model = dk.DkNN(k, normalize=normalize, p_value=p_value, drop_zero_calibration=drop_zero, search_params={"device": "cpu"})
    model.fit(train_layers, y_train, n_classes=3)
    model.calibrate({n: v[:n_cal] for n, v in test_layers.items()}, y_test[:n_cal])
    res = model.predict({n: v[n_cal:] for n, v in test_layers.items()})
    p_ref, neigh_ref = reference_dknn(train_layers, y_train, test_layers, y_test, k, n_cal, normalize, p_value == "smoothed", drop_zero)
    for name in train_layers:  # same neighbour label multisets (ties aside, continuous data has none)
        np.testing.assert_array_equal(np.sort(res.neighbors[name]["labels"], 1), np.sort(neigh_ref[name], 1))
    np.testing.assert_allclose(res.p_values, p_ref)
    assert res.predictions.dtype == np.int64 and res.p_values.shape == (60, 3)
    np.testing.assert_allclose(res.credibility, p_ref.max(1))
    assert (res.predictions == y_test[n_cal:]).mean() > 0.8
    assert res.credibility[res.predictions == y_test[n_cal:]].mean() > 0.3


def test_normalized_distances_and_center_equivalences(blobs):
    train_layers, y_train, test_layers, _ = blobs
    X, Q = train_layers["layer1"], test_layers["layer1"][:20]
    # normalise + l2 is searched as cosine on raw rows; distances are those between unit vectors
    m = dk.DkNN(5, normalize=True, search_params={"device": "cpu"}).fit({"h": X}, y_train, n_classes=3)
    d, rows = m.kneighbors_layer("h", Q)
    ref_rows = ref_knn(unit(X), unit(Q), 5)
    np.testing.assert_array_equal(rows, ref_rows)
    ref_d = np.linalg.norm(unit(Q)[:, None] - unit(X)[ref_rows], axis=2)
    np.testing.assert_allclose(d, ref_d, atol=1e-4)
    # centring is a no-op under l2
    mc = dk.DkNN(5, normalize=True, center=True, search_params={"device": "cpu"}).fit({"h": X}, y_train, n_classes=3)
    np.testing.assert_array_equal(mc.kneighbors_layer("h", Q)[1], rows)
    # cosine + centre: materialised transform x/|x| - mean
    mcos = dk.DkNN(5, metric="cosine", normalize=True, center=True, search_params={"device": "cpu"}).fit({"h": X}, y_train, n_classes=3)
    Xt = unit(X)
    c = Xt.mean(0)
    Xt, Qt = unit(Xt - c), unit(unit(Q) - c)
    np.testing.assert_array_equal(mcos.kneighbors_layer("h", Q)[1], ref_knn(Xt, Qt, 5))
    np.testing.assert_allclose(mcos.centers_["h"], c, atol=1e-6)


def test_h5_streaming_equals_in_memory(blobs, tmp_path):
    train_layers, y_train, test_layers, y_test = blobs
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        for n, v in train_layers.items():
            f[n] = v
    with h5py.File(path, "r") as f:
        m1 = dk.DkNN(5, search_params={"device": "cpu", "base_batch_size": 50}).fit({n: f[n] for n in train_layers}, y_train, build=False)
        r1 = m1.kneighbors({n: v[:40] for n, v in test_layers.items()})
        m1.release("layer1")  # rebuilt on demand
        assert "layer1" not in m1.indexes_
        again = m1.kneighbors_layer("layer1", test_layers["layer1"][:40])[1]
    m2 = dk.DkNN(5, search_params={"device": "cpu"}).fit(train_layers, y_train)
    r2 = m2.kneighbors({n: v[:40] for n, v in test_layers.items()})
    for n in train_layers:
        np.testing.assert_array_equal(r1[n]["rows"], r2[n]["rows"])
    np.testing.assert_array_equal(again, r2["layer1"]["rows"])


def test_hnsw_agrees_with_exact(blobs):
    train_layers, y_train, test_layers, y_test = blobs
    preds = {}
    for backend, params in (("exact", {"device": "cpu"}), ("hnsw", {"num_threads": 1, "seed": 0})):
        m = dk.DkNN(10, backend=backend, search_params=params).fit(train_layers, y_train, n_classes=3)
        m.calibrate({n: v[:30] for n, v in test_layers.items()}, y_test[:30])
        preds[backend] = m.predict({n: v[30:] for n, v in test_layers.items()}).predictions
    assert (preds["exact"] == preds["hnsw"]).mean() >= 0.99


def test_prebuilt_index_and_errors(blobs):
    from knntools.search import make_index

    train_layers, y_train, test_layers, y_test = blobs
    X = train_layers["layer1"]
    good = make_index("exact", metric="cosine", device="cpu").fit(X)
    m = dk.DkNN(5, search_params={"device": "cpu"}).fit({"layer1": X}, y_train, indexes={"layer1": good})
    assert m.indexes_["layer1"] is good
    m.release("layer1")  # a prebuilt index is kept
    assert m.indexes_["layer1"] is good
    bad = make_index("exact", metric="l2", device="cpu").fit(X)
    with pytest.raises(InputError, match="metric"):
        dk.DkNN(5).fit({"layer1": X}, y_train, indexes={"layer1": bad})
    with pytest.raises(InputError, match="k=241 exceeds the 240 candidate rows"):
        dk.DkNN(241).fit(train_layers, y_train)
    with pytest.raises(InputError, match="rows"):
        dk.DkNN(5).fit({"layer1": X[:10]}, y_train)
    with pytest.raises(InputError):
        dk.DkNN(0)
    with pytest.raises(InputError):
        dk.DkNN(5, p_value="fancy")
    with pytest.raises(Exception, match="not calibrated"):
        dk.DkNN(5, search_params={"device": "cpu"}).fit({"layer1": X}, y_train).predict({"layer1": X[:3]})


# ------------------------------------------------------------------------------------------
# Reliability diagrams
# ------------------------------------------------------------------------------------------


def test_reliability_bins_and_figure(tmp_path):
    from knntools.plotting.reliability import dknn_panels, reliability_bins, reliability_figure

    s = np.array([0.05, 0.15, 0.12, 0.95, 1.0, 0.55])
    c = np.array([0, 1, 0, 1, 1, 1], bool)
    b = reliability_bins(s, c, n_bins=10)
    assert b.counts.tolist() == [1, 2, 0, 0, 0, 1, 0, 0, 0, 2]
    assert b.accuracy[1] == 0.5 and np.isnan(b.accuracy[2]) and b.accuracy[9] == 1.0
    assert b.mean_score[9] == pytest.approx(0.975)
    ece = (1 * 0.05 + 2 * abs(0.5 - 0.135) + 1 * abs(1 - 0.55) + 2 * abs(1 - 0.975)) / 6
    assert b.ece == pytest.approx(ece)
    fig = reliability_figure(dknn_panels(credibility=s, dknn_correct=c, dnn_confidence=s, dnn_correct=c, label="x"))
    assert len([a for a in fig.axes if a.get_visible()]) == 4  # 2 panels, each with a twin axis
    fig.savefig(tmp_path / "r.png", format="png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
