"""oversample: the model procedure balances classes from predicted vectors, SMOTE/ADASYN wrappers,
downstream evaluation, the CLI and bad input (SMOTE neighbours, checkpoint for another dimension)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from knntools.errors import InputError
from knntools.io.kinds import write_features
from knntools.methods import oversample as ovs
from knntools.methods import seq2knn as s2k

torch.set_num_threads(1)


def _imbalanced(n_major=120, n_minor=20, D=5, seed=0, shift=3.0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0, 1, (n_major, D)), rng.normal(shift, 1, (n_minor, D))]).astype(np.float32)
    y = np.concatenate([np.zeros(n_major, np.int64), np.ones(n_minor, np.int64)])
    return X, y


def test_model_oversample_balances_with_generated_vectors():
    X, y = _imbalanced()

    def generate(rows):  # K = 3 vectors: the row shifted by 0.1, 0.2, 0.3; label by the first coordinate
        V = np.stack([rows + 0.1 * (t + 1) for t in range(3)], 1)
        return V, (V[:, :, 0] > 1.5).astype(np.int64)

    one = ovs.model_oversample(X, y, 2, generate, random_state=0)  # the paper's single pass falls short here
    assert one.counts_after[1] < 120 and np.bincount(one.source[one.synthetic]).max() <= 3
    res = ovs.model_oversample(X, y, 2, generate, max_rounds=None, random_state=0)
    assert res.counts_before.tolist() == [120, 20] and res.counts_after.tolist() == [120, 120]
    assert res.synthetic.sum() == 100 and not res.synthetic[:140].any()
    syn, lab = res.X[res.synthetic], res.y[res.synthetic]
    assert (lab == 1).all() and (syn[:, 0] > 1.5).all()  # labels are the generator's predicted labels
    assert (res.source[res.synthetic] >= 0).all() and (res.source[~res.synthetic] == -1).all()


def test_model_oversample_source_labels_and_rounds():
    X, y = _imbalanced()
    gen = lambda rows: (np.repeat(rows[:, None, :], 5, 1), np.zeros((len(rows), 5), np.int64))  # noqa: E731  K = 5, label 0
    res = ovs.model_oversample(X, y, 2, gen, label_from="source", max_rounds=1, random_state=0)
    assert res.counts_after.tolist() == [120, 120]  # 20 minority samples × 5 = 100 = the deficit
    assert (res.source[res.synthetic] >= 120).all()  # only minority sources
    res = ovs.model_oversample(*_imbalanced(n_minor=10), 2, gen, label_from="source", max_rounds=1, random_state=0)
    assert res.counts_after.tolist() == [120, 60]  # ran out of minority sources
    res = ovs.model_oversample(*_imbalanced(n_minor=10), 2, gen, label_from="source", max_rounds=None, random_state=0)
    assert res.counts_after.tolist() == [120, 120]
    # predicted labels all majority: nothing to add
    res = ovs.model_oversample(X, y, 2, gen, random_state=0)
    assert res.counts_after.tolist() == [120, 20] and not res.synthetic.any()


def test_model_oversample_default_is_one_paper_pass():
    """Paper §4 Oversampling: one pass over the real training samples, K vectors each, kept while
    their class is short of the majority: at most K synthetic rows per real row, synthetic rows
    never generate, no class above the majority (a class with few sources stays short)."""
    rng = np.random.default_rng(0)
    sizes = [137, 40, 10, 8]
    y = np.repeat(np.arange(4), sizes).astype(np.int64)
    X = rng.normal(size=(len(y), 3)).astype(np.float32) + y[:, None]
    K = 5
    calls = []

    def gen(rows):  # every source predicts K vectors of its own class (the most generous case)
        calls.append(len(rows))
        lab = np.rint(rows[:, 0]).clip(0, 3).astype(np.int64)
        return np.repeat(rows[:, None, :], K, 1) + 0.01, np.repeat(lab[:, None], K, 1)

    lab_of = np.rint(X[:, 0]).clip(0, 3).astype(np.int64)
    res = ovs.model_oversample(X, y, 4, gen, random_state=0)
    assert sum(calls) == len(y)  # one pass: every real row is a source exactly once
    per_src = np.bincount(res.source[res.synthetic], minlength=len(y))
    assert per_src.max() <= K and (res.source[res.synthetic] < len(y)).all()
    assert res.counts_after.max() == 137 and (res.counts_after <= 137).all()
    expect = np.minimum(137, np.bincount(y, minlength=4) + K * np.bincount(lab_of, minlength=4))
    assert res.counts_after.tolist() == expect.tolist()
    # the former default (repeat until balanced) is the explicit deviation max_rounds=None
    calls.clear()
    res_all = ovs.model_oversample(X, y, 4, gen, max_rounds=None, random_state=0)
    assert sum(calls) > len(y) and res_all.counts_after.tolist() == [137] * 4
    with pytest.raises(InputError, match="max_rounds"):
        ovs.model_oversample(X, y, 4, gen, max_rounds=0)


@pytest.mark.parametrize("method", ["smote", "adasyn"])
def test_imblearn_oversample(method):
    X, y = _imbalanced(shift=0.7)  # overlapping classes: ADASYN needs majority rows near the minority
    res = ovs.imblearn_oversample(X, y, 2, method, random_state=0)
    assert res.counts_before.tolist() == [120, 20]
    assert abs(int(res.counts_after[1]) - 120) <= 12  # ADASYN balances approximately
    assert res.synthetic.sum() == len(res.y) - 140 and np.array_equal(res.X[:140], X)


def test_smote_too_few_neighbors():
    X, y = _imbalanced(n_minor=4)
    with pytest.raises(InputError, match=r"class 1: k=5 exceeds the 3 candidate rows \(4 rows"):
        ovs.imblearn_oversample(X, y, 2, "smote", k_neighbors=5)
    ovs.check_smote_neighbors(y, 2, 3)  # k = 3 neighbours of 4 samples: the bound is k <= n - 1


def test_oversample_core_matches_the_steps():
    """oversample() = standardise with the rows' own moments, SMOTE, back to the original units."""
    from knntools.methods import seq2knn as s2k

    X, y = _imbalanced()
    res = ovs.oversample(X, y, 2, "smote", n_neighbors=3, random_state=0)
    sc = s2k.Standardizer(*s2k.stream_moments(X))
    ref = ovs.imblearn_oversample(sc(X), y, 2, "smote", k_neighbors=3, random_state=0)
    assert np.array_equal(res.X[:140], X) and np.allclose(res.X[140:], sc.inverse(ref.X[140:]))
    assert np.array_equal(res.y, ref.y) and res.info == {"n_neighbors": 3}
    with pytest.raises(InputError, match="model=CHECKPOINT"):
        ovs.oversample(X, y, 2, "v2vsls")
    with pytest.raises(InputError, match="method='nosuch'"):
        ovs.oversample(X, y, 2, "nosuch")


