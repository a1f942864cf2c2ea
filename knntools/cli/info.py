"""``knntools info``: describe knntools HDF5 files (the h5ls of knntools)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import Json, Quiet, Verbose
from knntools.cli._output import Output

HELP = """Show a knntools file's kind, provenance, datasets (shape, dtype) and attributes.

Reads: any knntools HDF5 file (labels, activations, features, predictions, neighbors, table).
Writes: nothing. With --json: {"files": [...]} on stdout.
"""

EPILOG = """Examples:

  knntools info labels.h5

  knntools info train.h5 test.h5 --json | jq '.files[].datasets'
"""

PROVENANCE = ("kind", "format_version", "uuid", "parents", "knntools_version", "created", "command", "seed")


def describe(path: Path) -> dict[str, Any]:
    """Describe one file: provenance, attributes, datasets (name → shape, dtype, attrs)."""
    import h5py

    from knntools.io.h5 import KFile, read_attrs

    with KFile(path) as kf:
        datasets: dict[str, Any] = {}

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                datasets[name] = {"shape": list(obj.shape), "dtype": str(obj.dtype), "attrs": read_attrs(obj)}

        kf.f.visititems(visit)
        attrs = dict(kf.attrs)
        return {
            "path": str(path),
            "kind": kf.kind,
            "n_samples": kf.n_samples,
            "provenance": {k: attrs.get(k) for k in PROVENANCE},
            "attrs": {k: v for k, v in attrs.items() if k not in PROVENANCE and k != "format"},
            "datasets": datasets,
        }


@handle_errors("info")
def info_cli(
    files: Annotated[list[Path], typer.Argument(help="knntools HDF5 files.", dir_okay=False)],
    json_: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    out = Output("info", json_mode=json_, quiet=quiet, verbose=verbose)
    infos = [describe(p) for p in files]
    if json_:
        out.result({"command": "info", "files": infos})
        return
    import json

    from rich.console import Console
    from rich.table import Table

    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)  # info's human output *is* its result: stdout
    for d in infos:
        console.print(f"[bold]{d['path']}[/bold]: knntools {d['kind']} file, {d['n_samples']} samples")
        for k, v in d["provenance"].items():
            console.print(escape(f"  {k:17s} {json.dumps(v) if isinstance(v, (list, dict)) else v}"))
        for k, v in d["attrs"].items():
            text = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
            console.print(escape(f"  {k:17s} {text if len(text) < 200 or verbose else text[:197] + '...'}"))
        t = Table(show_edge=False, header_style="bold", pad_edge=False)
        for c in ("dataset", "shape", "dtype", "attrs"):
            t.add_column(c)
        for name, ds in d["datasets"].items():
            a = ", ".join(f"{k}={v}" for k, v in ds["attrs"].items() if k != "axis0")
            t.add_row(escape(name), "×".join(str(s) for s in ds["shape"]) or "scalar", ds["dtype"], escape(a[:80]))
        console.print(t)
