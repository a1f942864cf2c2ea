"""Search across the shards of a split: one index per shard, per-shard top-k merged into the global top-k.

A sharded base is a list of *parts*, each a contiguous block of rows ``[row_start, row_stop)`` of
the full split (``knntools.io.shards``). :class:`ShardedIndex` builds (or loads) one index per part
with any registered backend and answers a query by searching every part and merging the per-part
candidates into the global top-k::

    from knntools.search.sharded import ShardedIndex, ShardPart

    index = ShardedIndex("exact", metric="l2").fit([ShardPart(X0, 0), ShardPart(X1, len(X0))])
    distances, indices = index.kneighbors(Q, 10)     # indices are GLOBAL rows of X0 ++ X1
    distances, indices = index.kneighbors(None, 10)  # every row against all others (leave-one-out)

Results follow the search contract of :mod:`knntools.search.base` with global row indices. Ties
are broken deterministically by the global row (smaller first), so with the ``exact`` backend the
result equals exact search on the concatenated rows (same neighbours, same order; rows at exactly
equal distance may be ordered differently by the unsharded search, which breaks ties as
``torch.topk`` does).

Memory: the parts are searched one at a time, the queries in chunks of ``query_chunk`` rows, so
beyond the result arrays ``(n_queries, k)`` the search holds one part's index and one chunk's
candidates, whatever the number of parts. hnsw parts built in this process are written to a
temporary folder and reloaded one at a time (``spill``); exact parts hold only a reference to their
rows and the row norms.

:func:`merge_neighbor_files` combines ``neighbors`` files written per shard (``knntools index
PART --query Q``, e.g. one SLURM array task per shard) into the global top-k, streaming over query
chunks.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from knntools.errors import InputError, KnnToolsError
from knntools.search.base import as_2d_array, check_finite_rows, check_k, check_positive_int, is_h5_dataset, source_name
from knntools.search.names import DISTANCE_UNITS

#: Index of an empty candidate slot (never selected: its distance is +inf and it sorts last).
EMPTY = np.iinfo(np.int64).max
#: Bytes of query rows (float32) per chunk when ``query_chunk`` is not given.
QUERY_CHUNK_BYTES = 64 << 20

__all__ = [
    "EMPTY",
    "ShardPart",
    "ShardedIndex",
    "check_contiguous",
    "merge_neighbor_files",
    "merge_topk",
    "parts_of",
    "set_part_infos",
]


# --------------------------------------------------------------------------------------------
# Parts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardPart:
    """One shard's rows and where they sit in the full split.

    Attributes
    ----------
    data : ndarray or h5py.Dataset
        The shard's rows, shape ``(n_rows, n_features)`` (trailing axes are flattened).
    row_start : int
        Global row of ``data[0]``; the shard holds rows ``[row_start, row_start + len(data))``.
    name : str
        Used in messages (e.g. ``part1.h5: layers/fc2``).
    """

    data: Any
    row_start: int
    name: str = ""

    @property
    def n_rows(self) -> int:
        return int(self.data.shape[0])

    @property
    def row_stop(self) -> int:
        return self.row_start + self.n_rows


def check_contiguous(ranges: Sequence[tuple[int, int]], names: Sequence[str], total_rows: int | None = None, *, start: int = 0,
                     gap: Callable[[int, int], str] | None = None) -> None:
    """Check that row ranges, in order, tile ``[start, total_rows)`` without gap or overlap.

    Parameters
    ----------
    ranges : sequence of (row_start, row_stop)
        Sorted by ``row_start``.
    names : sequence of str
        One per range, named in messages.
    total_rows : int, optional
        Rows of the full split (default: the last ``row_stop``).
    start : int, default 0
        First row expected (a subset of a split's shards may start later).
    gap : callable(lo, hi) -> str, optional
        Names missing rows ``[lo, hi)`` in messages (e.g. the shard that holds them); default
        ``"rows [lo, hi)"``.

    Raises
    ------
    InputError
        A gap (rows no part holds: a missing shard), an overlap, or ranges that stop short of or
        beyond ``total_rows``.
    """
    def rows(lo: int, hi: int) -> str:
        return gap(lo, hi) if gap is not None else f"rows [{lo}, {hi})"

    expected = start
    for (lo, hi), name in zip(ranges, names):
        if lo > expected:
            raise InputError(f"{rows(expected, lo)} missing before {name}: expected a shard holding them (a shard is missing)")
        if lo < expected:
            raise InputError(f"{name}: rows [{lo}, {hi}) overlap rows already held by an earlier shard (up to {expected}); expected non-overlapping shards")
        expected = hi
    if total_rows is not None and expected != total_rows:
        if expected < total_rows:
            raise InputError(f"{rows(expected, total_rows)} of {total_rows} missing after {names[-1] if names else 'the shards'}: expected a shard holding them (a shard is missing)")
        raise InputError(f"{names[-1]}: rows reach {expected}, beyond the {total_rows} rows of the split")


def parts_of(X: Any) -> list[ShardPart] | None:
    """The shard parts behind ``X``, or ``None`` when ``X`` is one ordinary array.

    Parameters
    ----------
    X : sequence of ShardPart, sequence of arrays/h5py datasets, h5py virtual dataset, or array
        A sequence is taken as consecutive parts (a plain array ``i`` starts where ``i - 1``
        stops). An h5py *virtual* dataset whose row blocks map whole datasets of other files (a
        sharded activation set, ``knntools merge --virtual``) is expanded into those source
        datasets, opened read-only.

    Returns
    -------
    list of ShardPart or None

    Raises
    ------
    InputError
        Parts of different widths, or ``ShardPart`` row ranges with gaps or overlaps.
    """
    if isinstance(X, (list, tuple)):
        parts: list[ShardPart] = []
        start = 0
        for i, item in enumerate(X):
            part = item if isinstance(item, ShardPart) else ShardPart(item, start, source_name(item, f"part {i}"))
            parts.append(part)
            start = part.row_stop
        if not parts:
            raise InputError("no shard parts given; expected at least one")
        check_contiguous([(p.row_start, p.row_stop) for p in parts], [p.name or f"part {i}" for i, p in enumerate(parts)], start=parts[0].row_start)
        widths = {int(np.prod(p.data.shape[1:], dtype=np.int64)) for p in parts}
        if len(widths) > 1:
            raise InputError(f"shard parts have different widths {sorted(widths)}; expected one width")
        return parts
    if is_h5_dataset(X) and getattr(X, "is_virtual", False):
        return _virtual_parts(X)
    return None


def _virtual_parts(ds: Any) -> list[ShardPart] | None:
    """The part datasets behind one layer of a knntools set, in row order (``None`` for one part).

    The parts come from the set's ``parts`` attribute (:func:`knntools.io.shards.set_parts`, the
    same record :class:`knntools.io.h5.KFile` checks when it opens the set); each part's dataset of
    the same name holds the set's rows ``[row_start, row_stop)``.
    """
    import h5py

    from knntools.io.shards import set_parts

    infos = set_parts(ds.file.filename)
    if len(infos) < 2:
        return None
    parts = []
    for info in infos:
        try:
            f = h5py.File(info.path, "r")
        except OSError as exc:
            raise InputError(f"{ds.file.filename}: {ds.name.lstrip('/')}: shard {info.path} is not readable ({str(exc).splitlines()[0][:100]}); expected every part of the set beside it") from None
        src = f[ds.name]
        if src.shape[0] != info.n_rows:
            raise InputError(f"{f.filename}: {ds.name.lstrip('/')} has {src.shape[0]} rows but the set maps rows [{info.row_start}, {info.row_stop}) to it; expected {info.n_rows}")
        parts.append(ShardPart(src, info.row_start, source_name(src, str(info.path))))
    check_contiguous([(p.row_start, p.row_stop) for p in parts], [p.name for p in parts], int(ds.shape[0]))
    return parts


def set_part_infos(path: str | os.PathLike) -> list[Any] | None:
    """The shards (``knntools.io.shards.ShardInfo``, in row order) of a file, or ``None`` for a whole file.

    The one place where a data path is expanded into its parts: a shard file (root attributes
    ``shard_index`` ...) is its own single part; a sharded activation set (an ``activations`` file
    whose layers are HDF5 virtual datasets over part files) lists the part files recorded in its
    ``parts`` attribute (:func:`knntools.io.shards.set_parts`).

    Raises
    ------
    InputError
        Unreadable file or part, inconsistent shard attributes.
    """
    from knntools.io.shards import read_shard_info, set_parts

    info = read_shard_info(path)
    if info is not None:
        return [info]
    return set_parts(path) or None


# --------------------------------------------------------------------------------------------
# Merging top-k lists
# --------------------------------------------------------------------------------------------


def merge_topk(dist_a: np.ndarray, idx_a: np.ndarray, dist_b: np.ndarray, idx_b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of two candidate lists per query, ordered by (distance, index).

    Parameters
    ----------
    dist_a, idx_a : ndarrays of shape (n, m_a), float32 / int64
    dist_b, idx_b : ndarrays of shape (n, m_b), float32 / int64
        Candidates (global rows); empty slots have distance ``+inf`` and index :data:`EMPTY`.
    k : int
        Kept per query (``<= m_a + m_b``).

    Returns
    -------
    distances : ndarray of shape (n, k), float32, ascending
    indices : ndarray of shape (n, k), int64
        Among equal distances the smaller index comes first (deterministic tie-breaking).
    """
    d = np.concatenate((dist_a, dist_b), axis=1)
    i = np.concatenate((idx_a, idx_b), axis=1)
    order = np.lexsort((i, d), axis=-1)[:, :k]
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


