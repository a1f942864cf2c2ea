"""Error handling for commands: one-line messages, exit codes 0 / 1 runtime / 2 bad input.

``knntools <cmd>: error: <message>`` on stderr; the full traceback only with ``-v/--verbose``
(or ``KNNTOOLS_TRACEBACK=1``).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from typing import Any, Callable

import typer

from knntools.errors import KnnToolsError


def error_line(command: str, message: str) -> str:
    """Format the one-line error printed on stderr."""
    first = " ".join(str(message).split("\n")).strip()
    return f"knntools {command}: error: {first}"


def option_flag(param: str | None) -> str | None:
    """The running command's flag for the Python parameter ``param`` (``"data_dir"`` → ``"--data-dir"``).

    Looks the name up among the click parameters of the current command; returns its longest
    ``--`` spelling (its first spelling when it has none), or ``None`` outside a command, when
    ``param`` is ``None`` or when the command has no option of that name.
    """
    if not param:
        return None
    from knntools.cli._compat import get_current_context

    ctx = get_current_context(silent=True)
    if ctx is None or ctx.command is None:
        return None
    for p in ctx.command.params:
        if p.name == param and getattr(p, "opts", None) and p.param_type_name == "option":
            longs = [o for o in p.opts if o.startswith("--")]
            return max(longs, key=len) if longs else p.opts[0]
    return None


def exception_line(command: str, exc: KnnToolsError) -> str:
    """The one-line message of a :class:`KnnToolsError`, prefixed with the flag its ``param`` names."""
    message = str(exc)
    flag = option_flag(getattr(exc, "param", None))
    if flag is not None:
        message = f"{flag}: {message}"
    return error_line(command, message)


def handle_errors(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command function so errors become one-line messages and exit codes.

    :class:`~knntools.errors.InputError` → exit 2 (an error whose ``param`` names one of the
    command's options is prefixed with that option's flag: ``--rate: noise rate 1.5: ...``), other :class:`KnnToolsError` and unexpected
    exceptions → exit 1, ``KeyboardInterrupt`` → exit 130. The wrapped function keeps its
    signature (typer reads it through ``__wrapped__``).
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            verbose = bool(kwargs.get("verbose")) or os.environ.get("KNNTOOLS_TRACEBACK") == "1"
            try:
                return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort):
                raise
            except KnnToolsError as exc:
                if verbose:
                    traceback.print_exc(file=sys.stderr)
                print(exception_line(command, exc), file=sys.stderr)
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt:
                print(f"knntools {command}: interrupted; no output written", file=sys.stderr)
                raise typer.Exit(130) from None
            except Exception as exc:  # unexpected: runtime failure
                from knntools.cli._compat import ClickException

                if isinstance(exc, ClickException):
                    raise
                if verbose:
                    traceback.print_exc(file=sys.stderr)
                hint = "" if verbose else " (run with -v for the traceback)"
                print(error_line(command, f"{type(exc).__name__}: {exc}{hint}"), file=sys.stderr)
                raise typer.Exit(1) from None

        return wrapper

    return deco
