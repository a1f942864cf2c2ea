"""Nearest-neighbour search behind one small interface.

::

    from knntools.search import make_index, knn_search, load_index

    index = make_index("hnsw", metric="l2", M=16, ef_construction=200).fit(X)
    distances, indices = index.kneighbors(Q, 10)       # float32 / int64, shape (n_queries, 10)
    distances, indices = index.kneighbors(None, 10)    # the base against itself, own row excluded
    index.save("train.penultimate.hnsw", metadata={"source_uuid": uuid, "layer": "penultimate"})
    index = load_index("train.penultimate.hnsw")

    distances, indices = knn_search(X, Q, 10)          # exact search in one call

    index = fit_index("hnsw", [X0, X1, X2])            # one index per shard; global row indices

Conventions (every backend): distances are float32, sorted ascending, in the metric's own units
(``l2``: Euclidean, not squared; ``cosine``: ``1 - cosine similarity``; ``ip``: the *negative*
inner product, so ascending still means most similar first); indices are int64 rows of the fitted
``X``. See :mod:`knntools.search.base` for the full contract and ``docs/index.md`` for the file format.

Importing this package is cheap (no numpy, torch or hnswlib): the names below are loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from knntools.search.names import BACKEND_NAMES, DEFAULT_BACKEND, DISTANCE_UNITS, METRICS

_LAZY = {
    "make_index": "registry",
    "fit_index": "registry",
    "knn_search": "registry",
    "load_index": "registry",
    "read_index_header": "registry",
    "default_index_path": "registry",
    "BACKENDS": "registry",
    "NeighborIndex": "base",
    "recall_at_k": "base",
    "ExactIndex": "exact",
    "HnswIndex": "hnsw",
    "ShardedIndex": "sharded",
    "merge_neighbor_files": "sharded",
}

__all__ = ["BACKEND_NAMES", "DEFAULT_BACKEND", "DISTANCE_UNITS", "METRICS", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f"knntools.search.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'knntools.search' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
