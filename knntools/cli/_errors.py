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


def handle_errors(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command function so errors become one-line messages and exit codes.

    :class:`~knntools.errors.InputError` → exit 2, other :class:`KnnToolsError` and unexpected
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
                print(error_line(command, str(exc)), file=sys.stderr)
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
