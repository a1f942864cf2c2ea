"""Users' own images: `--dataset imagefolder` streamed through a DataLoader (`--workers`), torchvision
models by weights name with their own preprocessing, and embedding a row range.

The tests write a small ImageFolder tree themselves (3 classes of small PNGs; no downloads).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
Image = pytest.importorskip("PIL.Image")

from knntools.errors import InputError  # noqa: E402
from knntools.io import datasets as dsets  # noqa: E402
from knntools.io.h5 import KFile  # noqa: E402
from conftest import invoke, ok_json  # noqa: E402

CLASSES = ["cat", "dog", "owl"]
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]


def _write_split(root: Path, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for c, (name, colour) in enumerate(zip(CLASSES, COLOURS)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = int(rng.integers(18, 30)), int(rng.integers(18, 30))  # mixed sizes, as real photos
            img = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"img{i:02d}.png")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    _write_split(d / "train", 8, 0)
    _write_split(d / "test", 4, 1)
    return d


def test_split_layout_order_and_errors(folder, tmp_path):
    tr = dsets.load_dataset("imagefolder", split="train", data_dir=folder, image_size=16)
    te = dsets.load_dataset("imagefolder", split="test", data_dir=folder, image_size=16)
    assert tr.streaming and tr.classes == CLASSES and tr.n_samples == 24 and te.n_samples == 12
    assert tr.input_shape == (3, 16, 16) and tr.root == str(folder / "train") and te.root == str(folder / "test")
    np.testing.assert_array_equal(tr.y, np.repeat([0, 1, 2], 8))  # sorted classes, sorted files
    np.testing.assert_array_equal(tr.ids, np.arange(24))
    x, t = tr.X[9]
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1 and t == 1
    # val/ serves as the test split; a folder without split folders is both splits
    flat = tmp_path / "flat"
    _write_split(flat, 2, 3)
    assert dsets.load_dataset("imagefolder", split="test", data_dir=flat, image_size=8).n_samples == 6
    val = tmp_path / "withval"
    _write_split(val / "train", 2, 4)
    _write_split(val / "val", 1, 5)
    assert dsets.load_dataset("imagefolder", split="test", data_dir=val, image_size=8).root == str(val / "val")
    # errors: missing split folder, different classes, no --data-dir, no images
    only_train = tmp_path / "onlytrain"
    _write_split(only_train / "train", 1, 6)
    with pytest.raises(InputError, match="no test or val folder"):
        dsets.load_dataset("imagefolder", split="test", data_dir=only_train)
    bad = tmp_path / "bad"
    _write_split(bad / "train", 1, 7)
    (bad / "test" / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad / "test" / "cat" / "x.png")
    with pytest.raises(InputError, match="expected the same class folders"):
        dsets.load_dataset("imagefolder", split="test", data_dir=bad)
    with pytest.raises(InputError, match="imagefolder: no data folder"):
        dsets.load_dataset("imagefolder", split="train")
    with pytest.raises(InputError, match="ImageNet not found"):
        dsets.load_dataset("imagenet", split="test", data_dir=tmp_path)
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(InputError, match="(?i)no valid file|no images"):
        dsets.load_dataset("imagefolder", split="train", data_dir=tmp_path / "empty")


def test_train_and_embed_read_imagefolder_with_workers(capsys, folder, tmp_path):
    torch.set_num_threads(1)
    res = ok_json(capsys, "train", "--dataset", "imagefolder", "--data-dir", folder, "--image-size", "16", "--workers", "2",
                  "--arch", "lenet", "--epochs", "3", "--batch-size", "8", "--lr", "3e-3", "--augment", "--seed", "0",
                  "--num-threads", "1", "-o", tmp_path / "m.pt")
    assert res["n_train"] == 24 and res["n_test"] == 12 and res["classes"] == CLASSES and res["steps"] == 9
    ck = torch.load(tmp_path / "m.pt", weights_only=True)
    assert ck["input_shape"] == [3, 16, 16] and ck["provenance"]["dataset"] == "imagefolder"
    assert len(ck["normalization"]["mean"]) == 3
    # dataset and data dir come from the checkpoint; the images are resized to its input size
    emb = ok_json(capsys, "embed", tmp_path / "m.pt", "--split", "test", "--workers", "2", "--batch-size", "5", "-o", tmp_path / "t.h5")
    assert emb["n_samples"] == 12 and emb["dataset"] == "imagefolder"
    assert emb["accuracy"] == pytest.approx(res["test_acc"], abs=1e-9)  # the same images as training's evaluation
    with KFile(tmp_path / "t.h5", "activations") as kf:
        assert kf.classes == CLASSES
        np.testing.assert_array_equal(kf.read_labels("labels_clean"), np.repeat([0, 1, 2], 4))
        np.testing.assert_array_equal(kf.read("ids"), np.arange(12))
        assert kf.read_layer("fc2").shape == (12, 84)
    # workers 0 and 2 give the same bytes
    ok_json(capsys, "embed", tmp_path / "m.pt", "--split", "test", "--batch-size", "5", "-o", tmp_path / "t0.h5")
    with KFile(tmp_path / "t.h5", "activations") as a, KFile(tmp_path / "t0.h5", "activations") as b:
        np.testing.assert_array_equal(a.read_layer("fc2"), b.read_layer("fc2"))


def test_embed_row_range_equals_rows_of_full_embedding(folder):
    from knntools.models.features import Network, iter_activations
    from knntools.models.registry import build_model

    torch.manual_seed(0)
    ds = dsets.load_dataset("imagefolder", split="train", data_dir=folder, image_size=16)
    model = build_model("lenet", ds.input_shape, 3).eval()
    net = Network(model, "knntools", "lenet", ds.input_shape, CLASSES, {"mean": [0.5] * 3, "std": [0.25] * 3},
                  layers=model.knn_layers, penultimate=model.knn_penultimate)

    def embed(rows=None, workers=0):
        starts, feats, logits = [], [], []
        for start, f, lg in iter_activations(net, ds.X, ["conv2", "fc2"], batch_size=4, rows=rows, workers=workers):
            starts.append(start)
            feats.append(f["conv2"])
            logits.append(lg)
        return starts, np.concatenate(feats), np.concatenate(logits)

    starts, full_f, full_l = embed()
    assert starts == list(range(0, 24, 4)) and full_f.shape[0] == 24 and full_l.shape == (24, 3)
    for a, b in [(4, 16), (5, 17), (0, 24), (23, 24)]:
        s, f, lg = embed((a, b), workers=2 if a == 5 else 0)
        assert s[0] == a and len(f) == b - a
        np.testing.assert_array_equal(f, full_f[a:b])
        np.testing.assert_array_equal(lg, full_l[a:b])
    assert list(iter_activations(net, ds.X, ["fc2"], batch_size=4, rows=(7, 7))) == []
    with pytest.raises(InputError, match="rows"):
        embed((20, 30))


def _fake_hub_weights(torch_home: Path, arch: str) -> object:
    """Put a (random) state dict where torch hub caches ``arch``'s DEFAULT weights, so nothing downloads."""
    import torchvision.models as tvm

    w = tvm.get_model_weights(arch).DEFAULT
    torch.manual_seed(0)
    model = tvm.get_model(arch, weights=None, num_classes=len(w.meta["categories"]))
    dest = torch_home / "hub" / "checkpoints" / w.url.rsplit("/", 1)[-1]
    dest.parent.mkdir(parents=True)
    torch.save(model.state_dict(), dest)
    return w


