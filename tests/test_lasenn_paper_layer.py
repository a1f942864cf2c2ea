"""LaSeNN's paper preset: the default --layer is the paper's layer for VGG-13 (third-last conv,
conv8) and ResNet-10 (second-last BasicBlock, layer3), the penultimate layer otherwise."""

from __future__ import annotations

import json

import numpy as np

from conftest import make_blobs_activations
from knntools.io.kinds import write_activations
from knntools.methods import lasenn as ls


def test_paper_layer_names_exist_in_the_architectures():
    from knntools.models.registry import build_model

    for arch, layer in (("vgg13", "conv8"), ("resnet10", "layer3")):
        assert ls.paper_layer(arch) == layer
        net = build_model(arch, (3, 32, 32), 10)
        assert layer in net.knn_layers
    assert [n for n in build_model("vgg13", (3, 32, 32), 10).knn_layers if n.startswith("conv")][-3] == "conv8"
    assert ls.paper_layer("mlp") == ls.paper_layer(None) == "penultimate"


def _write(path, n, seed, arch, names):
    layers, logits, y = make_blobs_activations(n=n, seed=seed, dims=(6, 4), noise=1.0)
    layers = dict(zip(names, layers.values()))
    write_activations(path, layers=layers, logits=logits, labels=y, ids=np.arange(n), classes=["a", "b", "c"], labels_clean=y,
                      attrs={"dataset": "blobs", "split": "train" if seed == 0 else "test", "model_uuid": "m", "model_arch": arch})
    return path


def _run(capsys, *args):
    from knntools.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_default_layer_is_the_papers(tmp_path, capsys):
    tr = _write(tmp_path / "tr.h5", 60, 0, "vgg13", ["conv8", "pool"])
    te = _write(tmp_path / "te.h5", 30, 1, "vgg13", ["conv8", "pool"])
    code, out, err = _run(capsys, "lasenn", tr, te, "-o", tmp_path / "o.h5", "--json")
    assert code == 0, err
    assert json.loads(out)["layer"] == "conv8"
    tr2 = _write(tmp_path / "tr2.h5", 60, 0, "vgg13", ["conv9", "pool"])
    te2 = _write(tmp_path / "te2.h5", 30, 1, "vgg13", ["conv9", "pool"])
    code, out, err = _run(capsys, "lasenn", tr2, te2, "-o", tmp_path / "o2.h5")
    assert code == 2 and "conv8" in err and "--layer" in err and not (tmp_path / "o2.h5").exists()
    code, out, err = _run(capsys, "lasenn", tr2, te2, "--layer", "penultimate", "-o", tmp_path / "o3.h5", "--json")
    assert code == 0 and json.loads(out)["layer"] == "pool"
