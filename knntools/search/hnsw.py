"""Approximate k-NN search with hnswlib, normalised to the knntools contract.

The adapter hides hnswlib's conventions: it returns ``(distances, indices)`` (hnswlib returns
``(labels, distances)``), Euclidean distances (hnswlib's ``l2`` space is *squared*), the negative
inner product for ``ip`` (hnswlib returns ``1 - <q, x>``), int64 indices (hnswlib: uint64), and it
sets the search breadth ``ef`` before every query (hnswlib forgets it when an index is loaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from knntools.errors import InputError, KnnToolsError
from knntools.search.base import NeighborIndex, RowSource, check_positive_int, drop_own_rows, rows_per_block
from knntools.search.names import HNSW_DEFAULT_EF_CONSTRUCTION, HNSW_DEFAULT_M, HNSW_MIN_EF

#: hnswlib space for each metric.
_SPACES = {"l2": "l2", "cosine": "cosine", "ip": "ip"}
#: Rows added / queried per hnswlib call (bounds the float32 copy of h5py or float16 input).
_BLOCK_BYTES = 128 << 20


def default_ef(k: int) -> int:
    """Search breadth used when none is set: ``max(200, 2 * k)``."""
    return max(HNSW_MIN_EF, 2 * k)


class HnswIndex(NeighborIndex):
    """hnswlib graph index (Malkov & Yashunin, 2018, arXiv:1603.09320) behind the knntools contract.

    Parameters
    ----------
    metric : {"l2", "cosine", "ip"}, default "l2"
        hnswlib space ``l2``, ``cosine`` (rows normalised by hnswlib) or ``ip``. Distances are
        returned in knntools units: Euclidean (not squared), ``1 - cosine similarity``, negative
        inner product.
    M : int, default 16
        Graph degree (memory ~ ``n * M * 8`` bytes on top of the vectors).
    ef_construction : int, default 200
        Build breadth: larger is slower to build and gives a better graph.
    ef : int or None, default None
        Search breadth, saved with the index and used by every :meth:`kneighbors` call unless
        that call passes its own ``ef``. ``None`` means ``max(200, 2 * k)``. A value below the
        number of neighbours requested is raised to it *for that query only* (hnswlib cannot
        return more than ``ef`` results); the stored value is never changed.
    num_threads : int or None, default None
        Threads for building and searching; ``None`` uses every core.
    seed : int, default 0
        hnswlib's ``random_seed`` (level assignment). A build is reproducible for the same
        seed, data and ``num_threads=1``; with several threads insertion order varies.

    Notes
    -----
    With the defaults, recall@10 against exact search is >= 0.99 on 60k Fashion-MNIST rows
    (see ``benchmarks/results/search.md``). ``kneighbors(None, k)`` queries every stored row
    for ``k + 1`` neighbours and drops the row's own id (or the last neighbour when its own
    id is not among them, e.g. among many exact duplicates).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
    >>> index = HnswIndex(metric="l2", ef=50).fit(X)
    >>> d, i = index.kneighbors(X[:2], 3)
    >>> i[:, 0].tolist(), float(d[0, 0])
    ([0, 1], 0.0)
    """

    backend = "hnsw"

    def __init__(
        self,
        *,
        metric: str = "l2",
        M: int = HNSW_DEFAULT_M,
        ef_construction: int = HNSW_DEFAULT_EF_CONSTRUCTION,
        ef: int | None = None,
        num_threads: int | None = None,
        seed: int = 0,
    ):
        super().__init__(metric=metric)
        self.M = check_positive_int("M", M, minimum=2)
        self.ef_construction = check_positive_int("ef_construction", ef_construction)
        self.ef = check_positive_int("ef", ef, optional=True)
        self.num_threads = check_positive_int("num_threads", num_threads, optional=True)
        self.seed = check_positive_int("seed", seed, minimum=0)
        self._index: Any = None

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters except ``metric``."""
        return {
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef": self.ef,
            "num_threads": self.num_threads,
            "seed": self.seed,
        }

    def _threads(self, num_threads: int | None = None) -> int:
        n = num_threads if num_threads is not None else self.num_threads
        return -1 if n is None else int(n)

    # -- fit ----------------------------------------------------------------------------------
    def _fit(self, source: RowSource) -> None:
        import hnswlib

        index = hnswlib.Index(space=_SPACES[self.metric], dim=source.n_features)
        index.init_index(
            max_elements=source.n_samples, M=self.M, ef_construction=self.ef_construction, random_seed=self.seed
        )
        threads = self._threads()
        for start, block in source.blocks(rows_per_block(source.n_features, _BLOCK_BYTES)):
            index.add_items(block, np.arange(start, start + len(block), dtype=np.int64), num_threads=threads)
        self._index = index

    # -- search -------------------------------------------------------------------------------
    def effective_ef(self, k: int, ef: int | None = None) -> int:
        """The breadth a query for ``k`` neighbours runs with: ``ef`` (this call), else the stored
        :attr:`ef`, else ``max(200, 2k)``; raised to ``k`` when smaller."""
        chosen = ef if ef is not None else self.ef if self.ef is not None else default_ef(k)
        return max(int(chosen), k)

    def kneighbors(
        self, Q: Any = None, k: int = 1, *, ef: int | None = None, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Find the ``k`` approximate nearest indexed rows of each query.

        Parameters
        ----------
        Q : ndarray of shape (n_queries, n_features) or None
            Queries (float32/float16, finite). ``None``: the base against itself, own row excluded.
        k : int
            Neighbours per query (``<= n_samples_``, or ``n_samples_ - 1`` when ``Q`` is None).
        ef : int, optional
            Search breadth for this call only (default: the stored :attr:`ef`, else
            ``max(200, 2k)``); raised to ``k`` (``k + 1`` when ``Q`` is None) if smaller.
        num_threads : int, optional
            Threads for this call (default: the stored ``num_threads``, else all cores).

        Returns
        -------
        distances : ndarray of shape (n_queries, k), float32
            Ascending, in the metric's units (Euclidean, not squared, for ``l2``).
        indices : ndarray of shape (n_queries, k), int64

        Raises
        ------
        InputError
            ``k`` out of range, dimension mismatch, non-finite query rows, invalid ``ef``.
        KnnToolsError
            hnswlib found fewer than ``k`` neighbours (raise ``ef``).
        """
        check_positive_int("ef", ef, optional=True)
        check_positive_int("num_threads", num_threads, optional=True)
        return super().kneighbors(Q, k, ef=ef, num_threads=num_threads)

    def _search(self, Q: np.ndarray | None, k: int, **query_params: Any) -> tuple[np.ndarray, np.ndarray]:
        ef, num_threads = query_params.pop("ef", None), query_params.pop("num_threads", None)
        if query_params:
            raise InputError(f"unknown search option(s) for the hnsw backend: {', '.join(sorted(query_params))}")
        self_query = Q is None
        n_query_k = k + 1 if self_query else k
        self._index.set_ef(self.effective_ef(n_query_k, ef))
        threads = self._threads(num_threads)
        nq = self.n_samples_ if self_query else len(Q)
        step = rows_per_block(self.n_features_, _BLOCK_BYTES)
        parts_d, parts_i = [], []
        for start in range(0, nq, step):
            stop = min(start + step, nq)
            if self_query:
                block = self._index.get_items(np.arange(start, stop), return_type="numpy")
            else:
                block = Q[start:stop]
            block = np.ascontiguousarray(block, dtype=np.float32)
            try:
                labels, dist = self._index.knn_query(block, k=n_query_k, num_threads=threads)
            except RuntimeError as exc:
                raise KnnToolsError(f"hnsw search found fewer than {n_query_k} neighbours ({exc}); raise ef") from None
            labels = labels.view(np.int64)  # uint64 ids < 2**63: same bits, no copy
            if self_query:
                labels, dist = drop_own_rows(labels, dist, np.arange(start, stop, dtype=np.int64))
            parts_i.append(labels)
            parts_d.append(dist)
        indices = parts_i[0] if len(parts_i) == 1 else np.concatenate(parts_i)
        distances = parts_d[0] if len(parts_d) == 1 else np.concatenate(parts_d)
        if self.metric == "l2":
            np.sqrt(np.maximum(distances, 0, out=distances), out=distances)
        elif self.metric == "ip":
            distances -= 1  # hnswlib's ip distance is 1 - <q, x>
        return distances, indices

    # -- persistence --------------------------------------------------------------------------
    def _save_payload(self, path: Path) -> None:
        self._index.save_index(str(path))

    def _load_payload(self, path: Path, header: dict[str, Any]) -> None:
        import hnswlib

        index = hnswlib.Index(space=_SPACES[self.metric], dim=int(header["n_features"]))
        try:
            index.load_index(str(path), max_elements=int(header["n_samples"]))
        except RuntimeError as exc:
            raise InputError(f"{path}: not a readable hnsw index ({exc}); rebuild it") from None
        if index.get_current_count() != int(header["n_samples"]):
            raise InputError(f"{path}: holds {index.get_current_count()} rows but its header says {header['n_samples']}; rebuild the index")
        self._index = index
