"""Tests of LaSeNN (knntools.methods.lasenn, `knntools lasenn`) against a straightforward reference."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from conftest import make_blobs_activations, run_cli, run_json
from knntools.errors import InputError
from knntools.methods import lasenn as ls


def _softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def reference_lasenn(X, logits_tr, Q, logits_q, k, w_q, metric="l2", Qf=None):
    """Algorithm 1 written out plainly: loop over queries, brute-force distances, average outputs."""
    C_tr = _softmax(logits_tr)
    C_q = _softmax(logits_q)
    out = np.empty_like(C_q)
    nn = []
    for i, q in enumerate(Q):
        def dist(v):
            if metric == "l2":
                return ((X.astype(np.float64) - v) ** 2).sum(1)  # squared L2, as in the paper
            Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
            return 1.0 - Xn @ (v / np.linalg.norm(v))
        d = dist(q.astype(np.float64))
        if Qf is not None:
            d = np.minimum(d, dist(Qf[i].astype(np.float64)))  # union of both lists, closest kept
        idx = np.argsort(d, kind="stable")[:k]
        nn.append(idx)
        out[i] = w_q * C_q[i] + (1 - w_q) * C_tr[idx].mean(0)
    return out, np.array(nn)


@pytest.fixture(scope="module")
def data():
    layers, logits, y = make_blobs_activations(n=200, seed=0, noise=1.5)
    tl, tlog, ty = make_blobs_activations(n=60, seed=1, noise=1.5)
    return layers["layer2"], logits, y, tl["layer2"], tlog, ty


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("k,w_q", [(3, 0.88), (1, 0.5), (8, 0.0), (5, 1.0)])
def test_library_matches_reference(data, metric, k, w_q):
    X, logits, y, Q, qlog, qy = data
    ref, ref_nn = reference_lasenn(X, logits, Q, qlog, k, w_q, metric)
    m = ls.LaSeNN(k=k, w_q=w_q, metric=metric, device="cpu").fit(X, logits)
    scores = m.predict_scores(Q, qlog)
    np.testing.assert_allclose(scores, ref, rtol=1e-6, atol=1e-9)
    _, idx, _ = m.kneighbors(Q)
    assert (np.sort(idx, 1) == np.sort(ref_nn, 1)).mean() > 0.99
    if w_q == 1.0:
        assert (scores.argmax(1) == qlog.argmax(1)).all()


def test_logits_output_and_flipped(data):
    X, logits, y, Q, qlog, qy = data
    rng = np.random.default_rng(5)
    Qf = Q + rng.normal(0, 1.0, Q.shape).astype(np.float32)
    m = ls.LaSeNN(k=3, w_q=0.7, device="cpu").fit(X, logits)
    ref, ref_nn = reference_lasenn(X, logits, Q, qlog, 3, 0.7, "l2", Qf=Qf)
    d, idx, fl = m.kneighbors(Q, Qf)
    assert (np.sort(idx, 1) == np.sort(ref_nn, 1)).all()
    assert (np.diff(d, axis=1) >= 0).all() and fl.any()
    assert all(len(set(r)) == 3 for r in idx)  # no duplicate neighbours after the union
    np.testing.assert_allclose(m.scores_from_neighbors(qlog, idx), ref, rtol=1e-6)
    raw = ls.LaSeNN(k=3, w_q=0.7, output="logits", device="cpu").fit(X, logits).predict_scores(Q, qlog)
    _, nn = reference_lasenn(X, logits, Q, qlog, 3, 0.7)
    np.testing.assert_allclose(raw, 0.7 * qlog + 0.3 * logits[nn].mean(1), rtol=1e-6)


def test_merge_neighbors_dedups():
    d1 = np.array([[0.1, 0.5, 0.9]], np.float32); i1 = np.array([[4, 2, 7]])
    d2 = np.array([[0.2, 0.3, 0.4]], np.float32); i2 = np.array([[2, 9, 4]])
    d, i, f = ls.merge_neighbors(d1, i1, d2, i2, 3)
    assert i.tolist() == [[4, 2, 9]] and np.allclose(d, [[0.1, 0.2, 0.3]]) and f.tolist() == [[False, True, True]]


def test_sweep_and_summary(data):
    X, logits, y, Q, qlog, qy = data
    m = ls.LaSeNN(k=8, device="cpu").fit(X, logits)
    _, idx, _ = m.kneighbors(Q)
    q_out = ls.network_outputs(qlog)
    rows = ls.sweep(q_out, m.train_outputs_, idx, [1, 3, 8], [0.0, 0.88], qy)
    assert [(r["k"], r["w_q"]) for r in rows] == [(1, 0.0), (1, 0.88), (3, 0.0), (3, 0.88), (8, 0.0), (8, 0.88)]
    for r in rows:
        ref, _ = reference_lasenn(X, logits, Q, qlog, r["k"], r["w_q"])
        pred, dnn = ref.argmax(1), qlog.argmax(1)
        assert r["accuracy"] == pytest.approx((pred == qy).mean())
        assert r["accuracy_original"] == pytest.approx((dnn == qy).mean())
        assert r["n_changed"] == int((pred != dnn).sum())
        assert r["n_changed_to_right"] == int(((pred != dnn) & (pred == qy)).sum())
        assert r["n_changed_to_wrong"] == int(((pred != dnn) & (dnn == qy)).sum())


def test_analyze_matches_reference(data):
    from scipy.stats import pearsonr

    X, logits, y, Q, qlog, qy = data
    m = ls.LaSeNN(k=3, w_q=0.5, device="cpu").fit(X, logits)
    _, idx, _ = m.kneighbors(Q)
    pred = m.scores_from_neighbors(qlog, idx).argmax(1)
    avg = ls.euclidean_to_neighbors(Q, X, idx, chunk=7).mean(1)
    ref_avg = np.array([np.mean([np.linalg.norm(Q[i].astype(np.float64) - X[j]) for j in idx[i]]) for i in range(len(Q))])
    np.testing.assert_allclose(avg, ref_avg, rtol=1e-6)
    summ, per = ls.analyze(avg, y[idx], qy, qlog.argmax(1), pred)
    P = np.array([sum(y[j] == qy[i] for j in idx[i]) for i in range(len(Q))])
    assert (per["pureness"] == P).all()
    r, p = pearsonr(P, ref_avg)
    assert summ["corr_p_avg_l2"] == pytest.approx(r, rel=1e-6) and summ["corr_p_value"] == pytest.approx(p, rel=1e-5)
    ok = qlog.argmax(1) == qy
    assert summ["avg_l2_correct"] == pytest.approx(ref_avg[ok].mean())
    assert summ["same_pred"] == pytest.approx((pred == qlog.argmax(1)).mean())


def test_bad_parameters():
    X = np.zeros((5, 2), np.float32)
    with pytest.raises(InputError):
        ls.LaSeNN(w_q=1.5)
    with pytest.raises(InputError):
        ls.LaSeNN(k=6).fit(X, np.zeros((5, 3)))  # k <= n_train (search.base.check_k)
    ls.LaSeNN(k=5).fit(X, np.zeros((5, 3)))
    with pytest.raises(InputError):
        ls.LaSeNN(output="probits")


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_matches_reference(activations_pair, tmp_path):
    train, test = activations_pair
    out = tmp_path / "lasenn.h5"
    res = run_json("lasenn", train, test, "--layer", "penultimate", "-k", "3", "--w-q", "0.6", "--analyze", "-o", out)
    with h5py.File(train) as f:
        X, logits, ytr, ids_tr = f["layers/layer2"][()], f["logits"][()], f["labels"][()], f["ids"][()]
    with h5py.File(test) as f:
        Q, qlog, qy = f["layers/layer2"][()], f["logits"][()], f["labels_clean"][()]
    ref, nn = reference_lasenn(X, logits, Q, qlog, 3, 0.6)
    pred, dnn = ref.argmax(1), qlog.argmax(1)
    with h5py.File(out) as f:
        assert f.attrs["kind"] == "predictions" and f.attrs["method"] == "lasenn"
        np.testing.assert_allclose(f["scores"][()], ref, rtol=1e-5, atol=1e-6)
        assert (f["predictions"][()] == pred).all() and (f["dnn_predictions"][()] == dnn).all()
        assert (f["changed"][()] == (pred != dnn)).all()
        assert (np.sort(f["neighbors/layer2/ids"][()], 1) == np.sort(ids_tr[nn], 1)).all()
        assert f["neighbors/layer2/distances"].shape == (len(Q), 3)
        assert (f["pureness"][()] == (ytr[f["neighbors/layer2/rows"][()]] == qy[:, None]).sum(1)).all()
        metrics = json.loads(f.attrs["metrics"])
    assert res["accuracy"] == pytest.approx((pred == qy).mean()) == pytest.approx(metrics["accuracy"])
    assert res["accuracy_original"] == pytest.approx((dnn == qy).mean())
    assert res["delta"] == pytest.approx(res["accuracy"] - res["accuracy_original"])
    assert res["n_changed"] == int((pred != dnn).sum())
    assert set(res["analysis"]) >= {"corr_p_avg_l2", "corr_p_value", "same_pred", "avg_l2_correct", "avg_l2_wrong", "avg_l2_changed"}


def test_cli_sweep_cosine_flipped(activations_pair, tmp_path):
    from knntools.io.kinds import write_activations

    train, test = activations_pair
    with h5py.File(test) as f:
        layers = {n: f[f"layers/{n}"][()] + 0.3 for n in ("layer1", "layer2")}
        flip_path = tmp_path / "test_flip.h5"
        write_activations(flip_path, layers=layers, logits=f["logits"][()], labels=f["labels"][()], ids=f["ids"][()],
                          classes=["a", "b", "c"], attrs={"model_uuid": "model-0", "split": "test"})
    out = tmp_path / "sweep.h5"
    res = run_json("lasenn", train, test, "--metric", "cosine", "--k-sweep", "1,3,8", "--w-q", "0,0.88", "--flipped", flip_path, "-o", out)
    assert res["k"] == 3 and res["w_q"] == 0.88 and res["flipped"] is True
    assert len(res["sweep"]) == 6
    main = [r for r in res["sweep"] if r["k"] == 3 and r["w_q"] == 0.88][0]
    assert main["accuracy"] == pytest.approx(res["accuracy"])
    with h5py.File(out) as f:
        assert "neighbors/layer2/flipped" in f and json.loads(f.attrs["params"])["metric"] == "cosine"


@pytest.mark.parametrize("args,needle", [
    (["--w-q", "1.5"], "--w-q"),
    (["--w-q", "-0.1"], "--w-q"),
    (["-k", "301"], "candidate rows"),
    (["--k-sweep", "1,400"], "candidate rows"),
    (["--k-sweep", "1,x"], "--k-sweep"),
    (["--select-on", "test"], "--select-on"),
    (["--select-on", "validation", "--val-fraction", "1.5"], "--val-fraction"),
    (["--layer", "fc9"], "fc9"),
    (["--network-output", "probits"], "probits"),
])
def test_cli_bad_input(activations_pair, tmp_path, args, needle):
    train, test = activations_pair
    out = tmp_path / "bad.h5"
    proc = run_cli("lasenn", train, test, "-o", out, *args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and proc.stderr.count("\n") == 1
    assert not out.exists() and proc.stdout == ""


def test_cli_mismatched_files(activations_pair, tmp_path):
    from knntools.io.kinds import write_activations

    train, test = activations_pair
    layers, logits, y = make_blobs_activations(n=50, seed=3, dims=(16, 5))
    other = tmp_path / "other.h5"
    write_activations(other, layers=layers, logits=logits, labels=y, ids=np.arange(50), classes=["a", "b", "c"], attrs={"model_uuid": "model-1"})
    out = tmp_path / "bad.h5"
    for args in ([train, other], [train, test, "--flipped", other]):
        proc = run_cli("lasenn", *args, "-o", out)
        assert proc.returncode == 2 and "model_uuid" in proc.stderr and not out.exists()
