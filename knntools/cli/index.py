"""``knntools index``: build nearest-neighbour indexes of an activations/features file, and query them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import Device, Force, Json, K, Layers, NumThreads, OptOutputPath, Quiet, Verbose
from knntools.cli._output import Output
from knntools.cli._search_options import Backend, CheckRecall, Ef, EfConstruction, HnswM, IndexPath, Metric, Precision, search_params
from knntools.errors import InputError

HELP = """Build a nearest-neighbour index of one or all layers of an activations or features file, and optionally search it with the rows of a second file.

Without --query, one index per layer is saved beside DATA as <stem>.<layer>.hnsw (or at -o for one layer) with a JSON sidecar <stem>.<layer>.hnsw.json recording the source file's uuid, the layer, backend, metric and parameters; reusing it with --index on another file or layer is refused. With --query, the k nearest training rows of every query row are written to a neighbors file (-o), and --check-recall N compares hnsw with exact search on N sampled queries. Distances are sorted ascending: Euclidean (not squared) for l2, 1 - cosine similarity for cosine, the negative inner product for ip.

Shards (docs/index.md, "Shards"): DATA may be one shard of a split (a file with shard_index/row_start attributes, e.g. from `embed --shard I/N`): its index is built beside it, and with --query the neighbors file holds GLOBAL rows of the split and records the shard's row range, ready for `knntools merge` (one job per shard, e.g. a SLURM array). Given several shards (or a sharded set), one index is built per shard beside each part, and --query searches them one shard at a time, merging the per-shard top-k into the global top-k (identical to the whole split with --backend exact).

Reads: DATA and --query: layers/<name>, logits or features [N, D]; ids [N]; labels [N].

Writes: <stem>.<layer>.hnsw + .json (without --query, or with --save-index); with --query a neighbors file: neighbors/<layer>/ids int64 [N, k] (training ids), neighbors/<layer>/indices int64 [N, k] (rows), neighbors/<layer>/distances float32 [N, k], ids [N], labels [N]; attrs metric, k, backend, distance_units, params.

DOCS: docs/index.md
"""

EPILOG = """Examples:

  knntools index train.h5 --layers all

  knntools index train.h5 --layers penultimate --metric cosine --M 32 --ef-construction 200

  knntools index train.h5 --layers penultimate --query test.h5 -k 10 -o nbrs.h5 --check-recall 1000 --json

  knntools index train.h5 --layers penultimate --backend exact --query test.h5 -k 10 -o nbrs_exact.h5

  knntools index train.h5 --layers penultimate --index train.penultimate.hnsw --query test.h5 -k 75 -o n.h5

  knntools index part0.h5 part1.h5 part2.h5 --layers penultimate          # one index per shard

  knntools index part1.h5 --layers penultimate --backend exact --query test.h5 -k 75 -o nbrs_1.h5   # per-shard job
