"""Old flag spellings keep working for one release (knntools/cli/_deprecated.py, issue 18)."""

from __future__ import annotations

import io
import json

import pytest

from conftest import invoke
from knntools.cli._deprecated import DEPRECATED_FLAGS, apply_deprecations, warning_line


def test_table_rows_map_to_other_spellings() -> None:
    assert DEPRECATED_FLAGS["seq2knn"]["-K"] == "-k"
    assert DEPRECATED_FLAGS["probe"]["--k"] == "-k"
    assert DEPRECATED_FLAGS["index"]["--layer"] == "--layers"
    for command, table in DEPRECATED_FLAGS.items():
        for old, new in table.items():
            assert old != new and old.startswith("-") and new.startswith("-"), (command, old, new)


@pytest.mark.parametrize(("argv", "expected"), [
    (["index", "a.h5", "--layer", "fc"], ["index", "a.h5", "--layers", "fc"]),
    (["index", "a.h5", "--layer=fc"], ["index", "a.h5", "--layers=fc"]),
    (["seq2knn", "f.h5", "-K", "5"], ["seq2knn", "f.h5", "-k", "5"]),
    (["seq2knn", "f.h5", "-K5"], ["seq2knn", "f.h5", "-k5"]),
    (["probe", "t.h5", "--k=7"], ["probe", "t.h5", "-k7"]),
    (["index", "a.h5", "--layers", "fc"], ["index", "a.h5", "--layers", "fc"]),  # new spelling: untouched
    (["dknn", "a.h5", "--layer", "x"], ["dknn", "a.h5", "--layer", "x"]),  # another command: untouched
    (["index", "a.h5", "--", "--layer"], ["index", "a.h5", "--", "--layer"]),  # after --: arguments
])
def test_rewrite(argv, expected) -> None:
    assert apply_deprecations(argv, stream=io.StringIO()) == expected


def test_warns_once_per_flag_and_not_when_quiet() -> None:
    err = io.StringIO()
    apply_deprecations(["index", "a.h5", "--layer", "x", "--layer", "y"], stream=err)
    assert err.getvalue().splitlines() == [warning_line("index", "--layer", "--layers")]
    assert err.getvalue().strip() == ("knntools index: warning: --layer is deprecated, use --layers "
                                      "(--layer will be removed in the next release)")
    quiet = io.StringIO()
    assert apply_deprecations(["index", "a.h5", "--layer", "x", "-q"], stream=quiet)[2] == "--layers"
    assert quiet.getvalue() == ""


def _stable(summary: dict) -> dict:
    """The --json summary without timings and output paths (they differ between two runs)."""
    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if "seconds" not in k and "per_second" not in k and k != "output"}
        return v
    return strip(summary)


def test_old_spelling_gives_the_same_result_and_one_warning(activations_pair, tmp_path, capsys) -> None:
    train, test = activations_pair
    runs = {}
    for flag in ("--layer", "--layers"):
        out = tmp_path / f"n{flag.strip('-')}.h5"
        code, stdout, stderr = invoke(capsys, "index", train, flag, "layer2", "--backend", "exact", "--device", "cpu",
                                      "--query", test, "-k", "5", "-o", out, "--json")
        assert code == 0, stderr
        runs[flag] = (json.loads(stdout), stderr)
    (old, old_err), (new, new_err) = runs["--layer"], runs["--layers"]
    assert _stable(old) == _stable(new)
    warned = [line for line in old_err.splitlines() if "deprecated" in line]
    assert warned == [warning_line("index", "--layer", "--layers")] and old_err.splitlines()[0] == warned[0]
    assert "deprecated" not in new_err
