"""Core errors describe the value and carry the parameter name; the CLI prefixes the command's flag (issue 18)."""

from __future__ import annotations

import pytest

from conftest import invoke
from knntools.errors import InputError, SchemaError
from knntools.io import datasets as dsets
from knntools.methods import noise as nz
from knntools.methods.probe import parse_classifiers


def test_core_error_has_param_and_no_flag():
    with pytest.raises(InputError) as info:
        nz.add_label_noise([0, 1, 2, 0], 3, "uniform", 1.5)
    assert info.value.param == "rate"
    assert str(info.value) == "noise rate 1.5: expected a number in [0, 1]"
    with pytest.raises(InputError) as info:
        dsets.load_dataset("mnist", data_dir="/no/such/folder")
    assert info.value.param == "data_dir" and str(info.value).startswith("data folder /no/such/folder: no such folder")
    assert "--" not in str(info.value)
    with pytest.raises(InputError) as info:
        parse_classifiers("knn,tree")
    assert info.value.param == "classifiers" and str(info.value).startswith("classifiers 'knn,tree': unknown classifier tree")


def test_param_is_keyword_only_and_optional():
    assert InputError("x").param is None
    assert SchemaError("f.h5: bad", param="weights").param == "weights"
    with pytest.raises(TypeError):
        InputError("x", "rate")  # type: ignore[misc]


def test_cli_prefixes_the_flag_of_the_param(capsys, tmp_path):
    code, out, err = invoke(capsys, "noise", "--rate", "1.5", "-o", tmp_path / "l.h5")
    assert code == 2 and out == "" and not (tmp_path / "l.h5").exists()
    assert err.strip().splitlines() == ["knntools noise: error: --rate: noise rate 1.5: expected a number in [0, 1]"]
    code, _, err = invoke(capsys, "train", "--dataset", "mnist", "--data-dir", tmp_path / "none", "-o", tmp_path / "m.pt")
    assert code == 2 and err.startswith(f"knntools train: error: --data-dir: data folder {tmp_path / 'none'}: no such folder")
    assert len(err.strip().splitlines()) == 1


def test_cli_without_that_option_prints_the_message_as_is(capsys):
    from knntools.cli._errors import handle_errors, option_flag

    assert option_flag("rate") is None  # no running command

    @handle_errors("demo")
    def demo() -> None:
        raise InputError("noise rate 2: expected a number in [0, 1]", param="rate")

    with pytest.raises(Exception) as info:
        demo()
    assert getattr(info.value, "exit_code", None) == 2
    assert capsys.readouterr().err.strip() == "knntools demo: error: noise rate 2: expected a number in [0, 1]"