def test_weights_by_name_resolve_without_download(tmp_path, monkeypatch):
    from knntools.models.features import resolve_weights, weights_preprocessing

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub_home"))
    w = resolve_weights("resnet50", "DEFAULT")
    assert str(w) == "ResNet50_Weights.IMAGENET1K_V2"
    assert resolve_weights("resnet50", "ResNet50_Weights.IMAGENET1K_V1").name == "IMAGENET1K_V1"
    assert resolve_weights("resnet50", "IMAGENET1K_V1").name == "IMAGENET1K_V1"
    tf, norm, crop = weights_preprocessing(w)
    assert crop == 224 and norm == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    img = Image.fromarray(np.full((300, 260, 3), 255, np.uint8))
    x = tf(img)
    assert tuple(x.shape) == (3, 224, 224) and float(x.max()) == pytest.approx(1.0)  # [0, 1]: normalisation is the network's
    assert not (tmp_path / "hub_home").exists()  # resolving downloaded nothing
    with pytest.raises(InputError, match="IMAGENET1K_V1"):
        resolve_weights("resnet50", "IMAGENET9K")
    with pytest.raises(InputError, match="another model"):
        resolve_weights("resnet50", "ResNet18_Weights.DEFAULT")


def test_embed_torchvision_weights_by_name_uses_their_transforms(capsys, folder, tmp_path, monkeypatch):
    import torchvision.models as tvm

    torch.set_num_threads(1)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    w = _fake_hub_weights(tmp_path / "th", "mobilenet_v3_small")
    res = ok_json(capsys, "embed", "--arch", "mobilenet_v3_small", "--weights", "DEFAULT", "--dataset", "imagefolder", "--data-dir", folder,
                  "--split", "test", "--layers", "avgpool", "--workers", "2", "--batch-size", "5", "-o", tmp_path / "w.h5")
    assert res["n_samples"] == 12 and res["logits"] is False  # 1000 ImageNet logits, 3 classes here: not stored
    with KFile(tmp_path / "w.h5", "activations") as kf:
        got = kf.read_layer("avgpool")
        assert kf.attrs["model_path"] == str(w) and kf.attrs["normalization"]["mean"] == list(w.transforms().mean)
    # the reference: torchvision's own full preprocessing (resize 256, crop 224, normalise) on each image
    model = tvm.get_model("mobilenet_v3_small", weights=w).eval()
    tf = w.transforms()
    files = sorted((folder / "test").rglob("*.png"))
    with torch.no_grad():
        ref = torch.cat([model.avgpool(model.features(tf(Image.open(f).convert("RGB"))[None])).flatten(1) for f in files]).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # a name that is neither a file nor a weights name: exit 2, nothing written
    code, _, err = invoke(capsys, "embed", "--arch", "mobilenet_v3_small", "--weights", "IMAGENET9K", "--dataset", "imagefolder",
                          "--data-dir", folder, "-o", tmp_path / "x.h5")
    assert code == 2 and "IMAGENET1K_V1" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x.h5").exists()
