"""One layer-spec parser for networks and activation files, and the shared k-sweep parser (issue 18)."""

from __future__ import annotations

import pytest

from knntools.cli._options import parse_k_list
from knntools.errors import InputError
from knntools.layerspec import resolve_layer_spec

AVAIL = ["conv1", "conv2", "fc", "logits"]


def resolve(spec, **kw):
    kw.setdefault("penultimate", "fc")
    return resolve_layer_spec(spec, AVAIL, source="train.h5", **kw)


@pytest.mark.parametrize(("spec", "expected"), [
    ("all", AVAIL),
    ("hidden", ["conv1", "conv2", "fc"]),
    ("penultimate", ["fc"]),
    ("penultimate,logits", ["fc", "logits"]),
    ("conv2, fc ,conv2", ["conv2", "fc"]),
    (["conv1", "penultimate"], ["conv1", "fc"]),
    ("hidden,logits", AVAIL),
])
def test_specs(spec, expected) -> None:
    assert resolve(spec) == expected


def test_errors_name_the_source_value_and_choices() -> None:
    with pytest.raises(InputError, match=r"^train.h5: layer 'fc9' not found \(available: conv1, conv2, fc, logits, penultimate\); "
                                         r"expected all \| hidden \| penultimate \| NAME\[,NAME\.\.\.\]$"):
        resolve("conv1,fc9")
    with pytest.raises(InputError, match="train.h5: empty layer list"):
        resolve(" , ")
    with pytest.raises(InputError, match="train.h5: no known penultimate layer"):
        resolve("penultimate", penultimate=None)
    with pytest.raises(InputError, match=r"names 4 layers .*expected exactly one: penultimate \| logits \| NAME"):
        resolve("all", single=True)
    with pytest.raises(InputError, match=r"expected penultimate \| logits \| NAME"):
        resolve("fc9", single=True)


def test_single_extra_and_lazy_penultimate() -> None:
    assert resolve("logits", single=True) == ["logits"]
    assert resolve("paper", single=True, extra=("paper",)) == ["paper"]

    def boom():
        raise AssertionError("penultimate looked up although not asked for")

    assert resolve("conv1", penultimate=boom) == ["conv1"]
    assert resolve("hidden", logits=None) == AVAIL  # a source without logits: nothing to leave out


def test_kfile_resolves_once_and_answers_ids_and_truth(activations_pair) -> None:
    import numpy as np

    from knntools.io.h5 import KFile

    train, _ = activations_pair
    with KFile(train) as kf:
        assert kf.resolve_layers("all") == ["layer1", "layer2", "logits"]
        assert kf.resolve_layers("hidden") == ["layer1", "layer2"]
        assert kf.resolve_layers("penultimate", single=True) == ["layer2"]
        assert kf.truth_name == "labels_clean"
        np.testing.assert_array_equal(kf.truth_labels(), kf.read_labels("labels_clean"))
        np.testing.assert_array_equal(kf.truth_labels([3, 1]), kf.read_labels("labels_clean")[[3, 1]])
        ids = kf.ids()
        assert ids.dtype == np.int64 and np.array_equal(ids, kf.read("ids"))


def test_kfile_without_ids_or_clean_labels(tmp_path) -> None:
    import numpy as np

    from knntools.io.h5 import KFile, create, write_array

    path = tmp_path / "f.h5"
    with create(path, "features", attrs={"classes": ["a", "b"]}) as f:
        write_array(f, "features", np.zeros((4, 2), np.float32))
        write_array(f, "labels", np.array([0, 1, 1, 0], np.int64))
    with KFile(path) as kf:
        assert kf.truth_name == "labels"
        np.testing.assert_array_equal(kf.truth_labels(), [0, 1, 1, 0])
        ids = kf.ids()
        assert ids.dtype == np.int64 and ids.tolist() == [0, 1, 2, 3]
        assert kf.resolve_layers("penultimate") == ["features"]


@pytest.mark.parametrize(("text", "expected"), [
    ("1,11,51,101", [1, 11, 51, 101]),
    ("51, 1,1", [1, 51]),
    ("1:5", [1, 2, 3, 4, 5]),
    ("1:10:4", [1, 5, 9, 10]),
    ("7:7", [7]),
])
def test_parse_k_list(text, expected) -> None:
    assert parse_k_list(text) == expected


@pytest.mark.parametrize("text", ["", "a,b", "1:x", "5:1", "1:9:0", "0,3", "1:2:3:4", "-1:3"])
def test_parse_k_list_refuses(text) -> None:
    with pytest.raises(InputError, match="--k-sweep"):
        parse_k_list(text)
