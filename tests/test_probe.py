"""Tests of the probe (knntools.methods.probe, `knntools probe`) against straightforward references."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_blobs_activations, run_cli, run_json
from knntools.errors import InputError
from knntools.methods import probe as pb


def _softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def reference_knn(X, y, Q, k, n_classes, loo=False):
    """Plain k-NN vote: full distance matrix, argsort, count votes (ties → smallest class)."""
    D = ((Q[:, None, :].astype(np.float64) - X[None].astype(np.float64)) ** 2).sum(-1)
    if loo:
        np.fill_diagonal(D, np.inf)
    idx = np.argsort(D, axis=1, kind="stable")[:, :k]
    P = np.zeros((len(Q), n_classes))
    for i, row in enumerate(idx):
        for j in row:
            P[i, y[j]] += 1
    return P / k


def reference_kl(p, q):
    return np.mean([sum(pi * np.log(pi / max(qi, 1e-12)) for pi, qi in zip(pr, qr) if pi > 0) for pr, qr in zip(p, q)])


@pytest.fixture(scope="module")
def data():
    layers, logits, y = make_blobs_activations(n=150, seed=0, noise=2.0)
    tl, tlog, ty = make_blobs_activations(n=60, seed=1, noise=2.0)
    return layers["layer2"], y, _softmax(logits), tl["layer2"], ty, _softmax(tlog)


def test_knn_probe_matches_reference(data):
    X, y, q, Q, qy, qq = data
    rows, info = pb.probe_layer(X, y, q, Q, qq, qy, ["knn"], 3, pb.ProbeConfig(k=30, search_params={"device": "cpu"}))
    by = {(r["classifier"], r["split"]): r for r in rows}
    for split, P, dnn, lab in (("train", reference_knn(X, y, X, 30, 3), q, y), ("test", reference_knn(X, y, Q, 30, 3), qq, qy)):
        r = by[("knn", split)]
        pred = P.argmax(1)
        assert r["accuracy"] == pytest.approx((pred == lab).mean())
        assert r["p_same"] == pytest.approx((pred == dnn.argmax(1)).mean())
        assert r["kl"] == pytest.approx(reference_kl(P, dnn), rel=1e-6)
        cm, cd = pred == lab, dnn.argmax(1) == lab
        assert (r["n_both_correct"], r["n_model_only_correct"], r["n_dnn_only_correct"], r["n_both_wrong"]) == (
            int((cm & cd).sum()), int((cm & ~cd).sum()), int((~cm & cd).sum()), int((~cm & ~cd).sum()))
        d = by[("dnn", split)]
        assert d["p_same"] == 1.0 and d["kl"] == 0.0 and d["accuracy"] == pytest.approx(cd.mean())


def test_knn_train_default_is_plain_knn_loo_is_option(data):
    """Paper: k-NN fitted on the training set and applied to it (the sample among its own k); --loo excludes it."""
    X, y, q, Q, qy, qq = data
    rng = np.random.default_rng(5)
    y_rand = rng.integers(0, 3, len(y))  # random labels: only memorisation can fit them
    rows, _ = pb.probe_layer(X, y_rand, q, None, None, None, ["knn"], 3, pb.ProbeConfig(k=1, search_params={"device": "cpu"}))
    train = {r["classifier"]: r for r in rows}["knn"]
    assert train["accuracy"] == 1.0  # 1-NN with the sample itself memorises perfectly
    rows, _ = pb.probe_layer(X, y_rand, q, None, None, None, ["knn"], 3, pb.ProbeConfig(k=1, loo=True, search_params={"device": "cpu"}))
    loo = {r["classifier"]: r for r in rows}["knn"]
    P = reference_knn(X, y_rand, X, 1, 3, loo=True)
    assert loo["accuracy"] == pytest.approx((P.argmax(1) == y_rand).mean()) and loo["accuracy"] < 0.6


def test_linear_probes_match_sklearn(data):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    X, y, q, Q, qy, qq = data
    probe = pb.LayerProbe(["svm", "lr"], 3, pb.ProbeConfig(random_state=0)).fit(X, y)
    sc = StandardScaler().fit(X)
    lr = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(sc.transform(X), y)
    np.testing.assert_allclose(probe.predict_proba("lr", Q), lr.predict_proba(sc.transform(Q)), rtol=1e-6, atol=1e-9)
    svm = CalibratedClassifierCV(LinearSVC(C=1.0, dual="auto", max_iter=1000, random_state=0), method="sigmoid",
                                 cv=StratifiedKFold(3, shuffle=True, random_state=0), ensemble=False).fit(sc.transform(X), y)
    np.testing.assert_allclose(probe.predict_proba("svm", Q), svm.predict_proba(sc.transform(Q)), rtol=1e-6, atol=1e-9)
    assert not probe.pca_


def test_pca_and_subsample():
    layers, logits, y = make_blobs_activations(n=400, seed=0, dims=(40,), noise=1.0)
    cfg = pb.ProbeConfig(pca_dim=8, fit_samples=120, random_state=1)
    probe = pb.LayerProbe(["lr"], 3, cfg).fit(layers["layer1"], y)
    assert probe.pca_ and len(probe.fit_rows_) == 120
    counts = np.bincount(y[probe.fit_rows_], minlength=3)
    assert abs(counts - 120 * np.bincount(y) / len(y)).max() <= 1  # stratified
    again = pb.LayerProbe(["lr"], 3, cfg).fit(layers["layer1"], y)
    assert (again.fit_rows_ == probe.fit_rows_).all()
    np.testing.assert_allclose(again.predict_proba("lr", layers["layer1"]), probe.predict_proba("lr", layers["layer1"]))


def test_kl_and_parse():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    q = np.array([[0.5, 0.5], [0.25, 0.75]])
    np.testing.assert_allclose(pb.kl_divergence(p, q), [np.log(2), 0.5 * np.log(2) + 0.5 * np.log(0.5 / 0.75)])
    assert pb.parse_classifiers("knn, LR") == ["knn", "lr"]
    with pytest.raises(InputError):
        pb.parse_classifiers("knn,tree")
    assert pb.memorization_step([1, 2, 3], [0.5, 1.0, 1.0]) == 2.0 and pb.memorization_step([1], [0.9]) is None


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_layers_plot(activations_pair, tmp_path):
    from knntools.io.table import read_table

    train, test = activations_pair
    out, png = tmp_path / "probe.h5", tmp_path / "probe.png"
    res = run_json("probe", train, test, "--layers", "all", "--classifiers", "knn,svm,lr", "-o", out, "--plot", png)
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    cols, attrs = read_table(out)
    assert attrs["kind"] == "table" and attrs["method"] == "probe"
    assert len(cols["layer"]) == 3 * 4 * 2 == len(res["rows"])  # 3 layers × (dnn+3) × 2 splits
    import h5py

    with h5py.File(train) as f:
        X, y, q = f["layers/layer1"][()], f["labels"][()], _softmax(f["logits"][()])
    P = reference_knn(X, y, X, 30, 3)  # default --no-loo: the paper's k-NN, each sample among its own neighbours
    assert res["rows"] and attrs["params"]["loo"] is False
    m = (cols["layer"] == "layer1") & (cols["classifier"] == "knn") & (cols["split"] == "train")
    assert cols["accuracy"][m][0] == pytest.approx((P.argmax(1) == y).mean())
    assert cols["kl"][m][0] == pytest.approx(reference_kl(P, q), rel=1e-6)


def test_cli_checkpoints(tmp_path):
    from knntools.io.kinds import write_activations
    from knntools.io.table import read_table

    trains, tests = [], []
    for step, noise in ((100, 3.0), (200, 2.0), (300, 1.0)):  # later checkpoints separate the classes better
        for split, seed, n, lst in (("train", 0, 120, trains), ("test", 1, 60, tests)):
            layers, logits, y = make_blobs_activations(n=n, seed=seed, noise=noise)
            p = tmp_path / f"ckpt_{split}_{step}.h5"
            write_activations(p, layers=layers, logits=logits, labels=y, ids=np.arange(n), classes=["a", "b", "c"],
                              attrs={"model_uuid": "run-0", "split": split})
            lst.append(p)
    out, png = tmp_path / "curves.h5", tmp_path / "curves.png"
    # the shell's expansion of `--checkpoints ckpt_train_*.h5 --test ckpt_test_*.h5`
    res = run_json("probe", "--checkpoints", *trains, "--test", *tests, "--layers", "penultimate", "--classifiers", "knn",
                   "-k", "10", "-o", out, "--plot", png)
    assert res["n_checkpoints"] == 3 and png.exists()
    cols, _ = read_table(out)
    assert sorted(set(cols["step"].tolist())) == [100.0, 200.0, 300.0]
    acc = [cols["accuracy"][(cols["step"] == s) & (cols["classifier"] == "knn") & (cols["split"] == "test")][0] for s in (100, 200, 300)]
    assert acc[2] >= acc[0]
    proc = run_cli("probe", "--checkpoints", *trains, "--test", tests[0], "-o", tmp_path / "x.h5")
    assert proc.returncode == 2 and not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("args,needle", [
    (["--classifiers", "knn,tree"], "tree"),
    (["--layers", "fc9"], "fc9"),
    (["-k", "301"], "candidate rows"),
    (["-k", "41", "--max-train", "40"], "candidate rows"),
    (["-k", "40", "--max-train", "40", "--loo"], "own row excluded"),
])
def test_cli_bad_input(activations_pair, tmp_path, args, needle):
    train, test = activations_pair
    out, png = tmp_path / "bad.h5", tmp_path / "bad.png"
    proc = run_cli("probe", train, test, "-o", out, "--plot", png, *args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and proc.stderr.count("\n") == 1 and proc.stdout == ""
    assert not out.exists() and not png.exists()


def test_cli_mismatched_files(activations_pair, tmp_path):
    from knntools.io.kinds import write_activations

    train, _ = activations_pair
    layers, logits, y = make_blobs_activations(n=50, seed=3, dims=(16, 5))
    other = tmp_path / "other.h5"
    write_activations(other, layers=layers, logits=logits, labels=y, ids=np.arange(50), classes=["a", "b", "c"], attrs={"model_uuid": "model-0"})
    proc = run_cli("probe", train, other, "-o", tmp_path / "bad.h5")
    assert proc.returncode == 2 and "layer2" in proc.stderr and not (tmp_path / "bad.h5").exists()


def test_table_roundtrip(tmp_path):
    from knntools.io.table import read_table, rows_to_columns, write_table

    rows = [{"layer": "a", "acc": 0.5, "n": 3}, {"layer": "b", "acc": 0.25, "n": 4, "extra": True}]
    cols = rows_to_columns(rows)
    write_table(tmp_path / "t.h5", cols, table="test", attrs={"params": {"x": 1}})
    back, attrs = read_table(tmp_path / "t.h5")
    assert list(back) == ["layer", "acc", "n", "extra"] and back["layer"].tolist() == ["a", "b"]
    assert back["acc"].tolist() == [0.5, 0.25] and back["n"].dtype == np.int64
    assert attrs["params"] == {"x": 1} and attrs["n_rows"] == 2 and attrs["kind"] == "table"


def test_cli_trained_rows(activations_pair, tmp_path):
    import torch

    from knntools.models.checkpoint import save_checkpoint

    train, test = activations_pair
    keep = np.arange(0, 300, 3)
    ck = {"format": "knntools-model", "format_version": 1, "arch": "mlp", "arch_kwargs": {}, "input_shape": [16],
          "classes": ["a", "b", "c"], "normalization": {"mean": [], "std": []}, "state_dict": {},
          "provenance": {"model_uuid": "model-0"}, "subset_ids": torch.as_tensor(keep)}
    save_checkpoint(ck, tmp_path / "m.pt")
    res = run_json("probe", train, test, "--classifiers", "knn", "--trained-rows", tmp_path / "m.pt", "-o", tmp_path / "p.h5")
    assert {r["n"] for r in res["rows"] if r["split"] == "train"} == {len(keep)}
    ck["provenance"]["model_uuid"] = "model-9"
    save_checkpoint(ck, tmp_path / "m9.pt")
    proc = run_cli("probe", train, test, "--trained-rows", tmp_path / "m9.pt", "-o", tmp_path / "q.h5")
    assert proc.returncode == 2 and "model_uuid" in proc.stderr and not (tmp_path / "q.h5").exists()


@pytest.mark.parametrize("loo", [False, True])
def test_cli_knn_votes_brute_force_and_timing(activations_pair, tmp_path, loo):
    """The probe's k-NN votes (one exact index per layer, each split searched once) equal a numpy brute force,
    train (--loo / --no-loo) and test; --json carries the per-layer timing table's fields."""
    import h5py

    from knntools.io.table import read_table

    train, test = activations_pair
    out = tmp_path / "p.h5"
    res = run_json("probe", train, test, "--layers", "all", "--classifiers", "knn", "-k", "7",
                   "--loo" if loo else "--no-loo", "-o", out)
    cols, _ = read_table(out)
    with h5py.File(train) as f, h5py.File(test) as g:
        y, q = f["labels"][()], _softmax(f["logits"][()])
        yt, qt = g["labels_clean"][()], _softmax(g["logits"][()])
        for layer in ("layer1", "layer2"):
            X, Q = f[f"layers/{layer}"][()], g[f"layers/{layer}"][()]
            for split, P, target, dnn in (("train", reference_knn(X, y, X, 7, 3, loo=loo), y, q),
                                          ("test", reference_knn(X, y, Q, 7, 3), yt, qt)):
                m = (cols["layer"] == layer) & (cols["classifier"] == "knn") & (cols["split"] == split)
                assert cols["accuracy"][m][0] == pytest.approx((P.argmax(1) == target).mean())
                assert cols["p_same"][m][0] == pytest.approx((P.argmax(1) == dnn.argmax(1)).mean())
                assert cols["kl"][m][0] == pytest.approx(reference_kl(P, dnn), rel=1e-6)
    stages = ("read_s", "knn_train_s", "knn_test_s", "svm_fit_s", "lr_fit_s", "metrics_s")
    t = res["timing_s"]
    assert t["total"] > 0 and all(t[s[:-2]] >= 0 for s in stages)
    assert 0 <= t["setup"] < t["total"]  # loading the search engine, outside the layers' stages
    assert [r["layer"] for r in t["per_layer"]] == res["layers"]
    for r in t["per_layer"]:
        assert set(stages) <= set(r) and r["knn_train_s"] > 0 and r["knn_test_s"] > 0 and r["svm_fit_s"] == 0.0


def test_cli_trained_rows_on_digits_whose_ids_are_not_row_positions(tmp_path):
    """`train --subset` records row positions of the training split; digits' ids are indices into the
    whole bundled set (not 0..n-1), so reading them as ids refused every real digits subset."""
    import torch

    m, tr, te = tmp_path / "m.pt", tmp_path / "tr.h5", tmp_path / "te.h5"
    run_json("train", "--dataset", "digits", "--subset", "300", "--epochs", "1", "-o", m)
    run_json("embed", m, "--split", "train", "-o", tr)
    run_json("embed", m, "--split", "test", "-o", te)
    res = run_json("probe", tr, te, "--classifiers", "knn", "--trained-rows", m, "-o", tmp_path / "p.h5")
    assert {r["n"] for r in res["rows"] if r["split"] == "train"} == {300}
    ck = torch.load(m, weights_only=True)
    assert len(ck["subset_ids"]) == 300 and ck["provenance"]["subset"] == 300
