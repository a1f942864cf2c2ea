"""Dataset loading: bundled sets, raw IDX files, tables."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from knntools.errors import InputError
from knntools.io.datasets import load_dataset, load_table, read_idx

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def test_digits_default_split_is_stable():
    tr, te = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    assert tr.X.shape[1:] == (1, 8, 8) and tr.X.dtype == np.float32
    assert 0.0 <= tr.X.min() and tr.X.max() <= 1.0
    assert len(tr.y) + len(te.y) == 1797
    assert not set(tr.ids) & set(te.ids)
    assert tr.classes == [str(i) for i in range(10)]
    np.testing.assert_array_equal(load_dataset("digits").ids, tr.ids)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_raw_idx_layout(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(7, 28, 28))
    labs = rng.integers(0, 10, size=7)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labs)
    ds = load_dataset("fashion-mnist", split="test", data_dir=tmp_path)
    assert ds.X.shape == (7, 1, 28, 28)
    np.testing.assert_allclose(ds.X[:, 0] * 255, imgs, atol=1e-3)
    np.testing.assert_array_equal(ds.y, labs)
    assert ds.classes[0] == "T-shirt/top"
    np.testing.assert_array_equal(read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz"), labs)


def test_missing_data(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        load_dataset("mnist", data_dir=tmp_path / "nope")
    with pytest.raises(InputError, match="not found"):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(InputError, match="unknown; expected one of"):
        load_dataset("imagenet-42")


@pytest.mark.skipif(not FMNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_debian_fashion_mnist():
    ds = load_dataset("fashion-mnist", split="test", data_dir=FMNIST)
    assert ds.X.shape == (10000, 1, 28, 28) and np.bincount(ds.y).tolist() == [1000] * 10


def test_tables(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,Class\n1,2,yes\n3,4,no\n5,6,yes\n")
    ds = load_table(csv, label_column="Class")
    assert ds.X.shape == (3, 2) and ds.classes == ["no", "yes"] and ds.y.tolist() == [1, 0, 1]
    assert ds.feature_names == ["a", "b"]
    np.savez(tmp_path / "t.npz", X=np.ones((4, 3)), y=np.array([0, 1, 2, 1]))
    ds = load_table(tmp_path / "t.npz")
    assert ds.X.shape == (4, 3) and ds.classes == ["0", "1", "2"]
    with pytest.raises(InputError, match="label column 'zzz' not found"):
        load_table(csv, label_column="zzz")
    (tmp_path / "bad.csv").write_text("a,label\nfoo,1\n")
    with pytest.raises(InputError, match="non-numeric"):
        load_table(tmp_path / "bad.csv")
