"""``knntools info``: describe knntools HDF5 files (the h5ls of knntools)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import Json, Quiet, Verbose
from knntools.cli._output import Output

HELP = """Show a knntools file's kind, provenance, datasets (shape, dtype) and attributes.

Reads: any knntools HDF5 file (labels, activations, features, predictions, neighbors, table), or a
knntools checkpoint (.pt from train, distill-knet, seq2knn: its header, never executing code).
Writes: nothing. With --json: {"files": [...]} on stdout.
"""

EPILOG = """Examples:

  knntools info labels.h5

  knntools info train.h5 test.h5 --json | jq '.files[].datasets'
"""

PROVENANCE = ("kind", "format_version", "uuid", "parents", "knntools_version", "created", "command", "seed")


def _summarise(obj: Any, depth: int = 0) -> Any:
    """Checkpoint header as JSON-able values; tensors become "tensor[shape] dtype"."""
    import torch

    if isinstance(obj, torch.Tensor):
        if obj.numel() <= 8 and obj.dim() <= 1:
            return obj.tolist()
        return f"tensor[{'x'.join(str(s) for s in obj.shape)}] {str(obj.dtype).replace('torch.', '')}"
    if isinstance(obj, dict):
        if depth >= 2 and len(obj) > 12:
            return f"<{len(obj)} entries>"
        return {str(k): _summarise(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        if len(obj) > 16:
            return f"<list of {len(obj)}>"
        return [_summarise(v, depth + 1) for v in obj]
    return obj


def describe_checkpoint(path: Path) -> dict[str, Any]:
    """Describe a knntools ``.pt`` checkpoint of any kind (model, knet, seq2knn; current or earlier format).

    Read with :func:`knntools.models.checkpoint.read_checkpoint` (``torch.load(weights_only=True)``).

    Raises
    ------
    InputError
        Missing file; SchemaError: not loadable safely, or not a knntools checkpoint.
    """
    from knntools.models.checkpoint import read_checkpoint

    obj = read_checkpoint(path)
    prov = obj.get("provenance") if isinstance(obj.get("provenance"), dict) else {}
    if not prov and isinstance(obj.get("meta"), dict):  # kNet checkpoints keep theirs under "meta"
        prov = obj["meta"]
    # a model checkpoint's identity is its model_uuid; kNet/seq2knn checkpoints record the model_uuid
    # of the network they were distilled from, which is not their own identity
    uuid = (prov.get("model_uuid") if obj["kind"] == "model" else None) or obj.get("uuid") or prov.get("uuid")
    parents = prov.get("parents") or obj.get("parents") or [u for u in (prov.get("labels_uuid"), prov.get("source_uuid"), obj.get("source_uuid")) if u]
    header = {k: _summarise(v) for k, v in obj.items() if k not in ("state_dict", "training_state")}
    n_params = sum(int(t.numel()) for t in (obj.get("state_dict") or {}).values() if hasattr(t, "numel"))
    return {
        "path": str(path),
        "kind": "checkpoint",
        "format": obj.get("format"),
        "checkpoint_kind": obj["kind"],
        "n_parameters": n_params,
        "provenance": {"uuid": uuid, "parents": parents, "command": prov.get("command") or obj.get("command"),
                       "created": prov.get("created") or obj.get("created"), "knntools_version": prov.get("knntools_version") or obj.get("knntools_version")},
        "attrs": header,
        "datasets": {},
    }


def describe_index(path: Path) -> dict[str, Any]:
    """Describe a saved search index through its JSON sidecar (``<index>.json``)."""
    from knntools.search import read_index_header

    header = read_index_header(path)
    meta = header.get("metadata") or {}
    return {
        "path": str(path),
        "kind": "index",
        "format": header.get("format"),
        "n_samples": header.get("n_samples"),
        "provenance": {"uuid": None, "parents": [meta["source_uuid"]] if meta.get("source_uuid") else [],
                       "command": header.get("command"), "created": header.get("created"),
                       "knntools_version": header.get("knntools_version")},
        "attrs": {k: v for k, v in header.items() if k not in ("created", "knntools_version", "format")},
        "datasets": {},
    }


def describe(path: Path) -> dict[str, Any]:
    """Describe one file: provenance, attributes, datasets (name → shape, dtype, attrs)."""
    import h5py

    if Path(path).suffix.lower() in (".pt", ".pth"):
        return describe_checkpoint(Path(path))
    if Path(path).suffix.lower() in (".hnsw", ".idx", ".index") or Path(str(path) + ".json").is_file():
        return describe_index(Path(path))
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
        if d["kind"] == "index":
            console.print(escape(f"{d['path']}: knntools search index ({d['attrs'].get('backend')}, {d['attrs'].get('metric')}), {d['n_samples']} vectors"))
        elif d["kind"] == "checkpoint":
            console.print(escape(f"{d['path']}: knntools {d['checkpoint_kind']} checkpoint ({d['format']}), {d['n_parameters']:,} parameters"))
        else:
            console.print(escape(f"{d['path']}: knntools {d['kind']} file, {d['n_samples']} samples"))
        for k, v in d["provenance"].items():
            console.print(escape(f"  {k:17s} {json.dumps(v) if isinstance(v, (list, dict)) else v}"))
        for k, v in d["attrs"].items():
            text = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
            console.print(escape(f"  {k:17s} {text if len(text) < 200 or verbose else text[:197] + '...'}"))
        if not d["datasets"]:
            continue
        t = Table(show_edge=False, header_style="bold", pad_edge=False)
        for c in ("dataset", "shape", "dtype", "attrs"):
            t.add_column(c)
        for name, ds in d["datasets"].items():
            a = ", ".join(f"{k}={v}" for k, v in ds["attrs"].items() if k != "axis0")
            t.add_row(escape(name), "×".join(str(s) for s in ds["shape"]) or "scalar", ds["dtype"], escape(a[:80]))
        console.print(t)
