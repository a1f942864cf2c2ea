"""Every neighbour search of seq2knn, through :mod:`knntools.search`: the kNN targets (full and
out-of-core), the V2VS reference labelling and the kNN benchmarks.

* :func:`full_neighbors` — exact (or hnsw) K-NN of every training row in the whole training set,
  own row excluded (``knntools.search.knn_search``).
* :func:`out_of_core_neighbors` — the paper's Algorithm 1 (§3 "Out-of-Core Models"): for each block
  of query rows, R random batches of B rows; the K nearest among the union of the sampled rows
  (exact backend), so only one query block and its sampled rows are ever in memory.
* :class:`ReferenceLabeler` — label vectors by their nearest reference (training) row (V2VS).
* :func:`knn_vote`, :func:`knn_predict`, :func:`knn_predict_batch` — the kNN benchmarks (paper §4,
  Tables 2 and 3).

Neighbour lists are ordered by (distance, row): among equal distances the smaller row comes first
(:func:`knntools.search.sharded.merge_topk`). The number of neighbours is checked once, by
:func:`knntools.search.base.check_k`.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from knntools.errors import InputError
from knntools.methods.seq2knn.data import take_rows


def full_neighbors(X: np.ndarray, K: int = 5, *, backend: str = "exact", metric: str = "l2", **params: Any) -> tuple[np.ndarray, np.ndarray]:
    """K nearest training rows of every training row in the whole set, excluding the row itself.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32
    K : int, default 5
        Neighbours per row, ``1 <= K <= n_samples - 1``.
    backend, metric, **params
        See :func:`knntools.search.make_index`.

    Returns
    -------
    distances : float32 [n_samples, K] ascending; indices : int64 [n_samples, K] rows of ``X``.

    Raises
    ------
    InputError
        ``K`` out of range (:func:`knntools.search.base.check_k`) or invalid search options.
    """
    from knntools.search import knn_search
    from knntools.search.base import check_k

    X = np.ascontiguousarray(X, dtype=np.float32)
    check_k(K, len(X), exclude_self=True, param="k")
    return knn_search(X, None, K, backend=backend, metric=metric, exclude_self=True, **params)


def _self_distance(Q: np.ndarray, metric: str) -> np.ndarray:
    """Each row's distance to itself in the metric's units (l2/cosine: 0; ip: −||q||²) → float32 [n]."""
    if metric == "ip":
        return (-(Q * Q).sum(1)).astype(np.float32)
    return np.zeros(len(Q), dtype=np.float32)


def nearest_in_rows(Q: np.ndarray, base: np.ndarray, rows: np.ndarray, k: int, *, metric: str = "l2",
                    own: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest of ``base`` for each query, as rows of the caller's array, ordered by (distance, row).

    The search step of Algorithm 1 (paper §3 "Out-of-Core Models") and of the out-of-core kNN
    benchmark, through the exact backend of :mod:`knntools.search` and
    :func:`knntools.search.sharded.merge_topk`: among equal distances the smaller row comes first,
    also at the k-th place (queries with a tie across the cut get every candidate's distance).

    Parameters
    ----------
    Q : float32 [n, D] queries
    base : float32 [m, D] candidate rows (already read and transformed)
    rows : int64 [m] the caller's row number of each ``base`` row (sorted, distinct)
    k : int   ``<= m`` (``<= m - 1`` with ``own``)
    metric : {"l2", "cosine", "ip"}
    own : int64 [n], optional
        Each query's own row: never returned (it is dropped when it is among ``rows``).

    Returns
    -------
    distances : float32 [n, k] ascending; indices : int64 [n, k] entries of ``rows``
    """
    from knntools.search import knn_search
    from knntools.search.base import drop_own_rows
    from knntools.search.sharded import merge_topk

    m, n = len(rows), len(Q)
    extra = 1 if own is not None else 0
    k = min(k, m - extra)

    def search(q: np.ndarray, own_q: np.ndarray | None, kk: int) -> tuple[np.ndarray, np.ndarray]:
        d, pos = knn_search(base, q, kk, backend="exact", metric=metric)
        idx = rows[pos]
        if own_q is not None:
            idx, d = drop_own_rows(idx, d, own_q)
        return d, idx

    # one more than needed: when the last one is farther than the k-th, no row tied with the k-th
    # was left out; otherwise (a tie across the cut) those queries get every candidate's distance
    k_req = min(m, k + 1 + extra)
    d, idx = search(Q, own, k_req)
    cut = np.flatnonzero(d[:, -1] == d[:, k - 1]) if k_req < m else np.zeros(0, np.int64)
    out_d, out_i = merge_topk(np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64), d, idx, k)
    if len(cut):
        d_all, i_all = search(Q[cut], None if own is None else np.asarray(own)[cut], m)
        out_d[cut], out_i[cut] = merge_topk(np.zeros((len(cut), 0), np.float32), np.zeros((len(cut), 0), np.int64), d_all, i_all, k)
    return out_d, out_i


