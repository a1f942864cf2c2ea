"""The ``knntools`` command-line interface.

Commands are registered explicitly in :data:`COMMANDS` (only finished commands). Importing this
package must stay fast: no torch, hnswlib or scikit-learn at import time (shell completion re-runs
the program on every TAB); command modules import heavy libraries inside their functions.
"""

from __future__ import annotations

import importlib
import re
import signal
import sys
from typing import Any, Optional

import typer

from knntools import __version__

#: (command name, module, function) — the explicit registration list, in help order.
COMMANDS: list[tuple[str, str, str]] = [
    ("noise", "knntools.cli.noise", "noise_cli"),
    ("info", "knntools.cli.info", "info_cli"),
    ("features", "knntools.cli.features", "features_cli"),
    ("train", "knntools.cli.train", "train_cli"),
    ("embed", "knntools.cli.embed", "embed_cli"),
    ("index", "knntools.cli.index", "index_cli"),
    ("seq2knn", "knntools.cli.seq2knn", "seq2knn_cli"),
    ("oversample", "knntools.cli.oversample", "oversample_cli"),
    ("dknn", "knntools.cli.dknn", "dknn_cli"),
    ("lasenn", "knntools.cli.lasenn", "lasenn_cli"),
    ("distill-knet", "knntools.cli.distill_knet", "distill_knet_cli"),
    ("probe", "knntools.cli.probe", "probe_cli"),
    ("merge", "knntools.cli.merge", "merge_cli"),
]

app = typer.Typer(
    name="knntools",
    help="Composable tools for deep k-nearest-neighbour methods: train a network, dump its activations "
    "to HDF5, index them, and run DkNN, LaSeNN, kNet, seq2knn and probes on them.",
    epilog="Every command reads and writes knntools HDF5 files; `knntools info FILE` shows one. "
    "Machine output goes to stdout (--json), messages to stderr.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"knntools {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", help="Print the version and exit.", callback=_version_callback, is_eager=True),
) -> None:
    """Composable tools for deep k-nearest-neighbour methods."""


#: A line that starts a new line of its own inside a paragraph: indented (an example command or a
#: table), a list item, or a "Label:" line such as "Reads:" / "Writes:".
_KEEP_LINE = re.compile(r"^(\s|[-*•] |\$ |[A-Z][A-Za-z /()-]{0,30}:(\s|$))")


def reflow(text: Optional[str]) -> Optional[str]:
    """Join the hand-wrapped lines of each paragraph of a HELP/EPILOG string into one line.

    With ``rich_markup_mode="rich"`` typer keeps single newlines after the first paragraph, so a
    docstring wrapped by hand at ~100 columns would be re-wrapped by rich into ragged lines. Each
    paragraph (separated by a blank line) becomes one line that rich flows to the terminal width;
    a line kept apart by :data:`_KEEP_LINE` (indented examples, list items, "Reads:"/"Writes:")
    stays on its own line, and a paragraph starting with ``\\b`` is left verbatim.
    """
    if not text:
        return text
    paragraphs = []
    for para in text.strip("\n").split("\n\n"):
        if para.startswith("\b"):
            paragraphs.append(para)
            continue
        lines: list[str] = []
        for line in para.split("\n"):
            if lines and line.strip() and not _KEEP_LINE.match(line) and not lines[-1][:1].isspace():
                lines[-1] = f"{lines[-1].rstrip()} {line.strip()}"
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _register() -> None:
    for name, module_name, func_name in COMMANDS:
        module = importlib.import_module(module_name)
        func = getattr(module, func_name)
        app.command(
            name,
            epilog=reflow(getattr(module, "EPILOG", None)),
            help=reflow(getattr(module, "HELP", None)),
            no_args_is_help=getattr(module, "NO_ARGS_IS_HELP", False),
        )(func)


_register()


#: Flags after which nothing is computed or written (the command line needs no recording).
_HELP_ONLY = frozenset({"-h", "--help", "--version", "--show-completion", "--install-completion"})


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point: run the app, turn usage errors into one-line messages (exit 2)."""
    from knntools.cli._compat import ClickException, UsageError
    from knntools.cli._errors import error_line

    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `knntools … --json | head` stays quiet
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not _HELP_ONLY.intersection(args):
        from knntools.cli._deprecated import apply_deprecations

        args = apply_deprecations(args)  # old flag spellings, one release (warning on stderr)
    if args and not _HELP_ONLY.intersection(args):  # help and version write no file: no numpy/h5py import for them
        from knntools.io import h5

        h5.set_command_line(["knntools", *args])
    try:
        rv: Any = app(args=args, prog_name="knntools", standalone_mode=False)
    except UsageError as exc:
        # one line (README: errors are one line on stderr), the --help hint at its end
        ctx = exc.ctx
        cmd = ctx.info_name if ctx is not None and ctx.info_name != "knntools" else None
        hint = f"knntools {cmd} --help" if cmd else "knntools --help"
        message = f"{exc.format_message()} (see '{hint}')"
        print(error_line(cmd, message) if cmd else f"knntools: error: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("knntools: interrupted", file=sys.stderr)
        sys.exit(130)
    except ClickException as exc:
        print(f"knntools: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 1))
    except typer.Exit as exc:
        sys.exit(getattr(exc, "exit_code", 0))
    sys.exit(rv if isinstance(rv, int) else 0)
