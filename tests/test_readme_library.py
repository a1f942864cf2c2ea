"""The README's Library section: every Python example runs as it stands (issue 18: the core functions
are the documented API). Each block runs in a fresh namespace of this process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    text = README.read_text()
    section = text.split("\n## Library\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_library_section_has_one_example_per_method() -> None:
    code = "\n".join(_blocks())
    for module in ("knntools.search", "knntools.models", "knntools.methods.dknn", "knntools.methods.lasenn", "from knntools.methods import knet",
                   "knntools.methods.probe", "knntools.methods.seq2knn", "knntools.methods.oversample"):
        assert module in code, module


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_library_example_runs(index: int, capsys) -> None:
    import torch

    threads = torch.get_num_threads()
    try:
        exec(compile(_blocks()[index], f"README Library example {index + 1}", "exec"), {"__name__": f"readme_example_{index}"})
    finally:
        torch.set_num_threads(threads)
    assert capsys.readouterr().out.strip(), "an example prints its result"