"""

NO_ARGS_IS_HELP = True

KINDS = ("activations", "features")


@handle_errors("index")
def index_cli(
    ctx: typer.Context,
    data: Annotated[list[Path], typer.Argument(help="Activations or features file; or several shards of one split (or a sharded set).", metavar="DATA", dir_okay=False)],
    layers: Layers = "all",
    query: Annotated[Optional[Path], typer.Option("--query", help="Search the index with the rows of this activations/features file (same model, same layers).", dir_okay=False)] = None,
    k: K = 10,
    output: OptOutputPath = None,
    backend: Backend = "hnsw",
    metric: Metric = "l2",
    M: HnswM = None,
    ef_construction: EfConstruction = None,
    ef: Ef = None,
    index: IndexPath = None,
    save_index: Annotated[bool, typer.Option("--save-index", help="With --query: also save the built index(es) beside DATA.")] = False,
    check_recall: CheckRecall = None,
    num_threads: NumThreads = 0,
    device: Device = "auto",
    precision: Precision = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (hnsw level assignment, --check-recall sample). An hnsw index file is byte-identical for the same seed and data with --num-threads 1; with several threads hnswlib's insertion order varies.")] = 0,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Build (and optionally query) nearest-neighbour indexes; see ``HELP``."""
    import contextlib

    from knntools.io.h5 import KFile
    from knntools.io.neighbors import write_neighbors
    from knntools.search.base import check_k
    from knntools.search.files import check_query, resolve_base_shards, search_file_layers

    out = Output("index", json_mode=json_, quiet=quiet, verbose=verbose)
    shards, set_uuid = resolve_base_shards(data)
    if shards is not None and len(shards) > 1:
        params = search_params(backend, M=M, ef_construction=ef_construction, ef=ef, num_threads=num_threads, seed=seed, device=device)
        return _index_parts(shards, set_uuid, data, layers=layers, query=query, k=k, output=output, backend=backend, metric=metric,
                            params=params, index=index, save_index=save_index, check_recall=check_recall, seed=seed, force=force, out=out)
    data = data[0]
    shard = shards[0] if shards else None  # DATA is one shard of a split: global rows in the neighbours file
    with contextlib.ExitStack() as files:
        kf = files.enter_context(KFile(data, kind=KINDS))
        names = kf.resolve_layers(layers)
        if index is not None:  # a saved index: its backend and metric, checked against the file and layer
            backend, metric = _check_saved_index(index, kf, names, query, M, ef_construction,
                                                 {name: value for name, value in (("backend", backend), ("metric", metric)) if _given(ctx, name)})
        build_params = search_params(backend, M=M, ef_construction=ef_construction, ef=ef, num_threads=num_threads, seed=seed, device=device, precision=precision)
        _check_modes(backend, query, output, index, save_index, check_recall, force)
        qkf = files.enter_context(KFile(query, kind=KINDS)) if query is not None else None
        self_query, in_query_set = check_query(kf, qkf, names, k, shard=shard, data_path=data, query_path=query)
        if in_query_set and check_recall is not None:
            raise InputError(f"--check-recall: not available when a shard is searched with its own set ({query}); run it on the merged result's base instead")
        if query is None and check_recall is not None:
            check_k(k, kf.n_samples)
        save = _index_destinations(files, data, names, query, output, save_index, backend, force)
        found = search_file_layers(kf, names, query=qkf, k=k, backend=backend, metric=metric, params=build_params, index=index, save=save, shard=shard,
                                   self_query=self_query, in_query_set=in_query_set, check_recall=check_recall, device=device,
                                   num_threads=num_threads or None, seed=seed, source=data, log=out.info,
                                   query_params={"ef": ef, "num_threads": num_threads or None} if backend == "hnsw" and index is not None else None)
        if qkf is not None:
            shard_attrs = {f"base_{key}": value for key, value in shard.as_attrs().items()} | {"base_model_uuid": str(kf.attrs.get("model_uuid") or "")} if shard is not None else {}
            write_neighbors(
                output, layers=found.neighbors, query_ids=qkf.ids(), query_labels=qkf.read_labels("labels") if qkf.has("labels") else None,
                metric=metric, distance_units=found.distance_units, k=k, backend=backend, params=found.params, classes=kf.classes,
                layer_attrs={n: {"n_features": r["n_features"], "index": r["index"] or "", "recall_at_k": r.get("recall_at_k", -1.0)} for n, r in found.report.items()},
                attrs={"base_uuid": kf.uuid, "query_uuid": qkf.uuid, "exclude_self": self_query, **shard_attrs},
                parents=[kf.uuid, qkf.uuid], seed=seed if backend == "hnsw" else None, force=force)
    indexes = [final for _, _, final in save.values()]
    _report(out, found, f"{backend} ({metric}) on {data.name}", query, check_recall, k, output, indexes, backend, metric, {
        "command": "index", "input": str(data), "input_uuid": kf.uuid, "shard": shard.as_attrs() if shard is not None else None})


