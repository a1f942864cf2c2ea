"""CLI tests for `knntools distill-knet` (training form, evaluation form, bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import run_json

from knntools.cli import main
from knntools.io.kinds import write_activations

FAST = ["--epochs", "2", "--k-range", "1:21", "--device", "cpu"]


def _run(capsys, *args):
    """Run the CLI in-process (fast); return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture
def trained(activations_pair, tmp_path, capsys):
    train, test = activations_pair
    ckpt = tmp_path / "knet.pt"
    code, out, err = _run(capsys, "distill-knet", train, "--layer", "penultimate", *FAST, "-o", ckpt, "--json")
    assert code == 0, err
    return train, test, ckpt, json.loads(out)


def test_train_then_eval_end_to_end(trained, tmp_path):
    """The evaluation runs as a real subprocess: one JSON object on stdout, exit 0."""
    train, test, ckpt, summary = trained
    assert summary["mode"] == "train" and summary["layer"] == "layer2" and summary["d"] == 8
    assert summary["hidden"] == 1 and summary["k_range"] == [1, 21] and len(summary["losses"]) == 2
    assert summary["memory"]["knn_parameters"] == 300 * 8
    obj = torch.load(ckpt, weights_only=True)
    meta = obj["meta"]
    with h5py.File(train) as f:
        uuid = f.attrs["uuid"]
    assert meta["source_uuid"] == uuid and meta["model_uuid"] == "model-0" and meta["layer"] == "layer2"
    assert meta["d"] == 8 and meta["classes"] == ["a", "b", "c"] and meta["k_max"] == 21 and meta["hidden"] == 1
    assert obj["config"]["k_encoding"] == "k / k_scale" and obj["config"]["k_scale"] == 21.0
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())

    pred = tmp_path / "pred.h5"
    png = tmp_path / "fig3.png"
    res = run_json("distill-knet", ckpt, "--eval", test, "--k-sweep", "1,5,11,21", "-o", pred, "--plot", png, "--device", "cpu")
    assert res["mode"] == "eval" and [r["k"] for r in res["accuracy"]] == [1, 5, 11, 21]
    assert all(r["knn_accuracy"] is not None for r in res["accuracy"])
    assert [r["k"] for r in res["approximation"]] == [1, 5, 11, 21]
    assert res["approximation"][0]["max_knn"] == pytest.approx(1.0)
    assert res["dnn_accuracy"] is not None and res["predict_k"] == 11
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with h5py.File(pred) as f:
        assert f.attrs["kind"] == "predictions" and f.attrs["method"] == "knet"
        assert f["predictions"].shape == (120,) and f["scores"].shape == (120, 3)
        np.testing.assert_allclose(f["scores"][()].sum(1), 1.0, atol=1e-5)
        for k in (1, 5, 11, 21):
            assert f[f"knet_predictions_k{k}"].shape == (120,) and f[f"knn_predictions_k{k}"].shape == (120,)
        np.testing.assert_array_equal(f["predictions"][()], f["knet_predictions_k11"][()])
        assert uuid in json.loads(f.attrs["parents"])
        # the kNN column is plain kNN on the training file's noisy labels
        knn1 = f["knn_predictions_k1"][()]
    from knntools.methods.knet import knn_vote
    from knntools.search import knn_search

    with h5py.File(train) as ftr, h5py.File(test) as fte:
        _, idx = knn_search(ftr["layers/layer2"][()], fte["layers/layer2"][()], 1, device="cpu")
        np.testing.assert_array_equal(knn1, knn_vote(ftr["labels"][()][idx], 1, 3)[1])


def test_fixed_k_and_determinism(activations_pair, tmp_path, capsys):
    train, test = activations_pair
    a, b, c = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"
    for path, seed in ((a, 3), (b, 3), (c, 4)):
        code, out, err = _run(capsys, "distill-knet", train, "-k", "1", "--epochs", "2", "--seed", seed, "--device", "cpu", "-o", path)
        assert code == 0, err
        assert out.strip() == str(path)
    sa, sb, sc = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    meta = torch.load(a, weights_only=True)["meta"]
    assert meta["fixed_k"] == 1 and meta["k_range"] == [1, 1]
    assert torch.load(a, weights_only=True)["config"]["k_scale"] == 101.0  # same scale as a random-k kNet
    code, out, err = _run(capsys, "distill-knet", a, "--eval", test, "--k-sweep", "1,3", "--json", "--device", "cpu")
    assert code == 0, err
    res = json.loads(out)
    assert res["method"] == "fixed kNet" and res["predict_k"] == 1 and res["output"] is None
    assert "fixed kNet trained at k=1 only" in err


def test_include_self_and_no_knn(activations_pair, tmp_path, capsys):
    train, test = activations_pair
    ck = tmp_path / "s.pt"
    code, _, err = _run(capsys, "distill-knet", train, "--include-self", "--epochs", "1", "--k-range", "1:300", "--device", "cpu", "-o", ck)
    assert code == 0, err
    assert torch.load(ck, weights_only=True)["meta"]["include_self"] is True
    code, out, err = _run(capsys, "distill-knet", ck, "--eval", test, "--k-sweep", "1,50", "--no-knn", "--json", "--device", "cpu")
    assert code == 0, err
    res = json.loads(out)
    assert res["train"] is None and res["approximation"] == [] and res["accuracy"][0]["knn_accuracy"] is None