def test_evaluate_downstream_keys():
    X, y = _imbalanced()
    Xt, yt = _imbalanced(seed=1)
    ev = ovs.evaluate_downstream({"original": (X, y)}, Xt, yt, 2, ["logreg", "knn"])
    assert set(ev["original"]) == {"logreg", "knn"}
    assert ev["original"]["logreg"]["macro_f1"] > 0.8


class _Proc:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_inproc(capsys, *args):
    from knntools.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    cap = capsys.readouterr()
    return _Proc(code, cap.out, cap.err)


@pytest.fixture
def files(tmp_path):
    X, y = _imbalanced()
    Xt, yt = _imbalanced(seed=1)
    write_features(tmp_path / "train.h5", features=X, labels=y, classes=["major", "minor"])
    write_features(tmp_path / "test.h5", features=Xt, labels=yt, classes=["major", "minor"])
    return tmp_path / "train.h5", tmp_path / "test.h5"


def test_cli_model_and_smote(files, tmp_path, capsys):
    train, test = files
    p = run_inproc(capsys, "seq2knn", train, "--model", "v2vsls", "--lam", "1.3", "--alpha", "3", "-k", "3", "--epochs", "2",
                   "-o", tmp_path / "seq.pt", "-q")
    assert p.returncode == 0, p.stderr
    p = run_inproc(capsys, "oversample", train, "--method", "v2vsls", "--model", tmp_path / "seq.pt", "-o", tmp_path / "bal.h5",
                   "--eval", test, "--classifiers", "logreg,knn", "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    n_syn = res["n_synthetic"]  # one pass (default): at most K = 3 per real row, never above the majority
    assert res["max_rounds"] == 1 and 0 < n_syn <= 100 and res["counts_after"] == [120, 20 + n_syn]
    assert set(res["downstream"]) == {"original", "v2vsls"}
    with h5py.File(tmp_path / "bal.h5", "r") as f:
        assert f.attrs["kind"] == "features" and f["features"].shape == (140 + n_syn, 5)
        assert f["synthetic"][()].sum() == n_syn and (f["ids"][()][f["synthetic"][()]] == -1).all()
        assert np.isfinite(f["features"][()]).all()
    p = run_inproc(capsys, "oversample", train, "--method", "v2vsls", "--model", tmp_path / "seq.pt", "-o", tmp_path / "bal0.h5",
                   "--max-rounds", "0", "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["counts_after"] == [120, 120] and res["balanced"] and res["n_synthetic"] == 100
    p = run_inproc(capsys, "oversample", train, "--method", "smote", "-o", tmp_path / "sm.h5", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["counts_after"] == [120, 120]


def test_cli_bad_input(files, tmp_path, capsys):
    train, _ = files
    # SMOTE with a class smaller than its neighbours
    X, y = _imbalanced(n_minor=3)
    small = tmp_path / "small.h5"
    write_features(small, features=X, labels=y, classes=["a", "b"])
    p = run_inproc(capsys, "oversample", small, "--method", "smote", "-o", tmp_path / "o.h5")
    assert p.returncode == 2 and "error: --n-neighbors: " in p.stderr and "class 1: k=5 exceeds" in p.stderr and not (tmp_path / "o.h5").exists()
    # the former --k-neighbors spelling still works, with a deprecation line
    p = run_inproc(capsys, "oversample", small, "--method", "smote", "--k-neighbors", "2", "-o", tmp_path / "o2.h5", "--json")
    assert p.returncode == 0, p.stderr
    assert "--k-neighbors is deprecated, use -k" in p.stderr and json.loads(p.stdout)["n_neighbors"] == 2
    # checkpoint for another feature dimension
    other = tmp_path / "other.h5"
    X6, y6 = _imbalanced(D=6)
    write_features(other, features=X6, labels=y6, classes=["a", "b"])
    p = run_inproc(capsys, "seq2knn", other, "--model", "v2vsls", "-k", "3", "--epochs", "1", "-o", tmp_path / "six.pt", "-q")
    assert p.returncode == 0, p.stderr
    p = run_inproc(capsys, "oversample", train, "--method", "v2vsls", "--model", tmp_path / "six.pt", "-o", tmp_path / "o.h5")
    assert p.returncode == 2 and "6 features" in p.stderr and not (tmp_path / "o.h5").exists()
    # model method without a model; a label-only checkpoint
    p = run_inproc(capsys, "oversample", train, "--method", "v2vsls", "-o", tmp_path / "o.h5")
    assert p.returncode == 2 and "--model" in p.stderr
    p = run_inproc(capsys, "seq2knn", train, "--model", "v2ls", "-k", "3", "--epochs", "1", "-o", tmp_path / "v2ls.pt", "-q")
    p = run_inproc(capsys, "oversample", train, "--method", "v2vsls", "--model", tmp_path / "v2ls.pt", "-o", tmp_path / "o.h5")
    assert p.returncode == 2 and "no feature vectors" in p.stderr
    # non-finite features, labels out of range
    Xn = X6.copy()
    Xn[3, 0] = np.nan
    write_features(tmp_path / "nan.h5", features=Xn, labels=y6, classes=["a", "b"])
    p = run_inproc(capsys, "oversample", tmp_path / "nan.h5", "--method", "smote", "-o", tmp_path / "o.h5")
    assert p.returncode == 2 and "non-finite" in p.stderr
    write_features(tmp_path / "lab.h5", features=X6, labels=y6 + 2, classes=["a", "b"])
    p = run_inproc(capsys, "oversample", tmp_path / "lab.h5", "--method", "smote", "-o", tmp_path / "o.h5")
    assert p.returncode == 2 and "labels" in p.stderr
    assert not (tmp_path / "o.h5").exists() and not list(tmp_path.glob(".*partial"))
