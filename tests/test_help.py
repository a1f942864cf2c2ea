"""Every ``--help`` page reads as clean paragraphs, and the shared flags mean the same everywhere.

Rendering is in-process (``typer.testing.CliRunner``), so the whole file runs in a few seconds.
"""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
import typer.main
from typer.testing import CliRunner

from knntools.cli import COMMANDS, app, reflow

PAGES = [[]] + [[name] for name, _, _ in COMMANDS]  # the root page, then every command
WIDTHS = (80, 120)

#: Characters a line of prose may legitimately end with before a line break: sentence and clause
#: punctuation, closing brackets/quotes, and box/table borders.
_CLAUSE_END = tuple(".:;,!?)]}\"'`") + tuple("│╮╯╭╰─┤├┐┘")
_BOX = tuple("│╭╰┌└├┃")


def _render(args: list[str], width: int) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(width), "TERM": "dumb", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def ragged_lines(text: str, width: int) -> list[str]:
    """Lines of a rendered help page that end mid-sentence far before the right margin.

    The rule: a prose line (outside the option/argument boxes, which are tables) is *ragged* when
    its text is shorter than half the terminal width, does not end with sentence or clause
    punctuation (``.:;,!?``), a closing bracket or quote, or a box border, and the next line is a
    non-blank line of the same paragraph (same indentation, not an example command). Example
    command lines (indented, or starting with ``knntools``/``Usage:``) and tables are exempt. Such a
    line means a hand-wrapped newline survived into the output and rich wrapped around it.
    """
    lines = text.splitlines()
    bad = []
    for i, line in enumerate(lines[:-1]):
        body, nxt = line.rstrip(), lines[i + 1].rstrip()
        if not body.strip() or not nxt.strip() or body.lstrip().startswith(_BOX) or nxt.lstrip().startswith(_BOX):
            continue
        indent = len(body) - len(body.lstrip())
        if indent > 1 or len(nxt) - len(nxt.lstrip()) != indent:  # examples and preformatted blocks
            continue
        text_ = body.strip()
        if text_.startswith(("knntools ", "Usage:", "$ ")) or re.match(r"^[A-Z][A-Za-z /()-]{0,30}:\s", nxt.strip()):
            continue  # a command line, or the next line starts its own "Label:" line (Reads:/Writes:)
        if len(body) < width // 2 and not text_.endswith(_CLAUSE_END):
            bad.append(f"{body!r} -> {nxt.strip()[:40]!r}")
    return bad


def test_ragged_detector_flags_a_hand_wrapped_line() -> None:
    assert ragged_lines(" Join the parts of\n a split.\n", 80) == ["' Join the parts of' -> 'a split.'"]
    assert ragged_lines(" Reads: one file.\n Writes: another.\n", 80) == []
    assert ragged_lines(" Examples:\n\n   knntools merge a.h5\n   b.h5\n", 80) == []


def test_reflow_joins_paragraph_lines_only() -> None:
    text = "First line\nwrapped.\n\nA paragraph\nwrapped by hand.\nReads: a file\nwith rows.\nWrites: b.\n\nExamples:\n\n  knntools x\n  --y\n"
    assert reflow(text) == ("First line wrapped.\n\nA paragraph wrapped by hand.\nReads: a file with rows.\nWrites: b."
                            "\n\nExamples:\n\n  knntools x\n  --y")
    assert reflow(None) is None


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("args", PAGES, ids=lambda a: a[0] if a else "knntools")
def test_help_reads_as_paragraphs(args: list[str], width: int) -> None:
    text = _render(args, width)
    assert "Usage:" in text
    assert max(len(line) for line in text.splitlines()) <= width
    assert ragged_lines(text, width) == []


#: The shared flags; each must have one spelling, one type and one help text in every command that
#: has it (the definitions live in knntools/cli/_options.py and _search_options.py).
SHARED = ["--seed", "--device", "--force", "--json", "--quiet", "--verbose", "--num-threads", "--batch-size",
          "--backend", "--metric", "--dataset", "--data-dir", "--download", "--split", "--workers", "--output",
          "--n-neighbors", "--k-sweep", "--layers", "--layer"]

#: Deliberate differences, (command, flag) -> why. Anything not listed here must match the shared
#: definition exactly.
EXCEPTIONS = {
    # the dataset defaults to the checkpoint's own training set
    ("embed", "--dataset"): "default taken from the checkpoint",
    # the seed only draws the train/test split of a table
    ("features", "--seed"): "seed of the train/test split",
    # hnsw determinism depends on the thread count; the help says so
    ("index", "--seed"): "hnsw level assignment and recall sample",
    # B is the out-of-core batch of the K-NN data generator, must exceed K (min 2)
    ("seq2knn", "--batch-size"): "out-of-core rows, must exceed K",
    # same help, but a kNet training batch needs at least 2 samples (min=2)
    ("distill-knet", "--batch-size"): "min 2",
    # small torch networks: 0 leaves torch's own default, and the default is 1 thread
    ("seq2knn", "--num-threads"): "torch threads, 0 = torch's default",
    ("oversample", "--num-threads"): "torch threads, 0 = torch's default",
}


def _signature(param) -> tuple:
    return (tuple(sorted(param.opts + param.secondary_opts)), param.bare_type(), param.is_flag, param.multiple,
            getattr(param, "min", None), getattr(param, "max", None), param.help)


def test_shared_flags_are_the_same_everywhere() -> None:
    group = typer.main.get_command(app)
    seen: dict[str, dict[tuple, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name, command in group.commands.items():
        for param in command.params:
            for flag in SHARED:
                if flag in param.opts and (name, flag) not in EXCEPTIONS:
                    seen[flag][_signature(param)].append(name)
    assert seen["--output"] and seen["--json"] and seen["--n-neighbors"]
    for flag, variants in seen.items():
        assert len(variants) == 1, f"{flag} differs between commands: {dict(variants)}"
    for name, flag in EXCEPTIONS:  # every exception still exists (drop it when it is fixed)
        assert any(flag in p.opts for p in group.commands[name].params), (name, flag)