def _nan_copy(src: Path, dst: Path, *, model_uuid="model-0", dims=(16, 8), nan=False):
    with h5py.File(src) as f:
        n = f["labels"].shape[0]
        y = f["labels"][()]
    rng = np.random.default_rng(5)
    layers = {f"layer{i + 1}": rng.normal(size=(n, d)).astype(np.float32) for i, d in enumerate(dims)}
    if nan:
        layers[f"layer{len(dims)}"][7, 1] = np.nan
    write_activations(dst, layers=layers, logits=None, labels=y, ids=np.arange(n), classes=["a", "b", "c"],
                      attrs={"model_uuid": model_uuid})
    return dst


def test_bad_input_exit_2_nothing_written(trained, tmp_path, capsys):
    train, test, ckpt, _ = trained
    before = _files(tmp_path)

    def bad(*args, match):
        code, out, err = _run(capsys, "distill-knet", *args)
        assert code == 2, (code, err)
        assert match in err, err
        assert err.count("\n") == 1 and err.startswith("knntools distill-knet: error:")
        assert out == ""
        assert _files(tmp_path) == before, "nothing may be written on bad input"

    new = tmp_path / "new.pt"
    pred = tmp_path / "p.h5"
    # k range outside [1, n_train - 1]: the one bound of search.base.check_k, naming the file and the value
    bad(train, "--k-range", "1:300", "-o", new, match="train.h5: k range 1:300: k=300 exceeds the 299 candidate rows")
    bad(train, "--k-range", "0:5", "-o", new, match="k range 0:5: expected integers 1 <= low <= high")
    bad(train, "-k", "400", "-o", new, match="fixed k 400: k=400 exceeds the 299 candidate rows")
    # missing layer
    bad(train, "--layer", "fc9", "-o", new, match="layer 'fc9' not found")
    # evaluation options in the training form, missing output
    bad(train, "--eval", test, "-o", new, match="need a kNet checkpoint")
    bad(train, match="-o/--output")
    # NaN activations (training and evaluation)
    nan_train = _nan_copy(train, tmp_path / "nan_train.h5", nan=True)
    before = _files(tmp_path)
    bad(nan_train, "-o", new, match="non-finite")
    nan_test = _nan_copy(test, tmp_path / "nan_test.h5", nan=True)
    before = _files(tmp_path)
    bad(ckpt, "--eval", nan_test, "--no-knn", "--k-sweep", "1,5", "-o", pred, match="non-finite")
    # activations of another model (model_uuid) / another width
    other = _nan_copy(test, tmp_path / "other.h5", model_uuid="model-9")
    wide = _nan_copy(test, tmp_path / "wide.h5", dims=(16, 9))
    before = _files(tmp_path)
    bad(ckpt, "--eval", other, "-o", pred, match="model_uuid model-9 differs")
    bad(ckpt, "--eval", wide, "-o", pred, match="has 9 features")
    # --train file that is not the one kNet was distilled from
    bad(ckpt, "--eval", test, "--train", test, "-o", pred, match="differs from the source_uuid")
    # checkpoint without --eval, bad --k-sweep list, garbage checkpoint, existing output
    bad(ckpt, "-o", pred, match="needs --eval")
    bad(ckpt, "--eval", test, "--k-sweep", "0,3", "-o", pred, match="--k-sweep '0,3': k must be >= 1")
    bad(ckpt, "--eval", test, "--k-sweep", "1,400", "-o", pred, match="kNN over the training rows: k=400 exceeds the 300")
    bad(ckpt, "--eval", test, "--layer", "layer1", "-o", pred, match="was distilled on layer 'layer2'")
    bad(ckpt, "--eval", test, "--select-on", "validation", "--no-knn", match="--select-on validation and --no-knn")
    bad(ckpt, "--eval", test, "--select-on", "validation", "--val-fraction", "1", match="--val-fraction 1.0")
    bad(train, "--select-on", "validation", "-o", new, match="need a kNet checkpoint")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    before = _files(tmp_path)
    bad(junk, "--eval", test, "-o", pred, match="not a knntools checkpoint")
    bad(train, "-o", ckpt, match="output file exists")
    bad(ckpt, "--eval", test, "--M", "8", "-o", pred, match="--backend hnsw")


def test_help_and_hnsw_backend(activations_pair, tmp_path, capsys):
    code, out, _ = _run(capsys, "distill-knet", "--help")
    assert code == 0 and "--k-range" in out and "--eval" in out
    train, _ = activations_pair
    code, out, err = _run(capsys, "distill-knet", train, "--backend", "hnsw", "--epochs", "1", "--k-range", "1:11", "-o", tmp_path / "h.pt", "--json")
    assert code == 0, err
    assert json.loads(out)["backend"] == "hnsw"