def _check_saved_index(index: Path, kf: Any, names: list[str], query: Optional[Path], M: Optional[int], ef_construction: Optional[int],
                       given: dict[str, Any]) -> tuple[str, str]:
    """Check ``--index`` against DATA and the layer; return its (backend, metric)."""
    from knntools.search import registry

    if query is None:
        raise InputError(f"--index {index}: nothing to do without --query FILE (the index is already built)")
    if len(names) != 1:
        raise InputError(f"--index: one index serves one layer; expected --layers NAME (got {len(names)} layers: {', '.join(names)})")
    for flag, value in (("--M", M), ("--ef-construction", ef_construction)):
        if value is not None:
            raise InputError(f"{flag}: applies when building; --index {index} is already built")
    header = registry.read_index_header(index)
    registry.check_index_matches(index, header, {"source_uuid": kf.uuid, "layer": names[0], "n_samples": kf.n_samples, **given})
    return header["backend"], header["metric"]


def _check_modes(backend: str, query: Optional[Path], output: Optional[Path], index: Optional[Path], save_index: bool,
                 check_recall: Optional[int], force: bool) -> None:
    """Refuse option combinations that do not go together (before any work)."""
    from knntools.io.h5 import check_output_path

    if backend == "exact" and query is None:
        raise InputError("--backend exact: exact search has no index to save; give --query FILE -o OUT to search, or use --backend hnsw")
    if save_index and (query is None or index is not None or backend == "exact"):
        why = "without --query every built index is saved" if query is None else "--index is already saved" if index is not None else "the exact backend has no index to save"
        raise InputError(f"--save-index: {why}")
    if check_recall is not None and backend != "hnsw":
        raise InputError(f"--check-recall: compares hnsw with exact search; expected --backend hnsw (got {backend})")
    if query is not None:
        if output is None:
            raise InputError("--query: expected -o/--output PATH for the neighbors file")
        check_output_path(output, force)


def _index_destinations(files: Any, data: Path, names: list[str], query: Optional[Path], output: Optional[Path], save_index: bool,
                        backend: str, force: bool) -> dict[str, tuple[Path, Path, Path]]:
    """Where each built index is saved: layer -> (temporary payload, temporary header, final path), all checked now."""
    from knntools.search import registry

    dests: dict[str, Path] = {}
    if query is None or save_index:
        if output is not None and query is None:
            if len(names) != 1:
                raise InputError(f"-o: names one index file but --layers selects {len(names)} layers ({', '.join(names)}); omit -o to save each beside {data.name}")
            dests[names[0]] = output
        else:
            dests = {name: registry.default_index_path(data, name, backend) for name in names}
    return _open_index_outputs(files, dests, force)


def _open_index_outputs(files: Any, dests: dict[Any, Path], force: bool) -> dict[Any, tuple[Path, Path, Path]]:
    """Check every destination first, then open each atomically: key -> (temporary payload, temporary header, final path)."""
    from knntools.io.h5 import atomic_path, check_output_path
    from knntools.search.base import header_path

    for dest in dests.values():
        check_output_path(dest, force)
    save = {}
    for key, dest in dests.items():
        tmp_header = files.enter_context(atomic_path(header_path(dest), force=force))
        save[key] = (files.enter_context(atomic_path(dest, force=force)), tmp_header, dest)
    return save


