"""``knntools index``: build nearest-neighbour indexes of an activations/features file, and query them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from knntools.cli._errors import handle_errors
from knntools.cli._options import Device, Force, Json, K, Layers, NumThreads, OptOutputPath, Quiet, Verbose
from knntools.cli._output import Output
from knntools.cli._search_options import Backend, CheckRecall, Ef, EfConstruction, HnswM, IndexPath, Metric, Precision, search_params

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

    import numpy as np

    from knntools.errors import InputError
    from knntools.io.h5 import KFile, atomic_path, check_output_path, check_same_source
    from knntools.search import registry
    from knntools.search.base import check_k, header_path

    from knntools.search.sharded import ShardedIndex, set_part_infos

    out = Output("index", json_mode=json_, quiet=quiet, verbose=verbose)
    explicit = {name for name in ("backend", "metric") if _given(ctx, name)}
    shards, set_uuid = _base_shards(data)
    if shards is not None and len(shards) > 1:
        return _index_parts(shards, set_uuid, data, layers=layers, query=query, k=k, output=output, backend=backend, metric=metric,
                            params=search_params(backend, M=M, ef_construction=ef_construction, ef=ef, num_threads=num_threads, seed=seed, device=device),
                            index=index, save_index=save_index, check_recall=check_recall, seed=seed, force=force, out=out)
    data = data[0]
    shard = shards[0] if shards else None  # DATA is one shard of a split: global rows in the neighbours file

    with contextlib.ExitStack() as files:
        kf = files.enter_context(KFile(data, kind=KINDS))
        names = kf.resolve_layers(layers)
        n_base = kf.n_samples

        # -- what will be used: a saved index, or a backend to build ------------------------
        header: dict[str, Any] | None = None
        if index is not None:
            if query is None:
                raise InputError(f"--index {index}: nothing to do without --query FILE (the index is already built)")
            if len(names) != 1:
                raise InputError(f"--index: one index serves one layer; expected --layers NAME (got {len(names)} layers: {', '.join(names)})")
            for flag, value in (("--M", M), ("--ef-construction", ef_construction)):
                if value is not None:
                    raise InputError(f"{flag}: applies when building; --index {index} is already built")
            header = registry.read_index_header(index)
            expected: dict[str, Any] = {"source_uuid": kf.uuid, "layer": names[0], "n_samples": n_base}
            expected.update({name: value for name, value in (("backend", backend), ("metric", metric)) if name in explicit})
            registry.check_index_matches(index, header, expected)
            backend, metric = header["backend"], header["metric"]
        build_params = search_params(backend, M=M, ef_construction=ef_construction, ef=ef, num_threads=num_threads, seed=seed, device=device, precision=precision)
        if backend == "exact" and query is None:
            raise InputError("--backend exact: exact search has no index to save; give --query FILE -o OUT to search, or use --backend hnsw")
        if save_index and (query is None or index is not None or backend == "exact"):
            why = "without --query every built index is saved" if query is None else "--index is already saved" if index is not None else "the exact backend has no index to save"
            raise InputError(f"--save-index: {why}")
        if check_recall is not None and backend != "hnsw":
            raise InputError(f"--check-recall: compares hnsw with exact search; expected --backend hnsw (got {backend})")

        # -- queries: same layers, same widths, k within the base ---------------------------
        qkf = None
        if query is not None:
            if output is None:
                raise InputError("--query: expected -o/--output PATH for the neighbors file")
            check_output_path(output, force)
            qkf = files.enter_context(KFile(query, kind=KINDS))
            for name in names:
                qkf.layer_path(name)  # lists the available layers when missing
            check_same_source(kf, qkf, names)
        self_query = qkf is not None and qkf.uuid == kf.uuid  # DATA against itself: own rows excluded
        in_query_set = False  # DATA is a shard of the set given as --query: each query's own row is excluded
        if shard is not None and qkf is not None and not self_query:
            q_parts = set_part_infos(query)
            in_query_set = bool(q_parts) and len(q_parts) > 1 and any(_same_file(q.path, data) for q in q_parts)
            self_query = in_query_set
            if in_query_set and check_recall is not None:
                raise InputError(f"--check-recall: not available when a shard is searched with its own set ({query}); run it on the merged result's base instead")
        if query is not None or check_recall is not None:
            check_k(k, n_base, exclude_self=self_query)

        # -- index destinations, all checked before any work ---------------------------------
        dests: dict[str, Path] = {}
        if query is None or save_index:
            if output is not None and query is None:
                if len(names) != 1:
                    raise InputError(f"-o: names one index file but --layers selects {len(names)} layers ({', '.join(names)}); omit -o to save each beside {data.name}")
                dests[names[0]] = output
            else:
                dests = {name: registry.default_index_path(data, name, backend) for name in names}
        for dest in dests.values():
            check_output_path(dest, force)
        pending = {name: (files.enter_context(atomic_path(header_path(d), force=force)), files.enter_context(atomic_path(d, force=force))) for name, d in dests.items()}

        # -- build / load, search, measure ---------------------------------------------------
        results: dict[str, dict[str, Any]] = {}
        report: dict[str, dict[str, Any]] = {}
        if backend == "exact" or check_recall is not None:
            import torch  # noqa: F401  (imported before the timers start)
        base_ids = kf.ids()
        params_used: dict[str, Any] = {}
        for name in names:
            ds = kf.layer(name)
            dim = kf.layer_dim(name)
            row: dict[str, Any] = {"n_samples": n_base, "n_features": dim, "index": None}
            if index is not None:
                out.info(f"{name}: loading {backend} index {index}")
                idx = registry.load_index(index)
                row["index"] = str(index)
                row["build_seconds"] = 0.0
            else:
                out.info(f"{name}: building {backend} index of {n_base} x {dim} ({metric})")
                idx = registry.make_index(backend, metric=metric, **build_params)
                row["build_seconds"] = _timed(lambda: idx.fit(ds))
                idx.metadata.update({"source_uuid": kf.uuid, "source_file": str(data), "source_kind": kf.kind, "layer": name, "dataset": kf.layer_path(name)})
                if shard is not None:
                    idx.metadata.update(shard.as_attrs())
            params_used = idx.get_params()
            if name in pending:
                tmp_header, tmp_payload = pending[name]
                idx.write_files(tmp_payload, tmp_header)
                row["index"] = str(dests[name])

            query_kw: dict[str, Any] = {}
            if backend == "hnsw" and index is not None:
                query_kw = {"ef": ef, "num_threads": num_threads or None}
            Q = None
            if qkf is not None:
                if self_query:
                    out.info(f"{name}: --query is DATA itself; each row's own row is excluded from its neighbours")
                Q = None if self_query and shard is None else qkf.read_layer(name)
                holder: dict[str, Any] = {}
                if shard is None:
                    row["search_seconds"] = _timed(lambda: holder.update(zip(("distances", "indices"), idx.kneighbors(Q, k, **query_kw))))
                else:  # global rows; the queries that are rows of this shard exclude themselves
                    own = (np.arange(qkf.n_samples) if in_query_set else shard.row_start + np.arange(qkf.n_samples)) if self_query else None
                    one = ShardedIndex.from_indexes([idx], [shard.row_start])
                    row["search_seconds"] = _timed(lambda: holder.update(zip(("distances", "indices"), one.kneighbors(Q, k, own_rows=own, **query_kw))))
                    holder["indices"] = holder["indices"] - shard.row_start  # local rows until written
                row["queries_per_second"] = qkf.n_samples / max(row["search_seconds"], 1e-9)
                holder["ids"] = base_ids[holder["indices"]]
                results[name] = holder
            if backend == "hnsw":
                row["ef"] = idx.effective_ef(k, query_kw.get("ef"))
            if check_recall is not None:
                row["recall_at_k"], row["recall_queries"] = _recall(kf, name, ds, idx, Q, results.get(name), self_query, k, check_recall, metric, device, num_threads, seed, query_kw)
                out.info(f"{name}: recall@{k} = {row['recall_at_k']:.4f} against exact search on {row['recall_queries']} sampled queries")
            report[name] = row

        if qkf is not None:
            from knntools.io.neighbors import write_neighbors

            q_ids = qkf.ids()
            n_query = len(q_ids)
            shard_attrs: dict[str, Any] = {}
            if shard is not None:
                for holder in results.values():
                    holder["indices"] = holder["indices"] + shard.row_start
                shard_attrs = {f"base_{key}": value for key, value in shard.as_attrs().items()}
                shard_attrs["base_model_uuid"] = str(kf.attrs.get("model_uuid") or "")
            write_neighbors(
                output,
                layers=results,
                query_ids=q_ids,
                query_labels=qkf.read_labels("labels") if qkf.has("labels") else None,
                metric=metric,
                distance_units=idx.distance_units,
                k=k,
                backend=backend,
                params=params_used,
                classes=kf.classes,
                layer_attrs={n: {"n_features": report[n]["n_features"], "index": report[n]["index"] or "", "recall_at_k": report[n].get("recall_at_k", -1.0)} for n in names},
                attrs={"base_uuid": kf.uuid, "query_uuid": qkf.uuid, "exclude_self": self_query, **shard_attrs},
                parents=[kf.uuid, qkf.uuid],
                seed=seed if backend == "hnsw" else None,
                force=force,
            )

    columns = ["layer", "n_features", "build s"] + (["search s", "q/s"] if query is not None else []) + ([f"recall@{k}"] if check_recall else [])
    out.table(
        f"{backend} ({metric}) on {data.name}",
        columns,
        [[n, r["n_features"], f"{r['build_seconds']:.2f}"] + ([f"{r['search_seconds']:.2f}", int(r["queries_per_second"])] if query is not None else []) + ([r["recall_at_k"]] if check_recall else []) for n, r in report.items()],
    )
    outputs = ([str(output)] if query is not None else []) + [str(p) for p in dests.values()]
    out.result(
        {
            "command": "index",
            "input": str(data),
            "input_uuid": kf.uuid,
            "shard": shard.as_attrs() if shard is not None else None,
            "query": str(query) if query is not None else None,
            "output": str(output) if query is not None else None,
            "indexes": [str(p) for p in dests.values()],
            "backend": backend,
            "metric": metric,
            "k": k if (query is not None or check_recall) else None,
            "params": params_used,
            "layers": report,
        },
        outputs,
    )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or Path(a).samefile(b)
    except OSError:
        return False


def _base_shards(paths: list[Path]) -> tuple[Any, str]:
    """The shards behind DATA: (list of ShardInfo in row order, or None for one whole file; the set's uuid or "").

    Several paths must all be shards of one split (or sets); they are put in row order and must
    tile the split (a missing shard is named).
    """
    import h5py

    from knntools.errors import InputError
    from knntools.search.sharded import check_contiguous, set_part_infos

    for p in paths:
        if not Path(p).exists():
            raise InputError(f"{p}: no such file")
    found = [(p, set_part_infos(p)) for p in paths]
    if len(paths) == 1:
        p, infos = found[0]
        set_uuid = ""
        if infos is not None and len(infos) > 1:
            with h5py.File(p, "r") as f:
                set_uuid = str(f.attrs.get("uuid", ""))
        return infos, set_uuid
    infos = []
    for p, got in found:
        if got is None:
            raise InputError(f"{p}: not a shard (no shard_index/row_start attributes); expected several shards of one split, e.g. from `knntools embed --shard I/N`")
        infos.extend(got)
    infos.sort(key=lambda i: (i.row_start, i.row_stop))
    first = infos[0]
    for info in infos[1:]:
        if (info.total_rows, info.shard_count) != (first.total_rows, first.shard_count):
            raise InputError(f"{info.path}: shard {info.shard_index}/{info.shard_count} of {info.total_rows} rows, but {first.path} is a shard of "
                             f"{first.shard_count} over {first.total_rows} rows; expected shards of one split")
    check_contiguous([(i.row_start, i.row_stop) for i in infos], [f"{i.path} (shard {i.shard_index}/{i.shard_count})" for i in infos], first.total_rows)
    return infos, ""


def _index_parts(shards: Any, set_uuid: str, data: list[Path], *, layers: str, query: Path | None, k: int, output: Path | None, backend: str, metric: str,
                 params: dict[str, Any], index: Path | None, save_index: bool, check_recall: int | None, seed: int, force: bool, out: Output) -> None:
    """``knntools index`` on several shards: one index per shard beside its part, or a search across them (global rows)."""
    import contextlib

    import numpy as np

    from knntools.errors import InputError
    from knntools.io.h5 import KFile, atomic_path, check_output_path, check_same_source
    from knntools.search import registry
    from knntools.search.base import check_k, header_path
    from knntools.search.sharded import ShardedIndex, ShardPart, set_part_infos

    for flag, value in (("--index", index), ("--save-index", save_index or None), ("--check-recall", check_recall)):
        if value is not None:
            raise InputError(f"{flag}: not available with several shards; build each shard's index with `knntools index PART`, and measure recall on one shard")
    if backend == "exact" and query is None:
        raise InputError("--backend exact: exact search has no index to save; give --query FILE -o OUT to search, or use --backend hnsw")
    with contextlib.ExitStack() as files:
        kfs = [files.enter_context(KFile(info.path, kind=KINDS)) for info in shards]
        names = kfs[0].resolve_layers(layers)
        for info, kf in zip(shards, kfs):
            if kf.n_samples != info.n_rows:
                raise InputError(f"{kf.path}: {kf.n_samples} rows but its shard attributes say [{info.row_start}, {info.row_stop}); expected {info.n_rows}")
            for name in names:
                kf.layer_path(name)
            check_same_source(kfs[0], kf, names)
        total = shards[0].total_rows
        report: dict[str, dict[str, Any]] = {}
        dests: list[Path] = []
        if query is None:
            if output is not None:
                raise InputError(f"-o: with several shards each shard's index is saved beside its part; omit -o (or give --query FILE -o OUT)")
            todo = [(info, kf, name, registry.default_index_path(info.path, name, backend)) for info, kf in zip(shards, kfs) for name in names]
            for *_, dest in todo:
                check_output_path(dest, force)
            for info, kf, name, dest in todo:
                tmp_header, tmp_payload = files.enter_context(atomic_path(header_path(dest), force=force)), files.enter_context(atomic_path(dest, force=force))
                out.info(f"{name}: building {backend} index of shard {info.shard_index}/{info.shard_count} ({info.n_rows} x {kf.layer_dim(name)}, rows [{info.row_start}, {info.row_stop}))")
                idx = registry.make_index(backend, metric=metric, **params)
                seconds = _timed(lambda: idx.fit(kf.layer(name)))
                idx.metadata.update({"source_uuid": kf.uuid, "source_file": str(info.path), "source_kind": kf.kind, "layer": name,
                                     "dataset": kf.layer_path(name), **info.as_attrs()})
                idx.write_files(tmp_payload, tmp_header)
                params_used = idx.get_params()
                del idx
                dests.append(dest)
                row = report.setdefault(name, {"n_samples": total, "n_features": kf.layer_dim(name), "shards": len(shards), "build_seconds": 0.0, "index": []})
                row["build_seconds"] += seconds
                row["index"].append(str(dest))
        else:
            if output is None:
                raise InputError("--query: expected -o/--output PATH for the neighbors file")
            check_output_path(output, force)
            qkf = files.enter_context(KFile(query, kind=KINDS))
            for name in names:
                qkf.layer_path(name)
            check_same_source(kfs[0], qkf, names)
            q_parts = set_part_infos(query) if not set_uuid or qkf.uuid != set_uuid else None
            self_query = bool(set_uuid) and qkf.uuid == set_uuid
            if q_parts is not None and len(q_parts) == len(shards) and all(_same_file(a.path, b.path) for a, b in zip(q_parts, shards)):
                self_query = True  # the queries are these shards' rows: each excludes its own row
            check_k(k, total, exclude_self=self_query)
            if backend == "exact":
                import torch  # noqa: F401  (imported before the timers start)
            base_ids = np.concatenate([kf.read("ids").astype(np.int64) if kf.has("ids") else np.arange(i.row_start, i.row_stop) for i, kf in zip(shards, kfs)])
            results: dict[str, dict[str, Any]] = {}
            for name in names:
                sharded = ShardedIndex(backend, metric=metric, **params)
                parts = [ShardPart(kf.layer(name), info.row_start, f"{info.path}: {kf.layer_path(name)}") for info, kf in zip(shards, kfs)]
                out.info(f"{name}: building {backend} indexes of {len(parts)} shards ({total} x {kfs[0].layer_dim(name)}, {metric})")
                build = _timed(lambda: sharded.fit(parts))
                Q = None if self_query else qkf.layer(name)
                holder: dict[str, Any] = {}
                search = _timed(lambda: holder.update(zip(("distances", "indices"), sharded.kneighbors(Q, k))))
                sharded.close()
                holder["ids"] = base_ids[holder["indices"]]
                results[name] = holder
                params_used = sharded.get_params()
                report[name] = {"n_samples": total, "n_features": kfs[0].layer_dim(name), "shards": len(shards), "index": None, "build_seconds": build,
                                "search_seconds": search, "queries_per_second": qkf.n_samples / max(search, 1e-9)}
                if backend == "hnsw":
                    report[name]["ef"] = sharded.effective_ef(k)
            from knntools.io.neighbors import write_neighbors

            q_ids = qkf.ids()
            write_neighbors(
                output, layers=results, query_ids=q_ids, query_labels=qkf.read_labels("labels") if qkf.has("labels") else None,
                metric=metric, distance_units=sharded.distance_units, k=k, backend=backend, params=params_used, classes=kfs[0].classes,
                layer_attrs={n: {"n_features": report[n]["n_features"], "index": "", "recall_at_k": -1.0} for n in names},
                attrs={"base_uuid": set_uuid, "base_part_uuids": [kf.uuid for kf in kfs], "base_total_rows": total, "query_uuid": qkf.uuid, "exclude_self": self_query},
                parents=[kf.uuid for kf in kfs] + [qkf.uuid], seed=seed if backend == "hnsw" else None, force=force,
            )
    columns = ["layer", "n_features", "shards", "build s"] + (["search s", "q/s"] if query is not None else [])
    out.table(f"{backend} ({metric}) on {len(shards)} shards", columns,
              [[n, r["n_features"], r["shards"], f"{r['build_seconds']:.2f}"] + ([f"{r['search_seconds']:.2f}", int(r["queries_per_second"])] if query is not None else []) for n, r in report.items()])
    out.result(
        {
            "command": "index",
            "input": [str(p) for p in data],
            "input_uuid": set_uuid or None,
            "shards": [i.as_attrs() | {"path": str(i.path)} for i in shards],
            "query": str(query) if query is not None else None,
            "output": str(output) if query is not None else None,
            "indexes": [str(p) for p in dests],
            "backend": backend,
            "metric": metric,
            "k": k if query is not None else None,
            "params": params_used,
            "layers": report,
        },
        ([str(output)] if query is not None else []) + [str(p) for p in dests],
    )


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _timed(fn: Any) -> float:
    import time

    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _recall(kf: Any, name: str, ds: Any, idx: Any, Q: Any, found: Any, self_query: bool, k: int, n_check: int, metric: str,
            device: str, num_threads: int, seed: int, query_kw: dict[str, Any]) -> tuple[float, int]:
    """(recall@k of ``idx`` against exact search, queries used) on ``n_check`` sampled queries.

    The queries are the ``--query`` rows already searched (``Q`` and ``found``; ``Q`` is None when
    DATA was searched against itself), else base rows searched now.
    """
    import numpy as np

    from knntools.search.base import drop_own_rows, recall_at_k
    from knntools.search.exact import ExactIndex

    rng = np.random.default_rng(seed)
    pool = len(found["indices"]) if found is not None else kf.n_samples
    sample = np.sort(rng.choice(pool, size=min(n_check, pool), replace=False))
    queries = kf.read_layer(name, rows=sample) if Q is None else Q[sample]
    exact = ExactIndex(metric=metric, device=device, num_threads=num_threads or None).fit(ds)
    if found is None:
        approx = idx.kneighbors(queries, k, **query_kw)[1]
    else:
        approx = found["indices"][sample]
    if self_query:
        dist, ind = exact.kneighbors(queries, k + 1)
        reference = drop_own_rows(ind, dist, sample)[0]
    else:
        reference = exact.kneighbors(queries, k)[1]
    return recall_at_k(approx, reference), len(sample)
