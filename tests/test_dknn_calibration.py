"""``knntools dknn`` refuses to calibrate on an attacked evaluated file (Papernot & McDaniel hold out
clean test data for calibration) unless --calibration-file or --calibrate-on-attacked is given."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_blobs_activations
from knntools.io.kinds import write_activations


def _write(path, n, seed, *, split, attack=None, noise=1.2):
    layers, logits, y = make_blobs_activations(n=n, seed=seed, dims=(6,), noise=noise)
    attrs = {"dataset": "blobs", "split": split, "model_uuid": "m0"}
    if attack is not None:
        attrs["attack"] = attack
    write_activations(path, layers=layers, logits=logits, labels=y, ids=np.arange(n), classes=["a", "b", "c"], labels_clean=y, attrs=attrs)
    return path


def _run(capsys, *args):
    from knntools.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dknn_cal")
    return (_write(d / "train.h5", 120, 0, split="train"), _write(d / "test.h5", 60, 1, split="test"),
            _write(d / "fgsm.h5", 60, 1, split="test", attack="fgsm", noise=2.5), _write(d / "none.h5", 60, 1, split="test", attack="none"))


def test_refuses_calibration_on_attacked_file(files, tmp_path, capsys):
    train, test, fgsm, clean_none = files
    out = tmp_path / "o.h5"
    code, stdout, stderr = _run(capsys, "dknn", train, fgsm, "-k", "5", "--calibration", "20", "--layers", "layer1,logits", "-o", out)
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert "attack = 'fgsm'" in stderr and "--calibration-file" in stderr and not out.exists()
    # clean calibration file: accepted; forcing flag: accepted; clean provenance ("none"): accepted
    for extra, ev in ((("--calibration-file", test), fgsm), (("--calibrate-on-attacked",), fgsm), ((), clean_none)):
        code, _, stderr = _run(capsys, "dknn", train, ev, "-k", "5", "--calibration", "20", "--layers", "layer1,logits", *extra, "-o", out, "--force", "-q")
        assert code == 0, (extra, stderr)
        assert out.exists()