def _report(out: Output, found: Any, title: str, query: Optional[Path], check_recall: Optional[int], k: int, output: Optional[Path],
            indexes: list[Path], backend: str, metric: str, head: dict[str, Any]) -> None:
    """The table on stderr and the --json summary."""
    shards = "shards" in head
    columns = ["layer", "n_features"] + (["shards"] if shards else []) + ["build s"] + (["search s", "q/s"] if query is not None else []) + ([f"recall@{k}"] if check_recall else [])
    out.table(title, columns, [[n, r["n_features"]] + ([r["shards"]] if shards else []) + [f"{r['build_seconds']:.2f}"]
                               + ([f"{r['search_seconds']:.2f}", int(r["queries_per_second"])] if query is not None else [])
                               + ([r["recall_at_k"]] if check_recall else []) for n, r in found.report.items()])
    out.result({
        **head,
        "query": str(query) if query is not None else None,
        "output": str(output) if query is not None else None,
        "indexes": [str(p) for p in indexes],
        "backend": backend,
        "metric": metric,
        "k": k if (query is not None or check_recall) else None,
        "params": found.params,
        "layers": found.report,
    }, ([str(output)] if query is not None else []) + [str(p) for p in indexes])


def _index_parts(shards: Any, set_uuid: str, data: list[Path], *, layers: str, query: Path | None, k: int, output: Path | None, backend: str, metric: str,
                 params: dict[str, Any], index: Path | None, save_index: bool, check_recall: int | None, seed: int, force: bool, out: Output) -> None:
    """``knntools index`` on several shards: one index per shard beside its part, or a search across them (global rows)."""
    import contextlib

    from knntools.io.h5 import KFile, check_output_path
    from knntools.io.neighbors import write_neighbors
    from knntools.search import registry
    from knntools.search.files import check_shards, index_shards, search_shards

    for flag, value in (("--index", index), ("--save-index", save_index or None), ("--check-recall", check_recall)):
        if value is not None:
            raise InputError(f"{flag}: not available with several shards; build each shard's index with `knntools index PART`, and measure recall on one shard")
    if backend == "exact" and query is None:
        raise InputError("--backend exact: exact search has no index to save; give --query FILE -o OUT to search, or use --backend hnsw")
    with contextlib.ExitStack() as files:
        kfs = [files.enter_context(KFile(info.path, kind=KINDS)) for info in shards]
        names = kfs[0].resolve_layers(layers)
        check_shards(shards, kfs, names)
        dests: list[Path] = []
        if query is None:
            if output is not None:
                raise InputError("-o: with several shards each shard's index is saved beside its part; omit -o (or give --query FILE -o OUT)")
            todo = {(pos, name): registry.default_index_path(info.path, name, backend) for pos, info in enumerate(shards) for name in names}
            save = _open_index_outputs(files, todo, force)
            dests.extend(todo.values())
            found = index_shards(shards, kfs, names, save, backend=backend, metric=metric, params=params, log=out.info)
        else:
            if output is None:
                raise InputError("--query: expected -o/--output PATH for the neighbors file")
            check_output_path(output, force)
            qkf = files.enter_context(KFile(query, kind=KINDS))
            found = search_shards(shards, kfs, names, qkf, k, set_uuid=set_uuid, query_path=query, backend=backend, metric=metric, params=params, log=out.info)
            total = shards[0].total_rows
            write_neighbors(
                output, layers=found.neighbors, query_ids=qkf.ids(), query_labels=qkf.read_labels("labels") if qkf.has("labels") else None,
                metric=metric, distance_units=found.distance_units, k=k, backend=backend, params=found.params, classes=kfs[0].classes,
                layer_attrs={n: {"n_features": found.report[n]["n_features"], "index": "", "recall_at_k": -1.0} for n in names},
                attrs={"base_uuid": set_uuid, "base_part_uuids": [kf.uuid for kf in kfs], "base_total_rows": total, "query_uuid": qkf.uuid, "exclude_self": found.self_query},
                parents=[kf.uuid for kf in kfs] + [qkf.uuid], seed=seed if backend == "hnsw" else None, force=force,
            )
    _report(out, found, f"{backend} ({metric}) on {len(shards)} shards", query, None, k, output, dests, backend, metric, {
        "command": "index", "input": [str(p) for p in data], "input_uuid": set_uuid or None,
        "shards": [i.as_attrs() | {"path": str(i.path)} for i in shards]})


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
