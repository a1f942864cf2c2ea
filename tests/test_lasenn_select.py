"""LaSeNN's (k, w_q) chosen on a held-out split of the training rows, never on the test labels (issue 17),
and the k contract of `knntools lasenn` (-k one value, --k-sweep a list, old `-k 1,2,3` still working)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from conftest import make_blobs_activations, run_cli, run_json
from knntools.errors import InputError
from knntools.methods import lasenn as ls


@pytest.fixture(scope="module")
def data():
    layers, logits, y = make_blobs_activations(n=240, seed=0, noise=1.5)
    tl, tlog, ty = make_blobs_activations(n=90, seed=1, noise=1.5)
    return layers["layer2"], logits, y, tl["layer2"], tlog, ty


def test_validation_split_is_stratified_seeded_and_disjoint(data):
    _, _, y, *_ = data
    idx, val = ls.validation_split(y, 0.25, seed=3)
    assert len(val) == 60 and len(idx) + len(val) == len(y) and not np.intersect1d(idx, val).size
    assert np.abs(np.bincount(y[val]) - np.bincount(y) * 0.25).max() <= 1
    idx2, val2 = ls.validation_split(y, 0.25, seed=3)
    assert np.array_equal(val, val2) and not np.array_equal(val, ls.validation_split(y, 0.25, seed=4)[1])
    for bad in (0.0, 1.0, -0.1, "x"):
        with pytest.raises(InputError):
            ls.validation_split(y, bad)


def test_select_w_q_matches_a_plain_held_out_search(data):
    """The chosen pair is the arg-max of validation accuracy computed by brute force without the held-out rows."""
    X, logits, y, *_ = data
    ks, w_qs = [1, 3, 5], [0.0, 0.5, 0.88, 1.0]
    sel = ls.select_w_q(X, logits, y, ks, w_qs, val_fraction=0.2, val_seed=1, device="cpu")
    idx, val = ls.validation_split(y, 0.2, seed=1)
    C = np.exp(logits - logits.max(1, keepdims=True))
    C /= C.sum(1, keepdims=True)
    d = ((X[val, None, :].astype(np.float64) - X[None, idx, :]) ** 2).sum(-1)
    order = idx[np.argsort(d, 1, kind="stable")]
    table, pairs = [], []
    for k in ks:
        for w in w_qs:
            table.append(((w * C[val] + (1 - w) * C[order[:, :k]].mean(1)).argmax(1) == y[val]).mean())
            pairs.append((k, w))
    top = [p for p, a in zip(pairs, table) if a == max(table)]
    best_k, best_w = min(top, key=lambda p: (abs(p[1] - 0.88), abs(p[0] - 3)))  # ties: nearest the paper's pair
    np.testing.assert_allclose([r["accuracy"] for r in sel.table], table)
    assert (sel.k, sel.w_q, sel.accuracy) == (best_k, best_w, pytest.approx(max(table)))
    assert np.array_equal(sel.val_rows, val) and sel.n_index == len(idx)
    with pytest.raises(InputError):  # k above the rows left in the index: the one bound rule
        ls.select_w_q(X, logits, y, [len(idx) + 1], [0.5], val_fraction=0.2, device="cpu")


def test_selection_never_reads_test_labels(data):
    """Permuting (or dropping) the test labels leaves the chosen (k, w_q) and the predictions unchanged."""
    X, logits, y, Q, qlog, qy = data
    kw = dict(k_sweep=[1, 2, 3, 4, 8], w_q_sweep=list(ls.W_Q_GRID), y_train=y, select_on="validation", val_seed=0, device="cpu")
    a = ls.run_lasenn(X, logits, Q, qlog, y_test=qy, **kw)
    b = ls.run_lasenn(X, logits, Q, qlog, y_test=np.random.default_rng(0).permutation(qy), **kw)
    c = ls.run_lasenn(X, logits, Q, qlog, y_test=None, **kw)
    assert (a.k, a.w_q) == (b.k, b.w_q) == (c.k, c.w_q) == (a.selection.k, a.selection.w_q)
    assert np.array_equal(a.predictions, b.predictions) and np.array_equal(a.predictions, c.predictions)
    chosen = [r for r in a.sweep if r["selected"]]
    assert len(chosen) == 1 and (chosen[0]["k"], chosen[0]["w_q"]) == (a.k, a.w_q)
    assert chosen[0]["accuracy"] == pytest.approx(a.summary["accuracy"])  # the table still reports test accuracy
    # without selection the paper's fixed pair is used
    d = ls.run_lasenn(X, logits, Q, qlog, y_test=qy, device="cpu")
    assert (d.k, d.w_q, d.selection) == (3, 0.88, None)
    with pytest.raises(InputError):
        ls.run_lasenn(X, logits, Q, qlog, select_on="validation", device="cpu")  # no training labels


def test_cli_select_on_validation(activations_pair, tmp_path):
    train, test = activations_pair
    out = tmp_path / "sel.h5"
    res = run_json("lasenn", train, test, "--k-sweep", "1,3,5", "--select-on", "validation", "--val-fraction", "0.2",
                   "--seed", "2", "-o", out)
    sel = res["selection"]
    assert sel["on"] == "validation" and sel["n_val"] == 60 and (res["k"], res["w_q"]) == (sel["k"], sel["w_q"])
    assert len(res["sweep"]) == 3 * len(ls.W_Q_GRID) and sum(r["selected"] for r in res["sweep"]) == 1
    # the same choice with the test labels scrambled
    with h5py.File(test) as f:
        lab = f["labels_clean"][()]
    bad = tmp_path / "test_scrambled.h5"
    import shutil

    shutil.copy(test, bad)
    with h5py.File(bad, "r+") as f:
        f["labels_clean"][...] = np.roll(lab, 7)
        f["labels"][...] = np.roll(lab, 7)
    res2 = run_json("lasenn", train, bad, "--k-sweep", "1,3,5", "--select-on", "validation", "--val-fraction", "0.2",
                    "--seed", "2", "-o", tmp_path / "sel2.h5")
    assert (res2["k"], res2["w_q"]) == (res["k"], res["w_q"])
    with h5py.File(out) as f:
        params, metrics = json.loads(f.attrs["params"]), json.loads(f.attrs["metrics"])
    assert params["select_on"] == "validation" and metrics["selection"]["k"] == res["k"]


def test_cli_k_contract_and_deprecated_list(activations_pair, tmp_path):
    """-k is one int; --k-sweep the list; the old `-k 1,2,3` / `--k 1,8` give the same file with a warning."""
    train, test = activations_pair
    new = run_json("lasenn", train, test, "--k-sweep", "1,2,8", "-k", "1", "-o", tmp_path / "new.h5")
    proc = run_cli("lasenn", train, test, "-k", "1,2,8", "--json", "-o", tmp_path / "old.h5")
    assert proc.returncode == 0, proc.stderr
    assert "-k LIST is deprecated, use --k-sweep LIST" in proc.stderr
    old = json.loads(proc.stdout)
    assert old["k"] == new["k"] == 1 and old["sweep"] == new["sweep"]  # no 3 listed: the first k, as before
    proc = run_cli("lasenn", train, test, "--k", "1,3,8", "--json", "-o", tmp_path / "old2.h5")
    assert proc.returncode == 0 and "--k is deprecated" in proc.stderr and json.loads(proc.stdout)["k"] == 3
    one = run_cli("lasenn", train, test, "-k", "5", "-o", tmp_path / "one.h5")
    assert one.returncode == 0 and "deprecated" not in one.stderr


def test_cli_select_with_hnsw_is_seeded(activations_pair, tmp_path):
    """--seed draws the validation split and seeds hnsw: two runs give the same choice and bytes of predictions."""
    pytest.importorskip("hnswlib")
    train, test = activations_pair
    args = ("lasenn", train, test, "--backend", "hnsw", "--select-on", "validation", "--num-threads", "1", "--seed", "5")
    a = run_json(*args, "-o", tmp_path / "a.h5")
    b = run_json(*args, "-o", tmp_path / "b.h5")
    assert (a["k"], a["w_q"], a["selection"]["n_val"]) == (b["k"], b["w_q"], b["selection"]["n_val"]) == (a["k"], a["w_q"], 30)
    with h5py.File(tmp_path / "a.h5") as f, h5py.File(tmp_path / "b.h5") as g:
        assert np.array_equal(f["predictions"][()], g["predictions"][()])


def test_ties_fall_back_towards_the_paper_pair():
    """When every candidate scores the same on validation, the paper's (k=3, w_q=0.88) is chosen."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    y = np.repeat([0, 1, 2], 20)
    logits = np.eye(3)[y] * 50.0  # a confident, always-right network: every (k, w_q > 0) ties at 100 %
    sel = ls.select_w_q(X, logits, y, [1, 3, 8], [0.52, 0.88, 0.97], val_fraction=0.2, device="cpu")
    assert sel.accuracy == 1.0 and (sel.k, sel.w_q) == (3, 0.88)
