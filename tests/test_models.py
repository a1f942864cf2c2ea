"""Library tests of knntools.models: registry, architectures, training loop, checkpoints, extraction, attacks."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from knntools.errors import InputError, SchemaError  # noqa: E402
from knntools.models import registry  # noqa: E402
from knntools.models.attacks import fgsm, perturb, pgd  # noqa: E402
from knntools.models import checkpoint as ckmod  # noqa: E402
from knntools.models.checkpoint import load_checkpoint, model_from_checkpoint, read_checkpoint, save_checkpoint, write_checkpoint  # noqa: E402
from knntools.models.features import Network, describe_layers, iter_activations, load_network, resolve_layers  # noqa: E402
from knntools.models.training import Normalizer, TrainConfig, augment_batch, evaluate, normalization_stats, train_model  # noqa: E402

torch.set_num_threads(1)


class Evil:
    """An arbitrary pickled object: weights_only loading must refuse it."""


ARCHS = list(registry.registered())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_every_arch_forward_and_layers(arch, shape):
    spec = registry.registered()[arch]
    torch.manual_seed(0)
    model = registry.build_model(arch, shape, 5, **spec.test_kwargs).eval()
    out = model(torch.rand(3, *shape))
    assert out.shape == (3, 5)
    layers = registry.model_layers(model)
    assert layers and model.knn_penultimate in layers
    net = Network(model, "knntools", arch, shape, [str(i) for i in range(5)], {"mean": [], "std": []}, layers=layers, penultimate=model.knn_penultimate)
    rows = describe_layers(net)
    assert [r["name"] for r in rows] == layers + ["logits"]
    pen = next(r for r in rows if r["penultimate"])
    # the penultimate layer's flattened output is the classifier's input
    clf = model.get_submodule(model.knn_classifier)
    assert pen["dim"] == clf.in_features


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_tiny_training_step(arch):
    spec = registry.registered()[arch]
    shape = (1, 8, 8)
    rng = np.random.default_rng(0)
    X = rng.random((24, *shape), dtype=np.float32)
    y = rng.integers(0, 3, 24)
    torch.manual_seed(0)
    model = registry.build_model(arch, shape, 3, **spec.test_kwargs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hist, state = train_model(model, X, y, TrainConfig(epochs=1, batch_size=8, seed=0), normalization=normalization_stats(X), X_test=X, y_test=y)
    assert len(hist) == 1 and hist[0]["step"] == 3 and 0 <= hist[0]["test_acc"] <= 1
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if v.dtype.is_floating_point)
    assert state["step"] == 3


def test_ffn_on_tabular_and_image_arch_refuses_tables():
    m = registry.build_model("ffn", (30,), 2, hidden=[8, 4], dropout=0.1, batch_norm=True)
    assert m(torch.rand(4, 30)).shape == (4, 2)
    assert registry.model_layers(m) == ["fc1", "fc2"]
    with pytest.raises(InputError, match="image inputs"):
        registry.build_model("dknn-cnn", (30,), 2)


def test_unknown_arch_lists_valid_names():
    with pytest.raises(InputError, match="dknn-cnn.*torchvision"):
        registry.check_arch("nope")
    with pytest.raises(InputError, match="architecture mlp: bad keyword arguments") as info:
        registry.build_model("mlp", (4,), 2, nonsense=1)
    assert info.value.param == "arch_kwargs"


def test_dknn_cnn_shapes_match_paper():
    m = registry.build_model("dknn-cnn", (1, 28, 28), 10).eval()
    net = Network(m, "knntools", "dknn-cnn", (1, 28, 28), [], {}, layers=m.knn_layers, penultimate=m.knn_penultimate)
    dims = {r["name"]: (r["shape"], r["dim"]) for r in describe_layers(net)}
    assert dims["conv1"] == ([64, 14, 14], 12544)
    assert dims["conv2"] == ([128, 5, 5], 3200)
    assert dims["conv3"] == ([128, 1, 1], 128)
    assert dims["logits"][1] == 10
    assert describe_layers(net, ["conv1"], pool="avg")[0]["dim"] == 64


def test_torchvision_model_by_name_adapts_channels_and_layers():
    m = registry.build_model("resnet18", (1, 16, 16), 4).eval()
    assert m.conv1.in_channels == 1
    assert m(torch.rand(2, 1, 16, 16)).shape == (2, 4)
    assert m.knn_layers == ["layer1", "layer2", "layer3", "layer4", "avgpool"]
    assert m.knn_penultimate == "avgpool" and m.knn_classifier == "fc"


def test_wide_resnet_depth_check():
    with pytest.raises(InputError, match="6n\\+4"):
        registry.build_model("wide-resnet", (3, 8, 8), 2, depth=11)


def test_normalization_and_augmentation():
    rng = np.random.default_rng(0)
    X = rng.random((50, 2, 6, 6), dtype=np.float32) * 3 + 1
    st = normalization_stats(X)
    assert np.allclose(st["mean"], X.mean(axis=(0, 2, 3)), atol=1e-5)
    assert np.allclose(st["std"], X.std(axis=(0, 2, 3)), atol=1e-4)
    xn = Normalizer(st)(torch.from_numpy(X))
    assert abs(float(xn.mean())) < 1e-4
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = augment_batch(x, g1), augment_batch(x, g2)
    assert a.shape == x.shape and torch.equal(a, b)  # seeded
    z = augment_batch(x, torch.Generator().manual_seed(0), pad=0, flip=False)
    assert torch.equal(z, x)
    t = torch.rand(5, 7)
    assert torch.equal(augment_batch(t, torch.Generator()), t)  # tables untouched


def _digits_like(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.random((n, 1, 8, 8), dtype=np.float32) * 0.3
    for c in range(3):
        X[y == c, 0, c * 2 : c * 2 + 2, :] += 0.7
    return np.clip(X, 0, 1), y


def test_training_is_deterministic_and_learns():
    X, y = _digits_like()
    cfg = TrainConfig(epochs=6, batch_size=16, seed=5, augment=True, lr=1e-2, lr_schedule="cosine")
    weights = []
    for _ in range(2):
        torch.manual_seed(5)
        m = registry.build_model("mlp", (1, 8, 8), 3, hidden=16)
        hist, _ = train_model(m, X, y, cfg, normalization=normalization_stats(X), X_test=X, y_test=y)
        weights.append(m.state_dict())
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k])
    assert hist[-1]["test_acc"] > 0.9


def test_resume_reproduces_uninterrupted_run():
    X, y = _digits_like()
    cfg = TrainConfig(epochs=2, batch_size=16, seed=1, checkpoint_every=5, augment=True)
    torch.manual_seed(1)
    m_full = registry.build_model("mlp", (1, 8, 8), 3, hidden=16)
    init = {k: v.clone() for k, v in m_full.state_dict().items()}
    snaps = []

    def keep(state):
        snaps.append(({k: v.clone() for k, v in m_full.state_dict().items()}, state))

    train_model(m_full, X, y, cfg, on_checkpoint=keep)
    assert [s[1]["step"] for s in snaps] == [5, 10, 15]
    weights, state = snaps[0]  # mid-epoch (epoch 0, batch 5 of 8)
    assert state["epoch"] == 0 and state["epoch_step"] == 5
    m2 = registry.build_model("mlp", (1, 8, 8), 3, hidden=16)
    m2.load_state_dict(weights)
    hist2, st2 = train_model(m2, X, y, cfg, state=state)
    assert st2["step"] == 16 and len(hist2) == 2
    for k, v in m_full.state_dict().items():
        assert torch.allclose(v, m2.state_dict()[k], atol=1e-6), k
    assert not torch.equal(init["fc2.weight"], m2.state_dict()["fc2.weight"])


def _ckpt(model, arch, shape, classes, **extra):
    return {"format": "knntools-model", "format_version": 1, "arch": arch, "arch_kwargs": extra.pop("kwargs", {}),
            "input_shape": list(shape), "classes": classes, "normalization": {"mean": [0.5], "std": [0.25]},
            "state_dict": model.state_dict(), "provenance": {"model_uuid": "m-1", "dataset": "digits"}, **extra}


def test_checkpoint_round_trip_weights_only(tmp_path):
    m = registry.build_model("lenet", (1, 8, 8), 3).eval()
    ck = _ckpt(m, "lenet", (1, 8, 8), ["a", "b", "c"], train_labels=torch.arange(5))
    p = save_checkpoint(ck, tmp_path / "m.pt")
    raw = torch.load(p, weights_only=True)  # plain types only
    assert raw["arch"] == "lenet" and raw["provenance"]["model_uuid"] == "m-1"
    # the current header replaces the (earlier) one in the dict given
    assert (raw["format"], raw["format_version"], raw["kind"]) == ("knntools-checkpoint", 2, "model")
    assert list(raw)[:3] == ["format", "format_version", "kind"]
    m2 = model_from_checkpoint(load_checkpoint(p))
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(m(x), m2(x))
    with pytest.raises(InputError, match="exists"):
        save_checkpoint(ck, p)
    assert not list(tmp_path.glob(".*partial"))


def test_load_checkpoint_refuses_other_files(tmp_path):
    (tmp_path / "t.pt").write_text("hello")
    with pytest.raises(SchemaError, match="weights_only"):
        load_checkpoint(tmp_path / "t.pt")
    torch.save({"x": torch.zeros(1)}, tmp_path / "sd.pt")
    with pytest.raises(SchemaError, match="not a knntools checkpoint"):
        load_checkpoint(tmp_path / "sd.pt")
    torch.save({"format": "knntools-model", "obj": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(SchemaError):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(InputError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_read_checkpoint_kinds_versions_and_earlier_formats(tmp_path):
    m = registry.build_model("mlp", (4,), 2, hidden=3).eval()
    body = {k: v for k, v in _ckpt(m, "mlp", (4,), ["a", "b"]).items() if k not in ("format", "format_version")}
    p = write_checkpoint(body, tmp_path / "m.pt", kind="model")
    assert read_checkpoint(p)["kind"] == "model" and read_checkpoint(p, kind="model")["arch"] == "mlp"
    with pytest.raises(SchemaError, match=r"m\.pt: kind: a model checkpoint \(written by `knntools train`\); expected a knet checkpoint"):
        read_checkpoint(p, kind="knet")
    # files of earlier releases: one format per kind, version 1, no 'kind' field
    for fmt, kind in (("knntools-model", "model"), ("knntools-knet", "knet"), ("knntools-seq2knn", "seq2knn")):
        old = {"format": fmt, "format_version": 1, **{k: {} for k in ckmod.REQUIRED_KEYS[kind]}}
        torch.save(old, tmp_path / f"{kind}.pt")
        got = read_checkpoint(tmp_path / f"{kind}.pt", kind=kind)
        assert got["kind"] == kind and got["format"] == fmt and got["format_version"] == 1
        torch.save(dict(old, format_version=2), tmp_path / "v2.pt")
        with pytest.raises(SchemaError, match=f"v2.pt: format_version: 2 for format '{fmt}'; this knntools reads versions 1 to 1"):
            read_checkpoint(tmp_path / "v2.pt")
    torch.save(dict(torch.load(p, weights_only=True), format_version=3), tmp_path / "v3.pt")
    with pytest.raises(SchemaError, match="format_version: 3 .* reads versions 1 to 2"):
        read_checkpoint(tmp_path / "v3.pt")
    torch.save(dict(torch.load(p, weights_only=True), kind="resnet"), tmp_path / "k.pt")
    with pytest.raises(SchemaError, match=r"k\.pt: kind: 'resnet'; expected one of model, knet, seq2knn"):
        read_checkpoint(tmp_path / "k.pt")
    torch.save({k: v for k, v in torch.load(p, weights_only=True).items() if k != "classes"}, tmp_path / "c.pt")
    with pytest.raises(SchemaError, match=r"c\.pt: classes: missing from this model checkpoint"):
        read_checkpoint(tmp_path / "c.pt")
    torch.save([1, 2], tmp_path / "l.pt")
    with pytest.raises(SchemaError, match="holds a list"):
        read_checkpoint(tmp_path / "l.pt", kind="seq2knn")
    with pytest.raises(ValueError, match="needs classes"):
        write_checkpoint({k: v for k, v in body.items() if k != "classes"}, tmp_path / "x.pt", kind="model")
    with pytest.raises(ValueError, match="unknown checkpoint kind"):
        write_checkpoint(body, tmp_path / "x.pt", kind="resnet")
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_load_network_knntools_torchscript_and_torchvision(tmp_path):
    m = registry.build_model("dknn-cnn", (1, 8, 8), 3, width=4).eval()
    p = save_checkpoint(_ckpt(m, "dknn-cnn", (1, 8, 8), ["a", "b", "c"], kwargs={"width": 4}), tmp_path / "m.pt")
    net = load_network(p)
    assert net.kind == "knntools" and net.layers == ["conv1", "conv2", "conv3"] and net.penultimate == "conv3"
    assert resolve_layers(net, "penultimate") == ["conv3"]
    assert resolve_layers(net, "conv1,logits,conv1.conv") == ["conv1", "conv1.conv"]
    with pytest.raises(InputError, match="conv1, conv2, conv3, logits"):
        resolve_layers(net, "fc9")

    class TS(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f = torch.nn.Linear(64, 3)

        def forward(self, x):
            h = x.flatten(1)
            return {"hidden": h, "logits": self.f(h)}

    ts = torch.jit.script(TS())
    ts.save(str(tmp_path / "ts.pt"))
    tnet = load_network(tmp_path / "ts.pt", input_shape=(1, 8, 8))
    assert tnet.kind == "torchscript" and tnet.layers == ["hidden"]
    (start, feats, logits), = list(iter_activations(tnet, np.zeros((4, 1, 8, 8), np.float32), ["hidden"], batch_size=10))
    assert feats["hidden"].shape == (4, 64) and logits.shape == (4, 3)

    tv = registry.build_model("resnet18", (3, 8, 8), 7)
    torch.save({"state_dict": {"module." + k: v for k, v in tv.state_dict().items()}}, tmp_path / "w.pth")
    vnet = load_network(arch="resnet18", weights=tmp_path / "w.pth", input_shape=(1, 8, 8))
    assert vnet.repeat_channels == 3 and vnet.normalization["mean"] == [0.485, 0.456, 0.406]
    rows = describe_layers(vnet, ["layer4", "avgpool"])
    assert rows[-1]["dim"] == 7 and rows[1]["dim"] == 512
    with pytest.raises(InputError, match="torchvision"):
        load_network(arch="dknn-cnn", weights=tmp_path / "w.pth", input_shape=(1, 8, 8))


def test_iter_activations_streams_batches_and_pooling(tmp_path):
    m = registry.build_model("dknn-cnn", (1, 8, 8), 3, width=4).eval()
    net = Network(m, "knntools", "dknn-cnn", (1, 8, 8), ["a", "b", "c"], {"mean": [0.5], "std": [0.5]}, layers=m.knn_layers, penultimate="conv3")
    X = np.random.default_rng(0).random((23, 1, 8, 8), dtype=np.float32)
    blocks = list(iter_activations(net, X, ["conv1", "conv3"], batch_size=10, pool="max", dtype=np.float16))
    assert [b[0] for b in blocks] == [0, 10, 20] and [len(b[2]) for b in blocks] == [10, 10, 3]
    assert blocks[0][1]["conv1"].shape == (10, 4) and blocks[0][1]["conv1"].dtype == np.float16
    full = np.concatenate([b[1]["conv1"] for b in blocks])
    with torch.no_grad():
        ref = m.conv1(Normalizer(net.normalization)(torch.from_numpy(X))).amax(dim=(2, 3)).numpy()
    assert np.allclose(full, ref, atol=1e-2)
    logits = np.concatenate([b[2] for b in blocks])
    with torch.no_grad():
        assert np.allclose(logits, m(Normalizer(net.normalization)(torch.from_numpy(X))).numpy(), atol=1e-5)


def test_attacks_fgsm_pgd_bounds_and_effect():
    X, y = _digits_like(200)
    torch.manual_seed(0)
    m = registry.build_model("mlp", (1, 8, 8), 3, hidden=32)
    train_model(m, X, y, TrainConfig(epochs=8, batch_size=20, lr=3e-3))
    m.eval()
    x, yt = torch.from_numpy(X), torch.from_numpy(y)
    f = lambda z: m(z)  # noqa: E731
    clean = float((f(x).argmax(1) == yt).float().mean())
    xa = fgsm(f, x, yt, 0.3)
    assert float((xa - x).abs().max()) <= 0.3 + 1e-6 and float(xa.min()) >= 0 and float(xa.max()) <= 1
    assert float((f(xa).argmax(1) == yt).float().mean()) < clean
    xp = pgd(f, x, yt, 0.3, steps=5, generator=torch.Generator().manual_seed(0))
    assert float((xp - x).abs().max()) <= 0.3 + 1e-6 and float(xp.min()) >= 0
    assert float((f(xp).argmax(1) == yt).float().mean()) <= float((f(xa).argmax(1) == yt).float().mean()) + 0.02
    xp2 = pgd(f, x, yt, 0.3, steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(xp, xp2)
    assert torch.equal(perturb(f, x, yt, "none", eps=0.3), x)
    assert torch.equal(fgsm(f, x, yt, 0.0), x)


def test_evaluate_matches_manual_accuracy():
    X, y = _digits_like(50)
    m = registry.build_model("mlp", (1, 8, 8), 3, hidden=8).eval()
    ev = evaluate(m, X, y, normalizer=Normalizer(None), device="cpu", batch_size=7)
    with torch.no_grad():
        acc = float((m(torch.from_numpy(X)).argmax(1).numpy() == y).mean())
    assert abs(ev["acc"] - acc) < 1e-9
