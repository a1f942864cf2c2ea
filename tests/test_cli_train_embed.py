"""CLI tests of `knntools train` and `knntools embed` on the bundled digits set (in-process, fast)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from knntools.io.h5 import KFile  # noqa: E402
from conftest import invoke, ok_json  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A small MLP trained 4 epochs on digits (shared by the tests of this module)."""
    import subprocess
    import sys

    d = tmp_path_factory.mktemp("digits")
    proc = subprocess.run([sys.executable, "-m", "knntools", "train", "--dataset", "digits", "--arch", "mlp", "--arch-kwargs", "hidden=64",
                           "--epochs", "4", "--lr", "3e-3", "--seed", "0", "-o", str(d / "m.pt"), "--json", "--num-threads", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return d / "m.pt", json.loads(proc.stdout)


def test_train_outputs_checkpoint_metrics_and_json(digits_model):
    path, summary = digits_model
    assert summary["test_acc"] > 0.85 and summary["epochs"] == 4 and len(summary["history"]) == 4
    ck = torch.load(path, weights_only=True)
    assert (ck["format"], ck["kind"]) == ("knntools-checkpoint", "model") and ck["arch"] == "mlp" and ck["arch_kwargs"] == {"hidden": 64}
    assert ck["input_shape"] == [1, 8, 8] and len(ck["classes"]) == 10
    assert ck["provenance"]["model_uuid"] == summary["model_uuid"] and ck["provenance"]["dataset"] == "digits"
    assert "train_labels" not in ck  # clean labels
    rows = list(csv.DictReader(open(path.with_name("m.metrics.csv"))))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert abs(float(rows[-1]["test_acc"]) - summary["test_acc"]) < 1e-5


def test_embed_list_layers(capsys, digits_model):
    path, _ = digits_model
    res = ok_json(capsys, "embed", path, "--list-layers")
    assert [r["name"] for r in res["layers"]] == ["fc1", "logits"] and res["penultimate"] == "fc1"
    code, out, err = invoke(capsys, "embed", path, "--list-layers")
    assert code == 0 and "fc1" in err and out.strip() == ""


def test_embed_reproduces_training_accuracy(capsys, tmp_path, digits_model):
    path, summary = digits_model
    res = ok_json(capsys, "embed", path, "--split", "test", "--layers", "all", "-o", tmp_path / "test.h5")
    assert res["accuracy"] == pytest.approx(summary["test_acc"], abs=1e-6)
    with KFile(tmp_path / "test.h5", "activations") as kf:
        assert kf.layers == ["fc1", "logits"] and kf.penultimate == "fc1"
        assert kf.attrs["model_uuid"] == summary["model_uuid"] and kf.attrs["split"] == "test" and kf.attrs["attack"] == "none"
        assert kf.attrs["model_arch"] == "mlp" and kf.attrs["dataset"] == "digits"
        assert summary["model_uuid"] in kf.parents
        logits = kf.read_layer("logits")
        y = kf.read_labels("labels_clean")
        assert np.array_equal(kf.read_labels("labels"), y)
        assert (logits.argmax(1) == y).mean() == pytest.approx(summary["test_acc"], abs=1e-6)
        assert kf.read_layer("fc1").shape == (450, 64) and kf.dataset("layers/fc1").attrs["module"] == "fc1"
        assert np.array_equal(kf.read("ids"), np.sort(kf.read("ids")))


def test_embed_dtype_pool_and_layer_choice(capsys, tmp_path, digits_model):
    path, _ = digits_model
    res = ok_json(capsys, "embed", path, "--split", "test", "--layers", "penultimate", "--dtype", "float16", "-o", tmp_path / "a.h5")
    with KFile(tmp_path / "a.h5") as kf:
        assert kf.dataset("layers/fc1").dtype == np.float16 and kf.attrs["layer_dtype"] == "float16"
    assert res["layers"][0]["name"] == "fc1"
    res = ok_json(capsys, "embed", path, "--split", "test", "--layers", "none", "-o", tmp_path / "b.h5")
    with KFile(tmp_path / "b.h5") as kf:
        assert kf.layers == ["logits"]


def test_embed_attacks_record_params(capsys, tmp_path, digits_model):
    path, _ = digits_model
    clean = ok_json(capsys, "embed", path, "--split", "test", "--layers", "none", "-o", tmp_path / "c.h5")
    f = ok_json(capsys, "embed", path, "--split", "test", "--attack", "fgsm", "--eps", "0.2", "-o", tmp_path / "f.h5")
    p = ok_json(capsys, "embed", path, "--split", "test", "--attack", "pgd", "--eps", "0.2", "--pgd-steps", "3", "--seed", "1", "-o", tmp_path / "p.h5")
    assert f["accuracy"] < clean["accuracy"] and p["accuracy"] <= f["accuracy"] + 0.02
    with KFile(tmp_path / "p.h5") as kf:
        assert kf.attrs["attack"] == "pgd"
        ap = kf.attrs["attack_params"]
        assert ap["eps"] == 0.2 and ap["steps"] == 3 and ap["step_size"] == pytest.approx(2.5 * 0.2 / 3) and ap["norm"] == "linf"
    with KFile(tmp_path / "f.h5") as kf:
        assert kf.attrs["attack"] == "fgsm" and kf.attrs["attack_params"]["input_range"].startswith("[0, 1]")


def test_noisy_labels_flow_into_checkpoint_and_embed(capsys, tmp_path):
    lab = tmp_path / "lab.h5"
    ok_json(capsys, "noise", "--dataset", "digits", "--kind", "uniform", "--rate", "0.4", "--seed", "0", "-o", lab)
    s = ok_json(capsys, "train", "--dataset", "digits", "--labels", lab, "--arch", "mlp", "--arch-kwargs", "hidden=16",
                "--epochs", "1", "--subset", "300", "-o", tmp_path / "n.pt")
    assert s["n_train"] == 300 and s["labels_uuid"]
    ck = torch.load(tmp_path / "n.pt", weights_only=True)
    assert len(ck["subset_ids"]) == 300 and ck["provenance"]["labels_uuid"] == s["labels_uuid"]
    with KFile(lab) as lf:
        noisy, clean = lf.read_labels("labels"), lf.read_labels("labels_clean")
    assert np.array_equal(ck["train_labels"].numpy(), noisy)
    ok_json(capsys, "embed", tmp_path / "n.pt", "--split", "train", "--layers", "none", "-o", tmp_path / "tr.h5")
    with KFile(tmp_path / "tr.h5") as kf:
        assert np.array_equal(kf.read_labels("labels"), noisy) and np.array_equal(kf.read_labels("labels_clean"), clean)
        assert s["labels_uuid"] in kf.parents


def test_checkpoints_every_n_steps_and_resume(capsys, tmp_path):
    common = ["--dataset", "digits", "--arch", "mlp", "--arch-kwargs", "hidden=16", "--seed", "3", "--augment"]
    full = ok_json(capsys, "train", *common, "--epochs", "2", "--checkpoint-every", "7", "--checkpoint-dir", tmp_path / "ck", "-o", tmp_path / "full.pt")
    assert full["steps"] == 22 and [Path(p).name for p in full["checkpoints"]] == ["step-0000007.pt", "step-0000014.pt", "step-0000021.pt"]
    # a step checkpoint is a complete model: embed reads it
    ok_json(capsys, "embed", tmp_path / "ck" / "step-0000014.pt", "--split", "test", "--layers", "none", "-o", tmp_path / "s.h5")
    res = ok_json(capsys, "train", *common, "--epochs", "2", "--resume", tmp_path / "ck" / "step-0000007.pt", "-o", tmp_path / "res.pt")
    assert res["steps"] == 22 and res["test_acc"] == pytest.approx(full["test_acc"], abs=1e-6)
    a, b = torch.load(tmp_path / "full.pt", weights_only=True), torch.load(tmp_path / "res.pt", weights_only=True)
    for k, v in a["state_dict"].items():
        assert torch.allclose(v, b["state_dict"][k], atol=1e-6)
    code, _, err = invoke(capsys, "train", *common, "--epochs", "2", "--resume", tmp_path / "full.pt", "-o", tmp_path / "again.pt")
    assert code == 2 and "already trained" in err and not (tmp_path / "again.pt").exists()


def test_tabular_ffn_and_same_seed_same_weights(capsys, tmp_path):
    r1 = ok_json(capsys, "train", "--dataset", "breast-cancer", "--arch", "ffn", "--arch-kwargs", "hidden=[16,8]", "--epochs", "10", "-o", tmp_path / "a.pt")
    ok_json(capsys, "train", "--dataset", "breast-cancer", "--arch", "ffn", "--arch-kwargs", "hidden=[16,8]", "--epochs", "10", "-o", tmp_path / "b.pt")
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())
    assert r1["test_acc"] > 0.8 and len(a["normalization"]["mean"]) == 30
    res = ok_json(capsys, "embed", tmp_path / "a.pt", "--split", "test", "-o", tmp_path / "e.h5")
    assert [l["name"] for l in res["layers"]] == ["fc1", "fc2"] and res["accuracy"] == pytest.approx(r1["test_acc"], abs=1e-6)
    code, _, err = invoke(capsys, "embed", tmp_path / "a.pt", "--split", "test", "--attack", "fgsm", "--eps", "0.1", "-o", tmp_path / "x.h5")
    assert code == 2 and "tabular" in err and not (tmp_path / "x.h5").exists()


def test_features_file_training(capsys, tmp_path):
    ok_json(capsys, "features", "wine", "-o", tmp_path / "w.h5")
    ok_json(capsys, "features", "wine", "--split", "test", "-o", tmp_path / "wt.h5")
    r = ok_json(capsys, "train", "--dataset", tmp_path / "w.h5", "--test-dataset", tmp_path / "wt.h5", "--arch", "ffn", "--epochs", "5", "-o", tmp_path / "w.pt")
    assert r["n_train"] == 133 and r["test_acc"] is not None
    e = ok_json(capsys, "embed", tmp_path / "w.pt", "--dataset", tmp_path / "wt.h5", "--layers", "penultimate", "-o", tmp_path / "we.h5")
    assert e["accuracy"] == pytest.approx(r["test_acc"], abs=1e-6)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_external_models(capsys, tmp_path):
    from knntools.models import registry

    class TS(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f = torch.nn.Linear(64, 10)

        def forward(self, x):
            return self.f(x.flatten(1))

    torch.jit.script(TS()).save(str(tmp_path / "ts.pt"))
    r = ok_json(capsys, "embed", tmp_path / "ts.pt", "--dataset", "digits", "--split", "test", "-o", tmp_path / "ts.h5")
    assert r["layers"] == [] and r["logits"] and r["arch"] == "torchscript"
    tv = registry.build_model("resnet18", (3, 8, 8), 10)
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    r = ok_json(capsys, "embed", "--arch", "resnet18", "--weights", tmp_path / "r18.pth", "--dataset", "digits", "--split", "test",
                "--layers", "layer3,penultimate", "--pool", "avg", "-o", tmp_path / "r.h5")
    assert [l["dim"] for l in r["layers"]] == [256, 512]
    with KFile(tmp_path / "r.h5") as kf:
        assert kf.penultimate == "avgpool" and kf.dataset("layers/layer3").attrs["pooling"] == "avg"


@pytest.mark.parametrize("args, message", [
    (["train", "--arch", "nope", "-o", "{d}/x.pt"], "--arch: architecture 'nope': unknown"),
    (["train", "--device", "cuda:7", "-o", "{d}/x.pt"], "--device"),
    (["train", "--labels", "{d}/test_labels.h5", "-o", "{d}/x.pt"], "450 rows"),
    (["train", "--labels", "{d}/wine_labels.h5", "-o", "{d}/x.pt"], "rows"),
    (["train", "--lr-schedule", "step", "-o", "{d}/x.pt"], "--lr-milestones"),
    (["train", "--checkpoint-dir", "{d}/ck", "-o", "{d}/x.pt"], "--checkpoint-every"),
    (["train", "--arch", "mlp", "--arch-kwargs", "bogus=1", "-o", "{d}/x.pt"], "arch-kwargs"),
    (["embed", "{m}", "--layers", "fc9", "-o", "{d}/x.h5"], "fc1, logits"),
    (["embed", "{d}/junk.pt", "-o", "{d}/x.h5"], "not a knntools checkpoint"),
    (["embed", "{d}/sd.pt", "-o", "{d}/x.h5"], "not a knntools checkpoint"),
    (["embed", "{m}", "--attack", "fgsm", "-o", "{d}/x.h5"], "--eps"),
    (["embed", "{m}", "--dataset", "fashion-mnist", "--data-dir", "{d}", "-o", "{d}/x.h5"], "not found"),
    (["embed", "{m}", "--dataset", "iris", "-o", "{d}/x.h5"], "shape"),
    (["embed", "{m}", "--device", "cuda:7", "-o", "{d}/x.h5"], "--device"),
    (["embed", "{m}", "--pool", "median", "-o", "{d}/x.h5"], "--pool"),
])
def test_bad_input_exits_2_and_writes_nothing(capsys, tmp_path, digits_model, args, message):
    if not (tmp_path / "test_labels.h5").exists():
        ok_json(capsys, "noise", "--dataset", "digits", "--split", "test", "--kind", "uniform", "--rate", "0.2", "-o", tmp_path / "test_labels.h5")
        ok_json(capsys, "noise", "--dataset", "wine", "--kind", "uniform", "--rate", "0.2", "-o", tmp_path / "wine_labels.h5")
        (tmp_path / "junk.pt").write_bytes(b"not a model")
        torch.save({"w": torch.zeros(2)}, tmp_path / "sd.pt")
    before = set(tmp_path.iterdir())
    argv = [a.format(d=tmp_path, m=digits_model[0]) for a in args]
    code, out, err = invoke(capsys, *argv)
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and out == ""
    assert set(tmp_path.iterdir()) == before


def test_refuses_existing_output_without_force(capsys, tmp_path, digits_model):
    target = tmp_path / "t.h5"
    target.write_text("keep")
    code, _, err = invoke(capsys, "embed", digits_model[0], "--split", "test", "-o", target)
    assert code == 2 and "--force" in err and target.read_text() == "keep"


FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.fmnist
@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_commands_as_written_small(capsys, tmp_path):
    """The issue's commands on Fashion-MNIST at smoke size (--subset): noisy labels, dknn-cnn, embed defaults."""
    lab = tmp_path / "labels.h5"
    ok_json(capsys, "noise", "--dataset", "fashion-mnist", "--data-dir", FMNIST, "--kind", "uniform", "--rate", "0.4", "-o", lab)
    s = ok_json(capsys, "train", "--dataset", "fashion-mnist", "--data-dir", FMNIST, "--labels", lab, "--arch", "dknn-cnn",
                "--epochs", "1", "--subset", "600", "-o", tmp_path / "noisy.pt")
    layers = ok_json(capsys, "embed", tmp_path / "noisy.pt", "--list-layers")["layers"]
    assert [(r["name"], r["dim"]) for r in layers] == [("conv1", 12544), ("conv2", 3200), ("conv3", 128), ("logits", 10)]
    e = ok_json(capsys, "embed", tmp_path / "noisy.pt", "--split", "test", "--layers", "penultimate", "-o", tmp_path / "test.h5")
    assert e["dataset"] == "fashion-mnist" and e["n_samples"] == 10000
    assert e["accuracy"] == pytest.approx(s["test_acc"], abs=1e-9)


def test_library_calls_match_the_commands(tmp_path, digits_model):
    """fit_classifier / plan_embedding + write_activations are what train / embed run: same weights, same rows."""
    from knntools.models.checkpoint import read_checkpoint, write_checkpoint
    from knntools.models.features import plan_embedding, write_activations
    from knntools.models.training import TrainConfig, fit_classifier

    path, summary = digits_model
    res = fit_classifier("digits", arch="mlp", arch_kwargs={"hidden": 64}, config=TrainConfig(epochs=4, lr=3e-3, seed=0))
    cli = read_checkpoint(path, kind="model")
    assert all(torch.equal(v, res.checkpoint["state_dict"][k]) for k, v in cli["state_dict"].items())
    assert res.history[-1]["test_acc"] == summary["test_acc"] and res.info["n_train"] == summary["n_train"]
    write_checkpoint(res.checkpoint, tmp_path / "lib.pt", kind="model")
    assert read_checkpoint(tmp_path / "lib.pt")["kind"] == "model"
    plan = plan_embedding(tmp_path / "lib.pt", split="test", layers="penultimate")
    out = write_activations(plan, tmp_path / "lib.h5", rows=(100, 200))
    assert plan.names == ["fc1"] and out["n_samples"] == 100
    with KFile(tmp_path / "lib.h5", "activations") as kf:
        assert kf.read_layer("fc1").shape == (100, 64) and np.array_equal(kf.read("ids"), plan.data.ids[100:200])


def test_info_reads_every_checkpoint_kind_and_earlier_formats(capsys, tmp_path, digits_model):
    from knntools.methods import knet as kn

    path, summary = digits_model
    res = ok_json(capsys, "info", path)["files"][0]
    assert (res["kind"], res["checkpoint_kind"], res["format"]) == ("checkpoint", "model", "knntools-checkpoint")
    assert res["provenance"]["uuid"] == summary["model_uuid"] and res["n_parameters"] == summary["n_parameters"]
    old = dict(torch.load(path, weights_only=True), format="knntools-model", format_version=1)  # an earlier release's file
    del old["kind"]
    torch.save(old, tmp_path / "old.pt")
    torch.save(kn.to_checkpoint(kn.KNet(4, 3), {"source_uuid": "s-1"}), tmp_path / "knet.pt")
    files = ok_json(capsys, "info", tmp_path / "old.pt", tmp_path / "knet.pt")["files"]
    assert [(f["checkpoint_kind"], f["format"]) for f in files] == [("model", "knntools-model"), ("knet", "knntools-checkpoint")]
    assert files[0]["provenance"]["uuid"] == summary["model_uuid"] and files[1]["provenance"]["parents"] == ["s-1"]
    torch.save({"w": torch.zeros(2)}, tmp_path / "sd.pt")
    code, out, err = invoke(capsys, "info", tmp_path / "sd.pt")
    assert code == 2 and "sd.pt: not a knntools checkpoint (no 'format' header)" in err and err.count("\n") == 1


def test_subset_rows_are_independent_of_the_noisy_rows(tmp_path, capsys):
    """`noise --seed S` and `train --subset N --seed S` used to draw from the same stream, so the subset
    was exactly the noisy rows (for permute 0.5, ~100 % wrong labels instead of ~45 %)."""
    import torch
    import h5py

    lab, model = tmp_path / "labels.h5", tmp_path / "m.pt"
    ok_json(capsys, "noise", "--dataset", "digits", "--kind", "permute", "--rate", "0.5", "--seed", "0", "-o", lab)
    ok_json(capsys, "train", "--dataset", "digits", "--labels", lab, "--subset", "400", "--epochs", "1", "--seed", "0", "-o", model)
    ck = torch.load(model, weights_only=True)
    rows = ck["subset_ids"].numpy()
    with h5py.File(lab) as f:
        wrong = (f["labels"][:][rows] != f["labels_clean"][:][rows]).mean()
    assert 0.3 < wrong < 0.6, wrong  # ~0.5 * 0.9 of a random subset, as on the whole split
