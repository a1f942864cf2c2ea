"""The output sink: machine output on stdout, everything for humans on stderr.

With ``--json`` exactly one JSON object is printed on stdout (:meth:`Output.result`); otherwise
stdout carries only the output path(s). Messages, tables and progress go to stderr through rich;
progress is shown only when stderr is a terminal and not ``--quiet``.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from rich.console import Console
from rich.table import Table


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        obj = obj.item()
    elif isinstance(obj, np.ndarray):
        return [_jsonable(x) for x in obj.tolist()]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


class Output:
    """Where a command reports.

    Parameters
    ----------
    command : str     subcommand name (for message prefixes)
    json_mode : bool  print one JSON object on stdout at the end
    quiet : bool      suppress human messages and progress on stderr (errors still print)
    verbose : bool    extra detail (and tracebacks, handled by ``_errors``)
    """

    def __init__(self, command: str, *, json_mode: bool = False, quiet: bool = False, verbose: bool = False):
        self.command = command
        self.json_mode = json_mode
        self.quiet = quiet
        self.verbose = verbose
        self.console = Console(stderr=True, quiet=quiet, highlight=False, soft_wrap=True)
        self._result_printed = False

    # -- human output (stderr) ------------------------------------------------------------
    def info(self, message: str) -> None:
        """A human message on stderr (hidden by --quiet)."""
        self.console.print(message)

    def detail(self, message: str) -> None:
        """A message shown only with --verbose."""
        if self.verbose:
            self.console.print(f"[dim]{message}[/dim]")

    def warn(self, message: str) -> None:
        """``Warning: …`` on stderr (shown even with --quiet)."""
        print(f"knntools {self.command}: warning: {message}", file=sys.stderr)

    def table(self, title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """A rich table on stderr; floats shown with 4 decimals."""
        t = Table(title=title, show_edge=False, header_style="bold")
        for c in columns:
            t.add_column(str(c), justify="right" if c not in ("layer", "classifier", "method", "split", "name", "kind") else "left")
        for r in rows:
            t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r])
        self.console.print(t)

    @property
    def show_progress(self) -> bool:
        return not self.quiet and sys.stderr.isatty()

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[Any]:
        """Context manager yielding ``advance(n=1, **fields)``; a rich bar on a terminal, else a no-op."""
        if not self.show_progress:
            yield lambda n=1, **kw: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"), console=self.console, transient=True,
        ) as prog:
            task = prog.add_task(description, total=total, status="")

            def advance(n: int = 1, **fields: Any) -> None:
                status = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
                prog.update(task, advance=n, status=status)

            yield advance

    # -- machine output (stdout) ----------------------------------------------------------
    def result(self, summary: dict[str, Any], outputs: Sequence[str | Path] | str | Path | None = None) -> None:
        """Finish: with --json print ``summary`` as one JSON object, else print the output path(s)."""
        if self._result_printed:
            raise RuntimeError("Output.result called twice")
        self._result_printed = True
        if self.json_mode:
            sys.stdout.write(json.dumps(_jsonable(summary), sort_keys=False) + "\n")
        elif outputs is not None:
            outs = [outputs] if isinstance(outputs, (str, Path)) else list(outputs)
            for o in outs:
                sys.stdout.write(f"{o}\n")
        sys.stdout.flush()
