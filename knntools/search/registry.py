"""Backend registry: names to classes, construction, loading and one-call search."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np

from knntools.errors import InputError
from knntools.search.base import NeighborIndex, check_metric, read_header
from knntools.search.exact import ExactIndex
from knntools.search.hnsw import HnswIndex
from knntools.search.names import BACKEND_NAMES, METRICS

#: Backend name -> class, in :data:`knntools.search.names.BACKEND_NAMES` order.
BACKENDS: dict[str, type[NeighborIndex]] = {"exact": ExactIndex, "hnsw": HnswIndex}
assert tuple(BACKENDS) == BACKEND_NAMES

__all__ = ["BACKENDS", "METRICS", "default_index_path", "fit_index", "knn_search", "load_index", "make_index", "read_index_header"]


def backend_params(backend: str) -> dict[str, Any]:
    """Parameter names of ``backend`` (besides ``metric``) with their defaults."""
    cls = _backend_class(backend)
    sig = inspect.signature(cls.__init__)
    return {name: p.default for name, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY and name != "metric"}


def _backend_class(backend: str) -> type[NeighborIndex]:
    try:
        return BACKENDS[backend]
    except (KeyError, TypeError):
        raise InputError(f"unknown search backend {backend!r}; expected one of {', '.join(BACKENDS)}") from None


def make_index(backend: str = "exact", *, metric: str = "l2", **params: Any) -> NeighborIndex:
    """Create an unfitted index.

    Parameters
    ----------
    backend : {"exact", "hnsw"}, default "exact"
        See :class:`~knntools.search.exact.ExactIndex` and :class:`~knntools.search.hnsw.HnswIndex`.
    metric : {"l2", "cosine", "ip"}, default "l2"
    **params
        Backend parameters: exact ``device``, ``num_threads``, ``batch_size``, ``base_batch_size``;
        hnsw ``M``, ``ef_construction``, ``ef``, ``num_threads``, ``seed``.

    Returns
    -------
    NeighborIndex

    Raises
    ------
    InputError
        Unknown backend, metric or parameter name (the message lists the accepted ones), or an
        invalid parameter value.
    """
    cls = _backend_class(backend)
    check_metric(metric, cls.metrics)
    accepted = backend_params(backend)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InputError(f"unknown parameter(s) {', '.join(unknown)} for backend {backend!r}; accepted: {', '.join(accepted)}")
    return cls(metric=metric, **params)


def fit_index(backend: str, X: Any, *, metric: str = "l2", **params: Any) -> Any:
    """Fit an index on ``X``: one index per shard when ``X`` is sharded, else one index.

    The entry point of every method that builds an index on training rows (``dknn``, ``lasenn``,
    ``distill-knet``, ``probe``, ``seq2knn``): handed the shards of a split it searches them with
    :class:`knntools.search.sharded.ShardedIndex` (results in global rows, identical to the whole
    split with ``backend="exact"``), so that no process holds more than one shard's index.

    Parameters
    ----------
    backend : {"exact", "hnsw"}
    X : ndarray, h5py.Dataset, h5py virtual dataset over part files, or sequence of parts
        A sequence of arrays / h5py datasets / :class:`~knntools.search.sharded.ShardPart` is
        taken as consecutive shards; a virtual dataset whose row blocks are whole datasets of
        other files (a sharded activation set) is expanded into them (see
        :func:`knntools.search.sharded.parts_of`).
    metric : {"l2", "cosine", "ip"}, default "l2"
    **params
        Backend parameters (see :func:`make_index`).

    Returns
    -------
    NeighborIndex or ShardedIndex
        Fitted; both answer ``kneighbors(Q, k)`` and ``kneighbors(None, k)`` under the same contract.

    Raises
    ------
    InputError
        As :func:`make_index` and ``fit``; parts with gaps, overlaps or different widths.
    """
    from knntools.search.sharded import ShardedIndex, parts_of

    parts = parts_of(X)
    if parts is None:
        return make_index(backend, metric=metric, **params).fit(X)
    return ShardedIndex(backend, metric=metric, **params).fit(parts)


def read_index_header(path: str | os.PathLike) -> dict[str, Any]:
    """Read the JSON sidecar of a saved index without loading it (see :func:`knntools.search.base.read_header`)."""
    return read_header(path)


def load_index(path: str | os.PathLike, *, expected: dict[str, Any] | None = None) -> NeighborIndex:
    """Load an index saved with ``index.save(path)``, whatever its backend.

    Parameters
    ----------
    path : path-like
        The payload file (its sidecar ``<path>.json`` must be beside it).
    expected : dict, optional
        Facts the index must match, checked *before* the index is loaded. Keys are header fields
        (``backend``, ``metric``, ``n_features``, ``n_samples``) or metadata keys (``source_uuid``,
        ``layer``, ...). Example: ``{"source_uuid": kf.uuid, "layer": "fc2", "metric": "l2"}``.

    Returns
    -------
    NeighborIndex
        Fitted, with :attr:`~NeighborIndex.metadata` restored.

    Raises
    ------
    InputError
        Missing/invalid files, or a mismatch with ``expected`` (e.g. an index built from another file).
    """
    head = read_header(path)
    if expected:
        check_index_matches(path, head, expected)
    return _backend_class(head["backend"]).load(path, head)


def check_index_matches(path: str | os.PathLike, header: dict[str, Any], expected: dict[str, Any]) -> None:
    """Raise :class:`InputError` if the index header disagrees with any ``expected`` value.

    See :func:`load_index` for the keys.
    """
    meta = header.get("metadata") or {}
    for key, want in expected.items():
        have = header[key] if key in ("backend", "metric", "n_features", "n_samples") else meta.get(key)
        if have != want:
            what = {
                "source_uuid": "it was built from another file",
                "layer": "it indexes another layer",
            }.get(key, "it was built differently")
            raise InputError(f"{path}: index {key} is {have!r} but {want!r} is expected ({what}); rebuild it with `knntools index`")


def default_index_path(data_path: str | os.PathLike, layer: str, backend: str = "hnsw") -> Path:
    """Where ``knntools index`` saves an index by default: ``<stem>.<layer>.<backend>`` beside the data.

    ``train.h5``, layer ``fc2`` -> ``train.fc2.hnsw`` (sidecar ``train.fc2.hnsw.json``).
    """
    p = Path(data_path)
    return p.with_name(f"{p.stem}.{layer}.{backend}")


def knn_search(
    X: Any,
    Q: Any,
    k: int,
    backend: str = "exact",
    metric: str = "l2",
    exclude_self: bool = False,
    **params: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit an index on ``X`` and return the ``k`` nearest rows of ``X`` for each query.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), h5py.Dataset, or shards
        Base rows (float32/float16, finite); shards as for :func:`fit_index` (then ``indices``
        are global rows).
    Q : ndarray of shape (n_queries, n_features) or None
        Queries; ``None`` (or ``X`` itself) with ``exclude_self=True`` queries the base against
        itself without each row's own row.
    k : int
        Neighbours per query.
    backend : {"exact", "hnsw"}, default "exact"
    metric : {"l2", "cosine", "ip"}, default "l2"
    exclude_self : bool, default False
        Exclude each row's own row (requires ``Q`` to be ``None`` or ``X``).
    **params
        Backend parameters (see :func:`make_index`).

    Returns
    -------
    distances : ndarray of shape (n_queries, k), float32, ascending in the metric's units
    indices : ndarray of shape (n_queries, k), int64 rows of ``X``

    Raises
    ------
    InputError
        Invalid arguments (see :func:`make_index` and ``NeighborIndex.kneighbors``), or
        ``exclude_self`` with queries other than ``X``.
    """
    if Q is None and not exclude_self:
        raise InputError("Q is None: pass the queries, or exclude_self=True to query X against itself")
    if exclude_self and Q is not None and Q is not X:
        raise InputError("exclude_self=True queries X against itself; pass Q=None (or Q=X)")
    index = fit_index(backend, X, metric=metric, **params)
    return index.kneighbors(None if exclude_self else Q, k)