def out_of_core_neighbors(
    X: Any,
    K: int = 5,
    *,
    batches: int = 50,
    batch_size: int = 64,
    metric: str = "l2",
    pool: np.ndarray | None = None,
    query_rows: np.ndarray | None = None,
    query_block: int | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    random_state: Any = None,
    return_samples: bool = False,
    include_query: bool = True,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Approximate K-NN targets from R random batches of B rows (paper §3 "Out-of-Core Models", Algorithm 1).

    For each block of ``query_block`` query rows (read once), R batches of B rows are drawn
    uniformly without replacement from ``pool`` (independently per batch, so a row may recur across
    batches). Every query gets the exact K nearest among the union of its R·B sampled rows (read
    once, searched by the exact backend of :mod:`knntools.search`), plus itself with
    ``include_query`` (the paper: "we sample a subset S from the training set (including x)": the
    query is a candidate of every S, so with l2/cosine its first target is itself, at distance 0).
    With ``include_query=False`` the query's own row is never its neighbour (a deviation, matching
    the full targets of :func:`full_neighbors`). Only one query block and its sampled rows are in
    memory at a time. Ties: the smaller row first.

    Parameters
    ----------
    X : ndarray or h5py.Dataset of shape (n_rows, n_features)
        Rows (only the sampled ones are read when an h5py dataset).
    K : int, default 5
        ``1 <= K <= len(pool)`` (``len(pool) - 1`` with ``include_query=False``).
    batches : int, default 50      R
    batch_size : int, default 64   B (must exceed K)
    metric : {"l2", "cosine", "ip"}, default "l2"
    pool : int array, optional
        Rows batches are drawn from (default all rows); neighbour indices are rows of ``X``.
    query_rows : int array, optional
        Rows to find neighbours for (default ``pool``).
    query_block : int, optional
        Queries sharing the same R batches (default ``batch_size``).
    transform : callable, optional
        Applied to every block after reading (e.g. a :class:`Standardizer`).
    random_state : int, Generator or None
    return_samples : bool, default False
        Also return, per query block, the sorted union of sampled rows (for tests).
    include_query : bool, default True
        The query row is in every sampled set S (the paper); False excludes it.

    Returns
    -------
    distances : float32 [n_queries, K] ascending, in the metric's units
    indices : int64 [n_queries, K], rows of ``X``
    samples : list of int64 arrays, only with ``return_samples``

    Raises
    ------
    InputError
        ``batch_size <= K``, ``K`` out of range (:func:`knntools.search.base.check_k`), unknown
        metric, or non-finite rows.
    """
    from knntools.search.base import check_k, check_metric
    from knntools.search.sharded import merge_topk
    from knntools.utils import as_generator

    rng = as_generator(random_state)
    n = int(X.shape[0])
    pool = np.arange(n, dtype=np.int64) if pool is None else np.asarray(pool, dtype=np.int64)
    query_rows = pool if query_rows is None else np.asarray(query_rows, dtype=np.int64)
    check_metric(metric)
    if batches < 1:
        raise InputError(f"batches={batches}: expected R >= 1", param="batches")
    K = check_k(K, len(pool), exclude_self=not include_query, param="k")
    if batch_size <= K:
        raise InputError(f"batch size B={batch_size} must exceed K={K} (paper: B > K)")
    B = min(batch_size, len(pool))
    qb = int(query_block or batch_size)
    tf = transform or (lambda a: a)
    out_d = np.empty((len(query_rows), K), dtype=np.float32)
    out_i = np.empty((len(query_rows), K), dtype=np.int64)
    samples: list[np.ndarray] = []
    for qs in range(0, len(query_rows), qb):
        qrows = query_rows[qs : qs + qb]
        Q = np.ascontiguousarray(tf(take_rows(X, qrows)), dtype=np.float32)
        union = np.unique(np.concatenate([rng.choice(pool, size=B, replace=False) for _ in range(batches)]))
        base = np.ascontiguousarray(tf(take_rows(X, union)), dtype=np.float32)
        # the union minus each query's own row; with include_query the query itself at its self-distance
        d, i = nearest_in_rows(Q, base, union, K, metric=metric, own=qrows)
        if include_query:
            d, i = merge_topk(_self_distance(Q, metric)[:, None], qrows[:, None], d, i, K)
        out_d[qs : qs + len(qrows)] = d
        out_i[qs : qs + len(qrows)] = i
        if return_samples:
            samples.append(union)
    if return_samples:
        return out_d, out_i, samples
    return out_d, out_i


class ReferenceLabeler:
    """Label vectors by their nearest reference row (V2VS inference, paper §3: "finding the labels of
    out-of-sample feature vectors" among the training samples), through :mod:`knntools.search`.

    Parameters
    ----------
    X : ndarray [N, D] float32, :class:`RowView` or :class:`SubsetRows` — standardised rows
    y : int64 [N] labels of the rows of ``X``
    rows : int64 array, optional
        The reference rows of ``X`` (default all): the training rows, or a label bank.
    backend, metric, **params
        See :func:`knntools.search.make_index`. An in-memory ``X`` (or any ``backend`` other than
        ``exact``) is indexed once; a row view with the exact backend is *streamed*: every call reads
        the reference rows in blocks of ``block_rows`` and merges each block's 1-NN, so the training
        set is never held whole.
    block_rows : int, default 65536

    Raises
    ------
    InputError
        No reference rows, or invalid search options.
    """

    def __init__(self, X: Any, y: np.ndarray, rows: np.ndarray | None = None, *, backend: str = "exact", metric: str = "l2",
                 block_rows: int = 65536, **params: Any):
        n = int(X.shape[0])
        self.rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(self.rows) == 0:
            raise InputError("V2VS labelling: no reference rows; expected at least one training sample")
        self.y = np.asarray(y, dtype=np.int64)[self.rows]
        self.X, self.backend, self.metric, self.params, self.block_rows = X, backend, metric, dict(params), int(block_rows)
        self.index = None
        if isinstance(X, np.ndarray) or backend != "exact":
            from knntools.search import make_index

            data = np.ascontiguousarray(X[self.rows] if isinstance(X, np.ndarray) else
                                        np.concatenate([np.asarray(X[self.rows[s : s + block_rows]]) for s in range(0, len(self.rows), block_rows)]),
                                        dtype=np.float32)
            self.index = make_index(backend, metric=metric, **params).fit(data)

    def __len__(self) -> int:
        return len(self.rows)

    def nearest(self, V: np.ndarray) -> np.ndarray:
        """Positions (int64 [m], into the reference rows) of the nearest reference row of each vector ``V`` [m, D]."""
        V = np.ascontiguousarray(V, dtype=np.float32)
        if len(V) == 0:
            return np.zeros(0, dtype=np.int64)
        if self.index is not None:
            return self.index.kneighbors(V, 1)[1][:, 0]
        from knntools.search import knn_search

        best_d = np.full(len(V), np.inf)
        best_i = np.zeros(len(V), dtype=np.int64)
        for s in range(0, len(self.rows), self.block_rows):
            block = np.ascontiguousarray(self.X[self.rows[s : s + self.block_rows]], dtype=np.float32)
            d, i = knn_search(block, V, 1, backend="exact", metric=self.metric, **self.params)
            better = d[:, 0] < best_d  # strict: ties keep the earlier block (lower row)
            best_d[better], best_i[better] = d[better, 0], s + i[better, 0]
        return best_i

    def labels(self, V: np.ndarray) -> np.ndarray:
        """Label (int64 [m]) of the nearest reference row of each vector ``V`` [m, D]."""
        return self.y[self.nearest(V)]


def knn_vote(neighbor_labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Majority vote over neighbour labels int64 [n, K] → (predictions int64 [n], vote fractions float32 [n, C]).

    Ties go to the class of the nearer neighbour among the tied classes (scan in neighbour order).
    """
    n, K = neighbor_labels.shape
    votes = np.zeros((n, n_classes), dtype=np.float32)
    for t in range(K):
        np.add.at(votes, (np.arange(n), neighbor_labels[:, t]), 1.0)
    # tie-break: small bonus decreasing with rank
    bonus = np.zeros_like(votes)
    for t in range(K - 1, -1, -1):
        bonus[np.arange(n), neighbor_labels[:, t]] = (K - t) * 1e-3
    pred = (votes + bonus).argmax(1).astype(np.int64)
    return pred, votes / K


def knn_predict(X_train: np.ndarray, y_train: np.ndarray, X_query: np.ndarray, n_classes: int, K: int = 5, *,
                backend: str = "exact", metric: str = "l2", **params: Any) -> np.ndarray:
    """Plain kNN benchmark over the whole training set → predictions int64 [n_queries]."""
    from knntools.search import knn_search

    _, idx = knn_search(np.ascontiguousarray(X_train, dtype=np.float32), np.ascontiguousarray(X_query, dtype=np.float32), K,
                        backend=backend, metric=metric, **params)
    return knn_vote(np.asarray(y_train)[idx], n_classes)[0]


def knn_predict_batch(X: Any, y: np.ndarray, pool: np.ndarray, X_query: np.ndarray, n_classes: int, K: int = 5, *,
                      batch_size: int = 64, metric: str = "l2", query_block: int = 64, random_state: Any = 0) -> np.ndarray:
    """Out-of-core kNN benchmark (paper Table 3): each block of queries sees only one random batch of
    ``batch_size`` training rows (drawn from ``pool``) and votes among its K nearest there
    (:func:`nearest_in_rows`; at most the batch's rows).

    Parameters
    ----------
    X : row view (ndarray [N, D] or :class:`RowView`), standardised
    y : int64 [N] labels of the rows of ``X``
    pool : int64 rows of ``X`` the batches are drawn from
    X_query : float32 [n_queries, D]
    n_classes, K : int
    batch_size, query_block : int, default 64
    metric : {"l2", "cosine", "ip"}
    random_state : int, Generator or None

    Returns
    -------
    predictions : int64 [n_queries]
    """
    from knntools.utils import as_generator

    rng = as_generator(random_state)
    preds = np.empty(len(X_query), dtype=np.int64)
    for s in range(0, len(X_query), query_block):
        brows = np.sort(rng.choice(pool, size=min(batch_size, len(pool)), replace=False))
        Q = np.ascontiguousarray(X_query[s : s + query_block], dtype=np.float32)
        _, nb = nearest_in_rows(Q, np.ascontiguousarray(X[brows], dtype=np.float32), brows, min(K, len(brows)), metric=metric)
        preds[s : s + query_block] = knn_vote(np.asarray(y)[nb], n_classes)[0]
    return preds