# --------------------------------------------------------------------------------------------
# The sharded index
# --------------------------------------------------------------------------------------------


class _Shard:
    """One part's index: resident in memory, or saved at ``path`` and loaded when searched."""

    def __init__(self, row_start: int, n_rows: int, name: str, index: Any = None, path: Path | None = None, expected: dict | None = None):
        self.row_start, self.n_rows, self.name = row_start, n_rows, name
        self.index, self.path, self.expected = index, path, expected

    @contextlib.contextmanager
    def opened(self) -> Iterator[Any]:
        if self.index is not None:
            yield self.index
            return
        from knntools.search.registry import load_index

        index = load_index(self.path, expected=self.expected)
        try:
            yield index
        finally:
            del index


class ShardedIndex:
    """One index per shard, searched one shard at a time; results in global rows.

    Parameters
    ----------
    backend : {"exact", "hnsw"}, default "exact"
        Backend of every shard's index (see :func:`knntools.search.make_index`).
    metric : {"l2", "cosine", "ip"}, default "l2"
    query_chunk : int or None, default None
        Queries searched at a time; ``None``: as many float32 rows as fit in 64 MB.
    spill : bool or None, default None
        Write each hnsw shard index built by :meth:`fit` to a temporary folder and reload it when
        searched, so that one shard's graph is in memory at a time. ``None``: spill when the
        backend is ``hnsw`` and there are at least two shards. Exact shards never spill (they
        only reference their rows).
    **params
        Backend parameters, as for :func:`knntools.search.make_index`.

    Attributes
    ----------
    n_samples_, n_features_ : int
        Rows of all shards together, and their width.
    shard_ranges_ : list of (row_start, row_stop)
    metadata : dict

    Raises
    ------
    InputError
        Unknown backend, metric or parameter (checked at construction).

    Notes
    -----
    Equals exact search on the concatenated rows when ``backend="exact"``: every shard returns
    its own top-``k`` (``k + 1`` when a query's own row may be among them), and the global top-k
    is the top-k of their union (Johnson, Douze & Jégou, "Billion-scale similarity search with
    GPUs", 2017, §5: the same k-selection merge of per-shard results that faiss's
    ``IndexShards`` uses).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
    >>> index = ShardedIndex("exact", device="cpu").fit([X[:30], X[30:70], X[70:]])
    >>> d, i = index.kneighbors(X[[5, 50, 95]], 1)
    >>> i[:, 0].tolist()
    [5, 50, 95]
    """

    def __init__(self, backend: str = "exact", *, metric: str = "l2", query_chunk: int | None = None, spill: bool | None = None, **params: Any):
        from knntools.search.registry import make_index

        make_index(backend, metric=metric, **params)  # validates backend, metric and parameters now
        self.backend = backend
        self.metric = metric
        self.params = dict(params)
        self.query_chunk = check_positive_int("query_chunk", query_chunk, optional=True)
        self.spill = spill
        self.metadata: dict[str, Any] = {}
        self.n_samples_: int | None = None
        self.n_features_: int | None = None
        self.shard_ranges_: list[tuple[int, int]] = []
        self._shards: list[_Shard] = []
        self._parts: list[ShardPart] = []
        self._tmp: tempfile.TemporaryDirectory | None = None

    # -- the NeighborIndex surface the methods use ------------------------------------------
    @property
    def distance_units(self) -> str:
        return DISTANCE_UNITS[self.metric]

    @property
    def is_fitted(self) -> bool:
        return self.n_samples_ is not None

    @property
    def n_shards(self) -> int:
        return len(self._shards)

    def get_params(self) -> dict[str, Any]:
        """The backend parameters of the shards' indexes (as :func:`make_index` takes them)."""
        from knntools.search.registry import make_index

        return make_index(self.backend, metric=self.metric, **self.params).get_params()

    def effective_ef(self, k: int, ef: int | None = None) -> int:
        """hnsw search breadth for ``k`` neighbours (see :meth:`HnswIndex.effective_ef`)."""
        from knntools.search.registry import make_index

        return make_index(self.backend, metric=self.metric, **self.params).effective_ef(k, ef)

    def __repr__(self) -> str:
        return f"ShardedIndex(backend={self.backend!r}, metric={self.metric!r}, shards={self.n_shards}, n_samples={self.n_samples_})"

    # -- fit --------------------------------------------------------------------------------
    def fit(self, parts: Any) -> "ShardedIndex":
        """Build one index per part.

        Parameters
        ----------
        parts : sequence of ShardPart / arrays / h5py datasets, or an h5py virtual dataset
            See :func:`parts_of`; a single ordinary array is one shard. Rows are referenced, not
            copied, as by the backends: keep arrays unchanged and HDF5 files open while searching.

        Returns
        -------
        self

        Raises
        ------
        InputError
            Gaps or overlaps between parts, different widths, non-finite rows (named by part).
        """
        from knntools.search.registry import make_index

        expanded = parts_of(parts)
        if expanded is None:
            expanded = [ShardPart(parts, 0, source_name(parts, "X"))]
        self.close()
        spill = self.spill if self.spill is not None else (self.backend == "hnsw" and len(expanded) > 1)
        shards = []
        for part in expanded:
            index = make_index(self.backend, metric=self.metric, **self.params).fit(part.data)
            shard = _Shard(part.row_start, index.n_samples_, part.name, index=index)
            if spill and self.backend != "exact":
                if self._tmp is None:
                    self._tmp = tempfile.TemporaryDirectory(prefix="knntools-shards-")
                shard.path = Path(self._tmp.name) / f"shard{len(shards)}.{self.backend}"
                index.save(shard.path)
                shard.index = None
            shards.append(shard)
            self.n_features_ = index.n_features_
            del index
        self._set_shards(shards)
        self._parts = expanded
        return self

    @classmethod
    def from_saved(cls, paths: Sequence[str | os.PathLike], row_starts: Sequence[int] | None = None, *,
                   expected: Sequence[dict[str, Any]] | None = None, query_chunk: int | None = None) -> "ShardedIndex":
        """Search indexes saved per shard (``knntools index PART``), loading one at a time.

        Parameters
        ----------
        paths : sequence of path-like
            Index payloads (sidecars beside them), in row order.
        row_starts : sequence of int, optional
            Global first row of each; default: the sidecar's ``metadata.row_start`` (recorded by
            ``knntools index`` for a shard file), else consecutive.
        expected : sequence of dict, optional
            Per index, facts its sidecar must match (see :func:`knntools.search.load_index`).

        Raises
        ------
        InputError
            Missing or damaged indexes, different backends/metrics/widths, gaps or overlaps.
        """
        from knntools.search.registry import read_index_header

        heads = [read_index_header(p) for p in paths]
        if not heads:
            raise InputError("no shard indexes given; expected at least one")
        first = heads[0]
        for p, h in zip(paths, heads):
            for key in ("backend", "metric", "n_features"):
                if h[key] != first[key]:
                    raise InputError(f"{p}: index {key} is {h[key]!r} but {paths[0]} has {first[key]!r}; expected shards indexed alike")
        if row_starts is None:
            row_starts, start = [], 0
            for h in heads:
                start = int((h.get("metadata") or {}).get("row_start", start))
                row_starts.append(start)
                start += int(h["n_samples"])
        ranges = [(int(s), int(s) + int(h["n_samples"])) for s, h in zip(row_starts, heads)]
        check_contiguous(ranges, [str(p) for p in paths], start=ranges[0][0])
        params = dict(first.get("params") or {})
        self = cls(first["backend"], metric=first["metric"], query_chunk=query_chunk, **params)
        self.n_features_ = int(first["n_features"])
        self._set_shards([_Shard(s, int(h["n_samples"]), str(p), path=Path(p), expected=(expected[i] if expected else None))
                          for i, (p, s, h) in enumerate(zip(paths, row_starts, heads))])
        return self

    @classmethod
    def from_indexes(cls, indexes: Sequence[Any], row_starts: Sequence[int], *, query_chunk: int | None = None) -> "ShardedIndex":
        """Search fitted indexes (one per shard, kept in memory) as one, with global rows.

        Parameters
        ----------
        indexes : sequence of NeighborIndex
            Fitted, same backend, metric and width.
        row_starts : sequence of int
            Global first row of each.

        Raises
        ------
        InputError
            Different backends/metrics/widths, gaps or overlaps.
        """
        if not indexes or len(indexes) != len(row_starts):
            raise InputError(f"{len(indexes)} indexes for {len(row_starts)} row starts; expected one row start per index, at least one")
        first = indexes[0]
        for idx in indexes[1:]:
            if (idx.backend, idx.metric, idx.n_features_) != (first.backend, first.metric, first.n_features_):
                raise InputError(f"shard indexes differ ({idx.backend}/{idx.metric}/{idx.n_features_}-d vs {first.backend}/{first.metric}/{first.n_features_}-d); expected shards indexed alike")
        self = cls(first.backend, metric=first.metric, query_chunk=query_chunk, **first.get_params())
        self.n_features_ = int(first.n_features_)
        self._set_shards([_Shard(int(s), int(idx.n_samples_), f"shard {j}", index=idx) for j, (idx, s) in enumerate(zip(indexes, row_starts))])
        return self

    def _set_shards(self, shards: list[_Shard]) -> None:
        self._shards = shards
        self.shard_ranges_ = [(s.row_start, s.row_start + s.n_rows) for s in shards]
        self.n_samples_ = sum(s.n_rows for s in shards)
        check_contiguous(self.shard_ranges_, [s.name for s in shards], start=self.shard_ranges_[0][0])

    def close(self) -> None:
        """Remove the temporary folder of spilled shard indexes (also done when garbage-collected)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- search -----------------------------------------------------------------------------
    def kneighbors(self, Q: Any = None, k: int = 1, *, own_rows: Any = None, **query_params: Any) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest rows over all shards, as global rows.

        Parameters
        ----------
        Q : ndarray or h5py.Dataset of shape (n_queries, n_features), or None
            Queries (read ``query_chunk`` rows at a time). ``None``: the indexed rows themselves
            (needs the parts given to :meth:`fit`), each excluding its own row.
        k : int
            Neighbours per query, ``<= n_samples_`` (``n_samples_ - 1`` with own rows excluded);
            may exceed a single shard's rows.
        own_rows : ndarray of shape (n_queries,), int, optional
            Global row of the base that each query *is* (``-1``: none), excluded from its
            neighbours by identity — for queries that are base rows read from another file (a
            shard searched with the whole set). Implied by ``Q=None``.
        **query_params
            Backend per-call options (hnsw: ``ef``, ``num_threads``).

        Returns
        -------
        distances : ndarray of shape (n_queries, k), float32, ascending in the metric's units
        indices : ndarray of shape (n_queries, k), int64 global rows; ties by smaller row

        Raises
        ------
        InputError
            ``k`` out of range, query dimension mismatch, non-finite rows.
        KnnToolsError
            Not fitted, or ``Q=None`` on an index loaded with :meth:`from_saved`.
        """
        if not self.is_fitted:
            raise KnnToolsError("ShardedIndex is not fitted; call fit(parts) or ShardedIndex.from_saved(paths) first")
        if Q is None:
            if not self._parts:
                raise KnnToolsError("ShardedIndex.kneighbors(None, k) needs the parts' rows; pass them as Q with own_rows, or fit(parts)")
            own_rows = np.arange(self.n_samples_, dtype=np.int64)
            nq = self.n_samples_
            read = self._read_base_rows
            qname = "the indexed rows"
        else:
            if not is_h5_dataset(Q):
                Q = as_2d_array(Q, source_name(Q, "queries"))
            qname = source_name(Q, "queries")
            width = int(np.prod(Q.shape[1:], dtype=np.int64)) if len(Q.shape) > 1 else -1
            if width != self.n_features_:
                raise InputError(f"{qname}: query dimension {width} does not match the index dimension {self.n_features_}")
            nq = int(Q.shape[0])

            def read(a: int, b: int) -> np.ndarray:
                return np.ascontiguousarray(np.asarray(Q[a:b]).reshape(b - a, -1), dtype=np.float32)

        exclude = own_rows is not None
        k = check_k(k, self.n_samples_, exclude_self=exclude)
        if exclude:
            own_rows = np.asarray(own_rows, dtype=np.int64).reshape(-1)
            if len(own_rows) != nq:
                raise InputError(f"own_rows has {len(own_rows)} entries for {nq} queries; expected one per query")
        best_d = np.full((nq, k), np.inf, np.float32)
        best_i = np.full((nq, k), EMPTY, np.int64)
        if nq == 0:
            return best_d, best_i
        chunk = self.query_chunk or max(1, QUERY_CHUNK_BYTES // (4 * max(1, self.n_features_)))
        for shard in self._shards:
            with shard.opened() as index:
                for q0 in range(0, nq, chunk):
                    q1 = min(q0 + chunk, nq)
                    block = read(q0, q1)
                    check_finite_rows(block, q0, qname)
                    own = own_rows[q0:q1] - shard.row_start if exclude else None
                    d, i = self._search_shard(index, shard, block, k, own, query_params)
                    best_d[q0:q1], best_i[q0:q1] = merge_topk(best_d[q0:q1], best_i[q0:q1], d, i, k)
        return best_d, best_i

    @staticmethod
    def _search_shard(index: Any, shard: _Shard, block: np.ndarray, k: int, own: np.ndarray | None, query_params: dict) -> tuple[np.ndarray, np.ndarray]:
        """One shard's candidates for a query block, as global rows; own rows masked as empty."""
        in_shard = own is not None and bool(((own >= 0) & (own < shard.n_rows)).any())
        kk = min(k + 1 if in_shard else k, shard.n_rows)
        d, i = index.kneighbors(block, kk, **query_params)
        if in_shard:
            mine = i == own[:, None]
            d[mine] = np.inf
            i = np.where(mine, EMPTY, i + shard.row_start)
        else:
            i = i + shard.row_start
        return d, i

    def _read_base_rows(self, a: int, b: int) -> np.ndarray:
        """Global rows ``[a, b)`` read from the parts, float32 ``(b - a, n_features)``."""
        out = np.empty((b - a, self.n_features_), np.float32)
        for part in self._parts:
            lo, hi = max(a, part.row_start), min(b, part.row_stop)
            if lo < hi:
                rows = np.asarray(part.data[lo - part.row_start : hi - part.row_start])
                out[lo - a : hi - a] = rows.reshape(hi - lo, -1)
        return out


# --------------------------------------------------------------------------------------------
# Per-shard neighbours files
# --------------------------------------------------------------------------------------------


def merge_neighbor_files(paths: Sequence[str | os.PathLike], output: str | os.PathLike, *, force: bool = False, chunk_rows: int = 65536) -> str:
    """Combine ``neighbors`` files written per shard of one base into the global top-k.

    Each part is the output of ``knntools index PART --query Q -k K`` on one shard ``PART`` of
    the base (global row indices; root attributes ``base_row_start``, ``base_row_stop``,
    ``base_total_rows``, ``base_shard_index``, ``base_shard_count``). The result is what
    ``knntools index BASE --query Q -k K`` writes on the whole base with the exact backend
    (ties by smaller row), with ``base_part_uuids`` listing the parts' bases.

    Parameters
    ----------
    paths : sequence of path-like
        The per-shard files, in any order.
    output : path-like
        The merged ``neighbors`` file, written atomically.
    force : bool, default False
        Replace an existing ``output``.
    chunk_rows : int, default 65536
        Queries merged at a time: memory holds one chunk of every part, never a whole part.

    Returns
    -------
    str
        The uuid of the merged file.

    Raises
    ------
    InputError
        A part that is not a per-shard neighbours file; parts of different query files (uuid),
        layers, k, metric or backend; shards of different bases (``base_total_rows``,
        ``base_shard_count``, model) or whose row ranges overlap, leave a gap (a missing shard,
        named by its index and rows) or do not cover the base; ``output`` exists without
        ``force``. Nothing is written then.
    """
    from knntools.io.h5 import KFile, check_output_path
    from knntools.io.neighbors import SHARD_ATTRS, create_neighbors

    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("no neighbours files to merge; expected one per shard")
    check_output_path(output, force)
    check_positive_int("chunk_rows", chunk_rows)
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(KFile(p, kind="neighbors")) for p in paths]
        for kf in files:
            missing = [a for a in SHARD_ATTRS if a not in kf.attrs]
            if missing:
                raise InputError(f"{kf.path}: attribute {missing[0]} missing; expected a per-shard neighbours file (a query file searched on one shard PART by `knntools index`)")
        first = files[0]
        for key in ("query_uuid", "layers", "k", "metric", "backend", "exclude_self", "base_total_rows", "base_shard_count", "base_model_uuid", "classes"):
            for kf in files[1:]:
                if kf.attrs.get(key) != first.attrs.get(key):
                    what = "searched with another query file" if key == "query_uuid" else "a shard of another base" if key.startswith("base_") else "searched differently"
                    raise InputError(f"{kf.path}: {key} is {kf.attrs.get(key)!r} but {first.path} has {first.attrs.get(key)!r} ({what}); expected the same for every shard")
        dup = {}
        for kf in files:
            dup.setdefault(kf.attrs["base_shard_index"], []).append(kf.path)
        for index, ps in dup.items():
            if len(ps) > 1:
                raise InputError(f"{ps[1]}: shard {index} given twice (also {ps[0]}); expected each shard once")
        files.sort(key=lambda kf: int(kf.attrs["base_row_start"]))
        total = int(first.attrs["base_total_rows"])
        count = int(first.attrs["base_shard_count"])
        check_contiguous([(int(kf.attrs["base_row_start"]), int(kf.attrs["base_row_stop"])) for kf in files], [str(kf.path) for kf in files],
                         total, gap=lambda lo, hi: _missing_shard(lo, hi, total, count))
        layers = [str(n) for n in first.attrs.get("layers") or []]
        k = int(first.attrs["k"])
        nq = first.n_samples
        q_ids = first.read("ids")
        for kf in files[1:]:
            if kf.n_samples != nq or not np.array_equal(kf.read("ids"), q_ids):
                raise InputError(f"{kf.path}: query ids differ from {first.path}'s; expected the same queries")
        attrs = {key: first.attrs.get(key) for key in ("metric", "distance_units", "backend", "params", "classes", "query_uuid", "exclude_self", "base_model_uuid")}
        attrs.update({"base_uuid": "", "base_part_uuids": [str(kf.attrs.get("base_uuid", "")) for kf in files], "base_total_rows": total})
        layer_attrs = {name: {key: first.f[f"neighbors/{name}"].attrs.get(key) for key in ("n_features",) if key in first.f[f"neighbors/{name}"].attrs} for name in layers}
        with create_neighbors(output, layers=layers, n_queries=nq, k=k, query_ids=q_ids,
                              query_labels=first.read("labels") if first.has("labels") else None,
                              attrs=attrs, layer_attrs=layer_attrs, parents=[kf.uuid for kf in files], force=force) as (f, out):
            for name in layers:
                sets = [(kf.dataset(f"neighbors/{name}/distances"), kf.dataset(f"neighbors/{name}/indices"), kf.dataset(f"neighbors/{name}/ids")) for kf in files]
                for q0 in range(0, nq, chunk_rows):
                    q1 = min(q0 + chunk_rows, nq)
                    d = np.concatenate([np.asarray(s[0][q0:q1], np.float32) for s in sets], axis=1)
                    i = np.concatenate([np.asarray(s[1][q0:q1], np.int64) for s in sets], axis=1)
                    ids = np.concatenate([np.asarray(s[2][q0:q1], np.int64) for s in sets], axis=1)
                    order = np.lexsort((i, d), axis=-1)[:, :k]
                    out[name]["distances"][q0:q1] = np.take_along_axis(d, order, 1)
                    out[name]["indices"][q0:q1] = np.take_along_axis(i, order, 1)
                    out[name]["ids"][q0:q1] = np.take_along_axis(ids, order, 1)
            return str(f.attrs["uuid"])


def _missing_shard(start: int, stop: int, total: int, count: int) -> str:
    """Name the shard(s) holding rows ``[start, stop)`` of ``total`` split into ``count``."""
    from knntools.io.shards import shard_rows

    owners = [i for i in range(count) if shard_rows(total, i, count)[0] < stop and shard_rows(total, i, count)[1] > start]
    label = ", ".join(f"{i}/{count}" for i in owners) or "?"
    return f"shard {label} (base rows [{start}, {stop}))"
