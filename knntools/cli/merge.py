"""``knntools merge``: join the parts of a sharded split into one plain file or a virtual set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import Force, Json, OutputPath, Quiet, Verbose
from knntools.cli._output import Output

HELP = """Join the parts of a sharded split (`knntools embed --shard I/N`, or `embed` under torchrun)
into one file.

The parts are checked first: same kind, model_uuid, dataset, split, classes, layers, dtypes and
widths; row ranges contiguous, non-overlapping and covering every row; one shard_count. They may be
given in any order. Without --virtual the rows are copied, in bounded chunks, into one plain file;
with --virtual nothing is copied: the output is a set whose datasets are HDF5 virtual datasets over
the parts (relative paths: keep the set beside its parts, or move the folder as a whole), and every
command opens it like one file. Either way the output has a new uuid and its parents are the
parts' uuids. On any error nothing is written.

Neighbour files written per shard of one base (`knntools index PART --query Q -k K -o nbrs_I.h5`,
one job per shard) are merged into the global top-k: the same neighbours as searching the whole
base with the exact backend, without any machine holding every shard.

Reads: PART files of kind activations or features that carry shard attributes, or per-shard
neighbors files.
Writes: one file of the parts' kind (docs/format.md, "Shards and sets").
"""

EPILOG = """Examples:

  knntools merge part0.h5 part1.h5 -o train.h5

  knntools merge --virtual train-0000*-of-00004.h5 -o train_set.h5

  knntools merge nbrs_0.h5 nbrs_1.h5 nbrs_2.h5 -o nbrs.h5
"""


def _merge_activations(paths: list[Path], output: Path, *, virtual: bool, force: bool) -> dict:
    """Merge ``activations``/``features`` parts; returns the summary fields."""
    from knntools.io.shards import check_parts, write_merged, write_virtual_set

    parts = check_parts(paths)
    uuid = (write_virtual_set if virtual else write_merged)(output, parts, force=force)
    return {"uuid": uuid, "kind": parts[0].attrs["kind"], "n_samples": parts[0].info.total_rows,
            "parts": [{"path": str(p.info.path), "uuid": p.info.uuid, "shard": f"{p.info.shard_index}/{p.info.shard_count}",
                       "row_start": p.info.row_start, "row_stop": p.info.row_stop} for p in parts]}


def _merge_neighbors(paths: list[Path], output: Path, *, virtual: bool, force: bool) -> dict:
    """Merge per-shard ``neighbors`` files (``index PART --query Q``) into the global top-k."""
    from knntools.errors import InputError
    from knntools.io.h5 import KFile
    from knntools.search.sharded import merge_neighbor_files

    if virtual:
        raise InputError(f"{paths[0]}: --virtual applies to activations/features parts; neighbors parts are merged into one file (drop --virtual)")
    uuid = merge_neighbor_files(paths, output, force=force)
    with KFile(output, kind="neighbors") as kf:
        n = int(kf.dataset("ids").shape[0])
    return {"uuid": uuid, "kind": "neighbors", "n_samples": n, "parts": [str(p) for p in paths]}


#: kind of the parts -> merge function (a new kind is one line here).
MERGERS: dict[str, Callable[..., dict]] = {
    "activations": _merge_activations,
    "features": _merge_activations,
    "neighbors": _merge_neighbors,
}


@handle_errors("merge")
def merge_cli(
    parts: Annotated[list[Path], typer.Argument(help="Part files (any order).", dir_okay=False)],
    output: OutputPath,
    virtual: Annotated[bool, typer.Option("--virtual", help="Write a set of HDF5 virtual datasets over the parts (no copy) instead of a plain file.")] = False,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    import time

    from knntools.errors import InputError
    from knntools.io.h5 import KFile, check_output_path

    out = Output("merge", json_mode=json_, quiet=quiet, verbose=verbose)
    check_output_path(output, force)
    for p in parts:
        if not p.is_file():
            raise InputError(f"{p}: no such file; expected a part file")
        if p.resolve() == output.resolve():
            raise InputError(f"{output}: is also a part; expected a new output path")
    with KFile(parts[0]) as kf:
        kind = kf.kind
    merger = MERGERS.get(kind)
    if merger is None:
        raise InputError(f"{parts[0]}: merging files of kind '{kind}' is not supported; expected {' or '.join(MERGERS)} parts")
    t0 = time.perf_counter()
    summary = merger(list(parts), output, virtual=virtual, force=force)
    elapsed = time.perf_counter() - t0
    out.info(f"{output}: {'virtual set over' if virtual else 'merged'} {len(parts)} parts, {summary['n_samples']} rows ({elapsed:.2f} s)")
    out.result({"command": "merge", "output": str(output), "virtual": virtual, **summary, "time_s": elapsed}, output)
