"""Index and search the layers of knntools activation / features files (the core of ``knntools index``).

Every function takes opened files (:class:`knntools.io.h5.KFile`: layers are read through them, so
NaN/Inf and damaged chunks are refused naming the file) and returns arrays; none writes a
neighbours file or prints. Index files are written only where the caller passes destinations.
::

    from knntools.io.h5 import KFile
    from knntools.search.files import search_file_layers

    with KFile("train.h5") as base, KFile("test.h5") as queries:
        found = search_file_layers(base, ["fc2"], query=queries, k=10, backend="exact")
    found.neighbors["fc2"]["ids"]        # int64 (n_queries, 10): training ids, nearest first

Shards (``knntools embed --shard``): :func:`resolve_base_shards` puts the parts of a split in row
order; :func:`index_shards` builds one saved index per part; :func:`search_shards` searches them
one at a time and merges the per-part top-k into the global top-k (``ShardedIndex``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from knntools.errors import InputError

__all__ = [
    "FileSearch",
    "check_query",
    "check_shards",
    "index_shards",
    "recall_against_exact",
    "resolve_base_shards",
    "search_file_layers",
    "search_shards",
]

Log = Callable[[str], None]


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or Path(a).samefile(b)
    except OSError:
        return False


@dataclass
class FileSearch:
    """What :func:`search_file_layers`, :func:`index_shards` and :func:`search_shards` found.

    Attributes
    ----------
    neighbors : dict layer -> {"distances" float32 (n, k), "indices" int64 (n, k), "ids" int64 (n, k)}
        Ascending distances, base rows (global rows of the split for a shard) and their ids; empty
        without queries.
    report : dict layer -> dict
        ``n_samples``, ``n_features``, ``index`` (saved path(s) or None), ``build_seconds`` and,
        with queries, ``search_seconds``, ``queries_per_second``; ``ef`` for hnsw;
        ``recall_at_k`` / ``recall_queries`` with a recall check; ``shards`` for shards.
    params : dict      the backend parameters used (``get_params()`` of the last index)
    distance_units : str
    self_query : bool  the queries are the base rows themselves (each row's own row excluded)
    """

    neighbors: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    report: dict[str, dict[str, Any]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    distance_units: str = ""
    self_query: bool = False


# --------------------------------------------------------------------------------------------
# One file (or one shard of a split)
# --------------------------------------------------------------------------------------------


def check_query(base: Any, query: Any, names: Sequence[str], k: int, *, shard: Any = None, data_path: str | os.PathLike | None = None,
                query_path: str | os.PathLike | None = None) -> tuple[bool, bool]:
    """Check a query file against a base file and the k bound; tell whether it queries itself.

    Parameters
    ----------
    base, query : KFile      base (indexed) rows and query rows; ``query`` may be None
    names : sequence of str  layers searched (the query must have them, at the same width)
    k : int                  neighbours (bound: :func:`knntools.search.base.check_k`)
    shard : ShardInfo, optional
        The base is this shard of a split; a query *set* that contains the shard's file then
        excludes each query's own row too.
    data_path, query_path : path-like
        The base and query paths (to recognise a shard inside the query set).

    Returns
    -------
    (self_query, in_query_set) : (bool, bool)
        ``self_query``: each query's own row is excluded (the query file is the base, or a set
        holding it); ``in_query_set``: the base is one part of the query set.

    Raises
    ------
    InputError
        Missing layer, another model or width, ``k`` above the candidate rows.
    """
    from knntools.io.h5 import check_same_source
    from knntools.search.base import check_k
    from knntools.search.sharded import set_part_infos

    if query is None:
        return False, False
    for name in names:
        query.layer_path(name)  # lists the available layers when missing
    check_same_source(base, query, names)
    self_query = query.uuid == base.uuid
    in_query_set = False
    if shard is not None and not self_query:
        q_parts = set_part_infos(query_path)
        in_query_set = bool(q_parts) and len(q_parts) > 1 and any(_same_file(q.path, data_path) for q in q_parts)
        self_query = in_query_set
    check_k(k, base.n_samples, exclude_self=self_query)
    return self_query, in_query_set


def search_file_layers(
    base: Any,
    names: Sequence[str],
    *,
    query: Any = None,
    k: int = 10,
    backend: str = "hnsw",
    metric: str = "l2",
    params: Mapping[str, Any] | None = None,
    index: str | os.PathLike | None = None,
    save: Mapping[str, tuple[Path, Path, Path]] | None = None,
    shard: Any = None,
    self_query: bool = False,
    in_query_set: bool = False,
    query_params: Mapping[str, Any] | None = None,
    check_recall: int | None = None,
    device: str = "auto",
    num_threads: int | None = None,
    seed: int = 0,
    source: str | os.PathLike | None = None,
    log: Log | None = None,
) -> FileSearch:
    """Build (or load) an index per layer of ``base``, save it, search it with ``query``, measure recall.

    Parameters
    ----------
    base : KFile
        Activations or features file (its layers are streamed by the exact backend).
    names : sequence of str
        Resolved layer names (:meth:`KFile.resolve_layers`).
    query : KFile, optional
        Query rows (same model; see :func:`check_query`). Without it only indexes are built.
    k : int, default 10
    backend, metric : str
        :func:`knntools.search.make_index`; with ``index`` the saved index's own are used.
    params : dict
        Backend parameters (``M``, ``ef_construction``, ``ef``, ``num_threads``, ``seed``, ``device``, ...).
    index : path-like, optional
        A saved index of the single layer in ``names`` (its header already checked), loaded
        instead of building one.
    save : dict layer -> (tmp_payload, tmp_header, final path), optional
        Write the built index of these layers to the temporary paths (the caller renames them);
        ``report[layer]["index"]`` records the final path.
    shard : ShardInfo, optional
        ``base`` is this shard of a split: the index metadata record the shard, and the returned
        ``indices`` are GLOBAL rows of the split.
    self_query, in_query_set : bool
        From :func:`check_query`.
    query_params : dict
        Search-time parameters of a loaded hnsw index (``ef``, ``num_threads``).
    check_recall : int, optional
        Compare with exact search on this many sampled queries (:func:`recall_against_exact`).
    device, num_threads :
        Of the exact search the recall is measured against.
    seed : int
        Draws the recall sample.
    source : path-like
        The base file's path recorded in the index metadata (default ``base.path``).
    log : callable(str), optional
        Progress lines.

    Returns
    -------
    FileSearch
    """
    from knntools.search import registry
    from knntools.search.sharded import ShardedIndex

    params, query_params, log = dict(params or {}), dict(query_params or {}), log or (lambda _m: None)
    save, found = dict(save or {}), FileSearch(self_query=self_query)
    if backend == "exact" or check_recall is not None:
        import torch  # noqa: F401  (imported before the timers start)
    base_ids = base.ids()
    n_base = base.n_samples
    for name in names:
        ds, dim = base.layer(name), base.layer_dim(name)
        row: dict[str, Any] = {"n_samples": n_base, "n_features": dim, "index": None}
        if index is not None:
            log(f"{name}: loading {backend} index {index}")
            idx = registry.load_index(index)
            row["index"], row["build_seconds"] = str(index), 0.0
        else:
            log(f"{name}: building {backend} index of {n_base} x {dim} ({metric})")
            idx = registry.make_index(backend, metric=metric, **params)
            row["build_seconds"] = _timed(lambda: idx.fit(ds))
            idx.metadata.update({"source_uuid": base.uuid, "source_file": str(source or base.path), "source_kind": base.kind, "layer": name,
                                 "dataset": base.layer_path(name)})
            if shard is not None:
                idx.metadata.update(shard.as_attrs())
        found.params, found.distance_units = idx.get_params(), idx.distance_units
        if name in save:
            tmp_payload, tmp_header, final = save[name]
            idx.write_files(tmp_payload, tmp_header)
            row["index"] = str(final)
        Q = None
        if query is not None:
            if self_query:
                log(f"{name}: the query file is the base itself; each row's own row is excluded from its neighbours")
            Q = None if self_query and shard is None else query.read_layer(name)
            holder: dict[str, Any] = {}
            if shard is None:
                row["search_seconds"] = _timed(lambda: holder.update(zip(("distances", "indices"), idx.kneighbors(Q, k, **query_params))))
            else:  # global rows; the queries that are rows of this shard exclude themselves
                own = (np.arange(query.n_samples) if in_query_set else shard.row_start + np.arange(query.n_samples)) if self_query else None
                one = ShardedIndex.from_indexes([idx], [shard.row_start])
                row["search_seconds"] = _timed(lambda: holder.update(zip(("distances", "indices"), one.kneighbors(Q, k, own_rows=own, **query_params))))
                holder["indices"] = holder["indices"] - shard.row_start  # local rows for the ids
            row["queries_per_second"] = query.n_samples / max(row["search_seconds"], 1e-9)
            holder["ids"] = base_ids[holder["indices"]]
            if shard is not None:
                holder["indices"] = holder["indices"] + shard.row_start
            found.neighbors[name] = holder
        if backend == "hnsw":
            row["ef"] = idx.effective_ef(k, query_params.get("ef"))
        if check_recall is not None:
            local = None if name not in found.neighbors else {"indices": found.neighbors[name]["indices"] - (shard.row_start if shard is not None else 0)}
            row["recall_at_k"], row["recall_queries"] = recall_against_exact(
                base, name, idx, k, check_recall, queries=Q, found=local, self_query=self_query, metric=metric,
                device=device, num_threads=num_threads, seed=seed, query_params=query_params)
            log(f"{name}: recall@{k} = {row['recall_at_k']:.4f} against exact search on {row['recall_queries']} sampled queries")
        found.report[name] = row
    return found


def recall_against_exact(base: Any, name: str, index: Any, k: int, n_check: int, *, queries: Any = None, found: Mapping[str, np.ndarray] | None = None,
                         self_query: bool = False, metric: str = "l2", device: str = "auto", num_threads: int | None = None, seed: int = 0,
                         query_params: Mapping[str, Any] | None = None) -> tuple[float, int]:
    """Recall@k of ``index`` against exact search on ``n_check`` sampled queries.

    The queries are ``queries`` rows already searched (their neighbours ``found["indices"]``;
    ``queries`` None with ``found`` means the base was searched against itself), else base rows
    searched now. Returns ``(recall, queries used)``; the sample is drawn with ``seed``.
    """
    from knntools.search.base import drop_own_rows, recall_at_k
    from knntools.search.exact import ExactIndex

    rng = np.random.default_rng(seed)
    pool = len(found["indices"]) if found is not None else base.n_samples
    sample = np.sort(rng.choice(pool, size=min(n_check, pool), replace=False))
    Q = base.read_layer(name, rows=sample) if queries is None else queries[sample]
    exact = ExactIndex(metric=metric, device=device, num_threads=num_threads or None).fit(base.layer(name))
    approx = index.kneighbors(Q, k, **dict(query_params or {}))[1] if found is None else found["indices"][sample]
    if self_query:
        dist, ind = exact.kneighbors(Q, k + 1)
        reference = drop_own_rows(ind, dist, sample)[0]
    else:
        reference = exact.kneighbors(Q, k)[1]
    return recall_at_k(approx, reference), len(sample)


# --------------------------------------------------------------------------------------------
# Several shards of one split
# --------------------------------------------------------------------------------------------


def resolve_base_shards(paths: Sequence[str | os.PathLike]) -> tuple[list[Any] | None, str]:
    """The shards behind base path(s): (ShardInfo list in row order, or None for one whole file; the set's uuid or "").

    One path: a plain file (None), one shard (its ShardInfo) or a sharded set (its parts and the
    set's uuid). Several paths must all be shards of one split (or sets); they are put in row order
    and must tile the split.

    Raises
    ------
    InputError
        A missing file, a path that is not a shard, shards of different splits, a gap or overlap
        (the missing shard is named).
    """
    import h5py

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
            raise InputError(f"{p}: not a shard (no shard_index/row_start attributes); expected several shards of one split, e.g. the parts of a sharded `knntools embed`")
        infos.extend(got)
    infos.sort(key=lambda i: (i.row_start, i.row_stop))
    first = infos[0]
    for info in infos[1:]:
        if (info.total_rows, info.shard_count) != (first.total_rows, first.shard_count):
            raise InputError(f"{info.path}: shard {info.shard_index}/{info.shard_count} of {info.total_rows} rows, but {first.path} is a shard of "
                             f"{first.shard_count} over {first.total_rows} rows; expected shards of one split")
    check_contiguous([(i.row_start, i.row_stop) for i in infos], [f"{i.path} (shard {i.shard_index}/{i.shard_count})" for i in infos], first.total_rows)
    return infos, ""


def check_shards(shards: Sequence[Any], files: Sequence[Any], names: Sequence[str]) -> None:
    """Every shard file has its recorded rows and the layers, from the same model at the same widths.

    Raises
    ------
    InputError
        Row count differing from the shard attributes, a missing layer, another model or width.
    """
    from knntools.io.h5 import check_same_source

    for info, kf in zip(shards, files):
        if kf.n_samples != info.n_rows:
            raise InputError(f"{kf.path}: {kf.n_samples} rows but its shard attributes say [{info.row_start}, {info.row_stop}); expected {info.n_rows}")
        for name in names:
            kf.layer_path(name)
        check_same_source(files[0], kf, names)


def index_shards(shards: Sequence[Any], files: Sequence[Any], names: Sequence[str], save: Mapping[tuple[int, str], tuple[Path, Path, Path]], *,
                 backend: str = "hnsw", metric: str = "l2", params: Mapping[str, Any] | None = None, log: Log | None = None) -> FileSearch:
    """Build one index per shard and layer and write it to ``save[(shard position, layer)] = (tmp_payload, tmp_header, final)``.

    The index metadata record the source file, layer and shard (rows ``[row_start, row_stop)``).
    Returns a :class:`FileSearch` whose ``report[layer]`` sums the build time over the shards and
    lists the saved paths.
    """
    from knntools.search import registry

    found, log, total = FileSearch(), log or (lambda _m: None), shards[0].total_rows
    for pos, (info, kf) in enumerate(zip(shards, files)):
        for name in names:
            tmp_payload, tmp_header, final = save[(pos, name)]
            log(f"{name}: building {backend} index of shard {info.shard_index}/{info.shard_count} ({info.n_rows} x {kf.layer_dim(name)}, rows [{info.row_start}, {info.row_stop}))")
            idx = registry.make_index(backend, metric=metric, **dict(params or {}))
            seconds = _timed(lambda: idx.fit(kf.layer(name)))
            idx.metadata.update({"source_uuid": kf.uuid, "source_file": str(info.path), "source_kind": kf.kind, "layer": name,
                                 "dataset": kf.layer_path(name), **info.as_attrs()})
            idx.write_files(tmp_payload, tmp_header)
            found.params, found.distance_units = idx.get_params(), idx.distance_units
            del idx
            row = found.report.setdefault(name, {"n_samples": total, "n_features": kf.layer_dim(name), "shards": len(shards), "build_seconds": 0.0, "index": []})
            row["build_seconds"] += seconds
            row["index"].append(str(final))
    return found


def search_shards(shards: Sequence[Any], files: Sequence[Any], names: Sequence[str], query: Any, k: int, *, set_uuid: str = "",
                  query_path: str | os.PathLike | None = None, backend: str = "exact", metric: str = "l2", params: Mapping[str, Any] | None = None,
                  log: Log | None = None) -> FileSearch:
    """The global top-k of every query row over all shards (``ShardedIndex``: one shard at a time, merged).

    With ``backend="exact"`` the result equals exact search on the whole split. When the queries
    are the split itself (the set, or the same part files), each query's own row is excluded.

    Returns
    -------
    FileSearch
        ``neighbors[layer]["indices"]`` are global rows of the split, ``ids`` the shards' ids.

    Raises
    ------
    InputError
        A missing layer, another model or width, ``k`` above the candidate rows.
    """
    from knntools.io.h5 import check_same_source
    from knntools.search.base import check_k
    from knntools.search.sharded import ShardedIndex, ShardPart, set_part_infos

    log, total = log or (lambda _m: None), shards[0].total_rows
    for name in names:
        query.layer_path(name)
    check_same_source(files[0], query, names)
    q_parts = set_part_infos(query_path) if not set_uuid or query.uuid != set_uuid else None
    self_query = bool(set_uuid) and query.uuid == set_uuid
    if q_parts is not None and len(q_parts) == len(shards) and all(_same_file(a.path, b.path) for a, b in zip(q_parts, shards)):
        self_query = True  # the queries are these shards' rows: each excludes its own row
    check_k(k, total, exclude_self=self_query)
    if backend == "exact":
        import torch  # noqa: F401  (imported before the timers start)
    base_ids = np.concatenate([kf.read("ids").astype(np.int64) if kf.has("ids") else np.arange(i.row_start, i.row_stop) for i, kf in zip(shards, files)])
    found = FileSearch(self_query=self_query)
    for name in names:
        sharded = ShardedIndex(backend, metric=metric, **dict(params or {}))
        parts = [ShardPart(kf.layer(name), info.row_start, f"{info.path}: {kf.layer_path(name)}") for info, kf in zip(shards, files)]
        log(f"{name}: building {backend} indexes of {len(parts)} shards ({total} x {files[0].layer_dim(name)}, {metric})")
        build = _timed(lambda: sharded.fit(parts))
        Q = None if self_query else query.layer(name)
        holder: dict[str, Any] = {}
        search = _timed(lambda: holder.update(zip(("distances", "indices"), sharded.kneighbors(Q, k))))
        sharded.close()
        holder["ids"] = base_ids[holder["indices"]]
        found.neighbors[name] = holder
        found.params, found.distance_units = sharded.get_params(), sharded.distance_units
        found.report[name] = {"n_samples": total, "n_features": files[0].layer_dim(name), "shards": len(shards), "index": None, "build_seconds": build,
                              "search_seconds": search, "queries_per_second": query.n_samples / max(search, 1e-9)}
        if backend == "hnsw":
            found.report[name]["ef"] = sharded.effective_ef(k)
    return found
