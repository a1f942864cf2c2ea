"""Exact (brute-force) k-nearest-neighbour search in torch: the reference every backend is tested against.

Distances are computed block by block, faiss-style: the base is read once, in blocks of
``base_batch_size`` rows (an h5py dataset is streamed, never loaded whole); each base block is
multiplied with blocks of ``batch_size`` queries into one reused score buffer by a single GEMM
(``2 q.x - ||x||^2`` for l2, via operands augmented with ``||x||^2`` and ``-1``; ``q.x / ||x||``
for cosine; ``q.x`` for ip); the best ``k`` per query are taken with ``topk`` and merged into a
running top-k. Memory therefore stays bounded by the two blocks and the
``(batch_size, base_batch_size)`` score buffer, whatever the size of the base. Runs on CUDA when
present (``device="auto"``).

Precision: the expansion ``||q||^2 - 2 q.x + ||x||^2`` loses digits when two rows are nearly equal,
so candidate pairs closer than about 4 % of their norms are recomputed as ``||q - x||^2`` directly
(an exact duplicate is at distance 0.0, not ~1e-3).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from knntools.errors import InputError, KnnToolsError
from knntools.search.base import NeighborIndex, RowSource, check_positive_int, rows_per_block

#: Base rows per block, at most (fewer when they would exceed :data:`BASE_BLOCK_BYTES`). Large blocks
#: mean few tiles: every tile costs a handful of small torch ops whose thread synchronisation is
#: expensive on small shared machines, and a single base block needs no top-k merges at all.
BASE_BLOCK_ROWS = 1 << 18
#: Bytes of base rows held per block (float32).
BASE_BLOCK_BYTES = 256 << 20
#: Elements of the (queries x base rows) score buffer.
SCORE_BUFFER_ELEMENTS = 16 << 20
#: Candidate pairs with ``d^2 < NEAR_TOL * (||q||^2 + ||x||^2)`` are recomputed directly.
NEAR_TOL = 1e-3
#: Pairs recomputed per step in the near-duplicate correction.
_PAIRS_PER_STEP = 8192

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def resolve_device(spec: str) -> Any:
    """Turn ``auto|cpu|cuda[:N]|mps`` into a ``torch.device`` (``auto``: CUDA when available).

    Raises
    ------
    InputError
        CUDA (or MPS) requested but not available.
    """
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {spec!r} requested but CUDA is not available; use --device cpu or auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {spec!r} requested but MPS is not available; use --device cpu or auto")
    return dev


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(num_threads)``, restoring the caller's setting after.

    ``None`` leaves torch's current setting alone.
    """
    import torch

    if num_threads is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class ExactIndex(NeighborIndex):
    """Brute-force k-NN search with torch, chunked over queries and over the base.

    Parameters
    ----------
    metric : {"l2", "cosine", "ip"}, default "l2"
        Distances are Euclidean (not squared), ``1 - cosine similarity`` or the negative inner
        product (see :mod:`knntools.search.base`).
    device : str, default "auto"
        ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    num_threads : int or None, default None
        torch CPU threads during :meth:`kneighbors`; ``None`` keeps the caller's
        ``torch.get_num_threads()``. The caller's setting is restored afterwards.
    batch_size : int or None, default None
        Queries per block; ``None`` sizes the score buffer to about 64 MB (e.g. 279 queries x 60000 rows).
    base_batch_size : int or None, default None
        Base rows per block; ``None``: as many as fit in 256 MB of float32 (at most 262144).

    Attributes
    ----------
    n_samples_, n_features_ : int
        Shape of the fitted base.

    Notes
    -----
    ``fit`` keeps a reference to ``X`` (no copy for float32 arrays; h5py datasets are read block by
    block on every search, so keep the file open) and computes the row norms in one pass, which
    also checks that every row is finite. Ties are broken as ``torch.topk`` breaks them.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
    >>> d, i = ExactIndex(metric="l2").fit(X).kneighbors(X[:3], 5)
    >>> d.shape, d.dtype, i.dtype, bool((i[:, 0] == np.arange(3)).all())
    ((3, 5), dtype('float32'), dtype('int64'), True)
    """

    backend = "exact"

    def __init__(
        self,
        *,
        metric: str = "l2",
        device: str = "auto",
        num_threads: int | None = None,
        batch_size: int | None = None,
        base_batch_size: int | None = None,
    ):
        super().__init__(metric=metric)
        if not isinstance(device, str) or not _DEVICE_RE.match(device):
            raise InputError(f"device {device!r} not understood; expected auto, cpu, cuda, cuda:N or mps")
        self.device = device
        self.num_threads = check_positive_int("num_threads", num_threads, optional=True)
        self.batch_size = check_positive_int("batch_size", batch_size, optional=True)
        self.base_batch_size = check_positive_int("base_batch_size", base_batch_size, optional=True)
        self._source: RowSource | None = None
        self._sq_norms: np.ndarray | None = None

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters except ``metric``."""
        return {
            "device": self.device,
            "num_threads": self.num_threads,
            "batch_size": self.batch_size,
            "base_batch_size": self.base_batch_size,
        }

    # -- fit ----------------------------------------------------------------------------------
    def _fit(self, source: RowSource) -> None:
        sq = np.empty(source.n_samples, np.float32)
        for start, block in source.blocks(rows_per_block(source.n_features, 64 << 20)):
            sq[start : start + len(block)] = np.einsum("ij,ij->i", block, block, dtype=np.float64)
        self._source = source
        self._sq_norms = sq

    # -- search -------------------------------------------------------------------------------
    def _search(self, Q: np.ndarray | None, k: int, **query_params: Any) -> tuple[np.ndarray, np.ndarray]:
        if query_params:
            raise InputError(f"unknown search option(s) for the exact backend: {', '.join(sorted(query_params))}")
        import torch

        dev = resolve_device(self.device)
        with torch.inference_mode(), torch_threads(self.num_threads):
            return self._search_torch(torch, dev, Q, k)

    def _search_torch(self, torch: Any, dev: Any, Q: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        src = self._source
        assert src is not None and self._sq_norms is not None
        n, d = src.n_samples, src.n_features
        self_query = Q is None
        nq = n if self_query else len(Q)
        metric = self.metric

        bb = self.base_batch_size or rows_per_block(d, BASE_BLOCK_BYTES, maximum=BASE_BLOCK_ROWS)
        bb = max(min(bb, n), k)  # the first base block fills every query's top-k
        qb = min(nq, self.batch_size or max(64, SCORE_BUFFER_ELEMENTS // bb))

        # Per-row statistics: squared norms (l2), inverse norms (cosine; 0 for a zero vector).
        x_sq = torch.from_numpy(self._sq_norms).to(dev)
        x_inv = torch.where(x_sq > 0, x_sq.rsqrt(), torch.zeros_like(x_sq)) if metric == "cosine" else None
        if self_query:
            Qt = None
            q_sq = x_sq
        else:
            Qt = torch.from_numpy(np.ascontiguousarray(Q))
            q_sq = torch.from_numpy(np.einsum("ij,ij->i", Q, Q, dtype=np.float64).astype(np.float32)).to(dev)
        q_inv = torch.where(q_sq > 0, q_sq.rsqrt(), torch.zeros_like(q_sq)) if metric == "cosine" else None

        # Scores come from one GEMM per tile, S = A_q @ A_x.T, largest = nearest:
        #   l2:     A_q = [2q, -1], A_x = [x, ||x||^2]  ->  S = 2 q.x - ||x||^2 = ||q||^2 - ||q - x||^2
        #   cosine: A_q = q,        A_x = x / ||x||     ->  S = ||q|| cos(q, x)  (||q|| does not change a row's ranking)
        #   ip:     A_q = q,        A_x = x             ->  S = q.x
        width = d + 1 if metric == "l2" else d
        best_d = torch.empty((nq, k), dtype=torch.float32, device=dev)
        best_i = torch.empty((nq, k), dtype=torch.int64, device=dev)
        score_buf = torch.empty(qb * bb, dtype=torch.float32, device=dev)
        xa_buf = torch.empty((bb, width), dtype=torch.float32, device=dev) if metric != "ip" else None
        qa_buf = torch.empty((qb, width), dtype=torch.float32, device=dev)
        if metric == "l2":
            qa_buf[:, d] = -1
        float32_view = src.in_memory and src.dtype == np.float32
        xbuf = None if float32_view else np.empty((bb, d), np.float32)
        qbuf = None if float32_view or not self_query else np.empty((qb, d), np.float32)
        inf = float("inf")

        for b0 in range(0, n, bb):
            b1 = min(b0 + bb, n)
            m = b1 - b0
            xb = torch.from_numpy(src.block(b0, b1, out=xbuf)).to(dev)
            if metric == "l2":
                xa = xa_buf[:m]
                xa[:, :d] = xb
                xa[:, d] = x_sq[b0:b1]
            elif metric == "cosine":
                xa = torch.mul(xb, x_inv[b0:b1, None], out=xa_buf[:m])
            else:
                xa = xb
            xaT = xa.t()
            for q0 in range(0, nq, qb):
                q1 = min(q0 + qb, nq)
                s = q1 - q0
                qc = (torch.from_numpy(src.block(q0, q1, out=qbuf)) if self_query else Qt[q0:q1]).to(dev)
                qa = qa_buf[:s]
                if metric == "l2":
                    torch.mul(qc, 2, out=qa[:, :d])
                else:
                    qa.copy_(qc)
                S = torch.mm(qa, xaT, out=score_buf[: s * m].view(s, m))
                if self_query:
                    lo, hi = max(q0, b0), min(q1, b1)
                    if lo < hi:
                        r = torch.arange(lo, hi, device=dev)
                        S[r - q0, r - b0] = -inf  # own row, by identity
                kk = min(k, m)
                v, i = torch.topk(S, kk, dim=1, largest=True, sorted=False)
                if metric == "l2":
                    dist = (q_sq[q0:q1, None] - v).clamp_min_(0)  # squared Euclidean
                    self._correct_near_pairs(torch, dist, i, qc, xb, q_sq[q0:q1], x_sq[b0:b1])
                elif metric == "cosine":
                    dist = 1 - v * q_inv[q0:q1, None]
                else:
                    dist = -v
                if self_query:
                    dist.masked_fill_(torch.isneginf(v), inf)
                i += b0
                if b0 == 0:
                    best_d[q0:q1] = dist
                    best_i[q0:q1] = i
                else:
                    cd = torch.cat((best_d[q0:q1], dist), dim=1)
                    ci = torch.cat((best_i[q0:q1], i), dim=1)
                    top_d, pos = torch.topk(cd, k, dim=1, largest=False, sorted=False)
                    best_d[q0:q1] = top_d
                    best_i[q0:q1] = torch.gather(ci, 1, pos)

        best_d, order = torch.sort(best_d, dim=1, stable=True)
        best_i = torch.gather(best_i, 1, order)
        if metric == "l2":
            best_d.sqrt_()
        if not torch.isfinite(best_d).all():  # pragma: no cover - guarded by check_k and finite inputs
            raise KnnToolsError("exact search produced non-finite distances (overflow in the input values?)")
        return best_d.cpu().numpy(), best_i.cpu().numpy()

    @staticmethod
    def _correct_near_pairs(torch: Any, dist: Any, idx: Any, qc: Any, xb: Any, q_sq: Any, x_sq: Any) -> None:
        """Recompute ``dist`` (squared l2) as ``||q - x||^2`` for pairs nearly equal relative to their norms."""
        near = dist < NEAR_TOL * (q_sq[:, None] + x_sq[idx])
        if not bool(near.any()):
            return
        rows, cols = near.nonzero(as_tuple=True)
        for p0 in range(0, len(rows), _PAIRS_PER_STEP):
            r, c = rows[p0 : p0 + _PAIRS_PER_STEP], cols[p0 : p0 + _PAIRS_PER_STEP]
            diff = qc[r] - xb[idx[r, c]]
            dist[r, c] = (diff * diff).sum(dim=1)

    # -- persistence --------------------------------------------------------------------------
    def _save_payload(self, path: Path) -> None:
        src = self._source
        assert src is not None
        dtype = np.float16 if src.dtype == np.float16 else np.float32
        out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(src.n_samples, src.n_features))
        step = rows_per_block(src.n_features, 64 << 20)
        for start in range(0, src.n_samples, step):
            stop = min(start + step, src.n_samples)
            if src.in_memory:
                out[start:stop] = src.data[start:stop]
            else:
                out[start:stop] = np.asarray(src.data[start:stop]).reshape(stop - start, src.n_features)
        out.flush()
        del out

    def _load_payload(self, path: Path, header: dict[str, Any]) -> None:
        try:
            X = np.load(path, mmap_mode="c")  # copy-on-write: torch.from_numpy needs a writable array
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable exact index ({exc})") from None
        if X.shape != (header["n_samples"], header["n_features"]):
            raise InputError(f"{path}: rows of shape {X.shape} differ from the header's ({header['n_samples']}, {header['n_features']}); rebuild the index")
        self._fit(RowSource(X, str(path)))