def test_reuses_saved_index_and_refuses_stale_one(activations_pair, tmp_path, capsys):
    from knntools.search import make_index

    train, test = activations_pair
    with h5py.File(train) as f:
        X, uuid = f["layers/layer2"][()], str(f.attrs["uuid"])
    good, stale = tmp_path / "train.layer2.hnsw", tmp_path / "stale.hnsw"
    make_index("hnsw", metric="l2", seed=0).fit(X).save(good, metadata={"source_uuid": uuid, "layer": "layer2"})
    make_index("hnsw", metric="l2", seed=0).fit(X).save(stale, metadata={"source_uuid": "another-file", "layer": "layer2"})
    code, out, err = _run(capsys, "distill-knet", train, "--index", good, "--epochs", "1", "--k-range", "1:11", "-o", tmp_path / "i.pt", "--json")
    assert code == 0, err
    code, out, err = _run(capsys, "distill-knet", train, "--index", stale, "--epochs", "1", "--k-range", "1:11", "-o", tmp_path / "j.pt")
    assert code == 2 and "source_uuid" in err and not (tmp_path / "j.pt").exists()


def test_old_flag_spellings_still_work(trained, tmp_path, capsys):
    """--k, --fixed-k and --predict-k are rewritten to --k-sweep / -k with one warning line each."""
    train, test, ckpt, _ = trained
    new = ("--k-sweep", "1,5", "-k", "5")
    old = ("--k", "1,5", "--predict-k", "5")
    results = []
    for flags in (new, old):
        code, out, err = _run(capsys, "distill-knet", ckpt, "--eval", test, *flags, "--json", "--device", "cpu")
        assert code == 0, err
        res = json.loads(out)
        results.append({k: v for k, v in res.items() if not k.endswith("seconds") and not k.endswith("_per_k")})
        if flags is old:
            assert "warning: --k is deprecated, use --k-sweep" in err
            assert "warning: --predict-k is deprecated, use --n-neighbors" in err
    assert results[0] == results[1] and results[0]["predict_k"] == 5
    code, _, err = _run(capsys, "distill-knet", train, "--fixed-k", "3", "--epochs", "1", "--device", "cpu", "-o", tmp_path / "f.pt")
    assert code == 0 and "warning: --fixed-k is deprecated, use --n-neighbors" in err
    assert torch.load(tmp_path / "f.pt", weights_only=True)["meta"]["fixed_k"] == 3


def _relabelled(src: Path, dst: Path, perm: np.ndarray) -> Path:
    """A copy of an activations file whose labels and labels_clean are permuted (same uuid-free content otherwise)."""
    with h5py.File(src) as f:
        layers = {name: f[f"layers/{name}"][()] for name in f["layers"]}
        logits, y, ids = f["logits"][()], f["labels"][()], f["ids"][()]
    write_activations(dst, layers=layers, logits=logits, labels=y[perm], ids=ids, classes=["a", "b", "c"],
                      labels_clean=y[perm], attrs={"dataset": "blobs", "split": "test", "model_uuid": "model-0"})
    return dst


def test_select_k_on_validation_never_reads_test_labels(trained, tmp_path, capsys):
    """Issue 17: --select-on validation picks k on held-out training rows; permuting the test labels leaves it unchanged."""
    train, test, ckpt, _ = trained
    sweep = ("--k-sweep", "1,3,5,11,21")
    code, out, err = _run(capsys, "distill-knet", ckpt, "--eval", test, *sweep, "--json", "--device", "cpu")
    assert code == 0, err
    assert "selection" not in json.loads(out)  # nothing chosen unless asked
    picked = []
    for i, perm in enumerate((np.arange(120), np.random.default_rng(9).permutation(120))):
        ev = test if i == 0 else _relabelled(test, tmp_path / "perm.h5", perm)
        code, out, err = _run(capsys, "distill-knet", ckpt, "--eval", ev, *sweep, "--select-on", "validation",
                              "--val-fraction", "0.2", "--seed", "3", "--json", "--device", "cpu")
        assert code == 0, err
        res = json.loads(out)
        sel = res["selection"]
        assert sel["method"] == "validation" and sel["n_val"] == 60 and sel["n_fit"] == 240 and sel["seed"] == 3
        assert sel["k"] in (1, 3, 5, 11, 21) and [r["k"] for r in sel["validation"]] == [1, 3, 5, 11, 21]
        by_k = {r["k"]: r for r in res["accuracy"]}  # the sweep table still reports test accuracy per k
        assert sel["knet_test_accuracy"] == by_k[sel["k"]]["knet_accuracy"] and res["predict_k"] == sel["k"]
        assert sel["knn_test_accuracy"] == by_k[sel["knn_k"]]["knn_accuracy"]
        assert res["knet_accuracy"] == sel["knet_test_accuracy"]
        picked.append((sel["k"], sel["knn_k"], sel["validation"], [r["knet_accuracy"] for r in res["accuracy"]]))
    assert picked[0][:3] == picked[1][:3]  # same choice and the same validation numbers
    assert picked[0][3] != picked[1][3]  # while the test accuracies did change with the labels
