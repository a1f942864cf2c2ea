"""Exact (brute-force) k-nearest-neighbour search: the reference every backend is tested against.

Distances are computed block by block, faiss-style: the base is read once, in blocks of
``base_batch_size`` rows (an h5py dataset is streamed, never loaded whole); each base block is
multiplied with blocks of ``batch_size`` queries into one reused score buffer by a single GEMM
(``2 q.x - ||x||^2`` for l2, via operands augmented with ``||x||^2`` and ``-1``; ``q.x / ||x||``
for cosine; ``q.x`` for ip); the best ``k`` per query are taken from each tile (a two-stage
selection: the maximum of every group of 32 columns first, then the columns of the best groups)
and merged into a running top-k. Memory therefore stays bounded by the two blocks and the
``(batch_size, base_batch_size)`` score buffer, whatever the size of the base. Row norms are
computed once, at ``fit``. Runs on CUDA when present (``device="auto"``).

GEMM engine (CPU, float32): numpy's BLAS (OpenBLAS in the numpy wheels) or torch's (MKL/oneDNN),
whichever is faster on this machine. The choice is measured once per process and operand width
on the search's own first score tile: its query rows are split in four, computed alternately by
each library into the same buffer, and the faster library on the second pair does the rest (no
work is repeated; ``KNNTOOLS_GEMM=numpy|torch`` forces one). On some CPUs the two differ by
1.5-3x (e.g. AMD EPYC: OpenBLAS 170-200 GFLOP/s, torch 115-165 GFLOP/s on 2 cores). Synthetic
micro-benchmarks mispredicted the winner on the real tiles (torch chosen at d = 3,200, where it
was 1.5x slower), hence the in-situ measurement; :func:`gemm_engine` is the synthetic one, used
only for tiles too small to split.

Precision (``precision="float32"``, the default): the expansion ``||q||^2 - 2 q.x + ||x||^2``
loses digits when two rows are nearly equal, so candidate pairs closer than about 4 % of their
norms are recomputed as ``||q - x||^2`` directly (an exact duplicate is at distance 0.0, not ~1e-3).

``precision="bfloat16"`` / ``"float16"``: the GEMM runs in low precision to pick ``k *
rerank_factor`` candidates per query, whose distances are then recomputed in float32. A per-query
certificate (the worst candidate's approximate distance minus a rigorous bound on the GEMM's
rounding error must exceed the k-th re-ranked distance) proves that no row left out belongs to the
top ``k``; queries whose certificate fails are searched again in float32. The result is therefore
the float32 exact answer, only faster where low-precision GEMMs are faster (CPUs with AVX512-BF16
or AMX, GPUs). ``last_stats_`` records how many queries were certified.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from knntools.errors import InputError, KnnToolsError
from knntools.search.base import NeighborIndex, RowSource, check_positive_int, drop_own_rows, rows_per_block
from knntools.search.names import PRECISIONS

#: Base rows per block, at most (fewer when they would exceed :data:`BASE_BLOCK_BYTES`). Large blocks
#: mean few tiles: every tile costs a handful of small torch ops whose thread synchronisation is
#: expensive on small shared machines, and a single base block needs no top-k merges at all.
BASE_BLOCK_ROWS = 1 << 18
#: Bytes of base rows held per block (float32).
BASE_BLOCK_BYTES = 256 << 20
#: Elements of the (queries x base rows) score buffer (256 MB): few large tiles, because every tile costs
#: a handful of multi-threaded torch ops whose synchronisation is expensive on small shared machines
#: (20k x 2k, d = 256, 2 cores: 0.39 CPU-s with 256 MB, 0.71 with 64 MB, 1.8 with 4 MB).
SCORE_BUFFER_ELEMENTS = 64 << 20
#: Candidate pairs with ``d^2 < NEAR_TOL * (||q||^2 + ||x||^2)`` are recomputed directly.
NEAR_TOL = 1e-3
#: Pairs recomputed per step in the near-duplicate correction.
_PAIRS_PER_STEP = 8192

#: Columns per group in the two-stage top-k selection of a score tile.
TOPK_GROUP = 32

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
#: (width bucket, threads) -> "numpy" or "torch", measured once per process.
_ENGINE_CACHE: dict[tuple[int, int], str] = {}
#: Below this many flops a search is too small to be worth measuring the engines: torch is used.
_ENGINE_MIN_FLOPS = 2e9
#: A first tile is split to measure the engines when each quarter has at least this many query
#: rows and this many flops; otherwise :func:`gemm_engine`'s synthetic measurement decides.
_SPLIT_MIN_ROWS = 32
_SPLIT_MIN_FLOPS = 2e8


def _engine_key(width: int, num_threads: int) -> tuple[int, int]:
    return int(min(4096, max(64, 1 << max(0, int(width) - 1).bit_length()))), int(num_threads)


def _forced_engine() -> str | None:
    forced = os.environ.get("KNNTOOLS_GEMM", "").strip().lower()
    return forced if forced in ("numpy", "torch") else None


def _split_tile_gemm(torch: Any, qa_np: np.ndarray, xaT_np: np.ndarray, S_np: np.ndarray, qa: Any, xaT: Any, S: Any) -> str | None:
    """Compute ``S = qa @ xaT`` in four row blocks, numpy / torch / numpy / torch, and return the
    library that was faster per row on the last two (the first two absorb one-time start-up);
    None when the tile is too small to split (then nothing is computed)."""
    s, m = S_np.shape
    q = s // 4
    if q < _SPLIT_MIN_ROWS or 2.0 * q * qa_np.shape[1] * m < _SPLIT_MIN_FLOPS:
        return None
    bounds = [0, q, 2 * q, 3 * q, s]
    times = []
    for j in range(4):
        a, b = bounds[j], bounds[j + 1]
        t0 = time.perf_counter()
        if j % 2 == 0:
            np.matmul(qa_np[a:b], xaT_np, out=S_np[a:b])
        else:
            torch.mm(qa[a:b], xaT, out=S[a:b])
        times.append((time.perf_counter() - t0) / (b - a))
    return "numpy" if times[2] <= times[3] else "torch"


def gemm_engine(width: int, num_threads: int, *, flops: float = float("inf")) -> str:
    """The faster float32 GEMM on this CPU for operands ``width`` wide: ``"numpy"`` or ``"torch"``.

    Measured once per process and width bucket (powers of two from 64 to 4096) with both libraries
    on the same ``num_threads`` threads: a ``(rows, width) x (width, 4096)`` product of about 1 GFLOP,
    best of two after a warm-up (30-100 ms per bucket on 2 cores). ``KNNTOOLS_GEMM=numpy`` or ``torch`` skips the
    measurement; searches under about 2 GFLOP use torch without measuring.

    Parameters
    ----------
    width : int
        Inner dimension of the GEMM.
    num_threads : int
        Threads both libraries use.
    flops : float, default inf
        Size of the search; small ones do not pay for the measurement.

    Returns
    -------
    str
        ``"numpy"`` or ``"torch"``.
    """
    forced = _forced_engine()
    if forced:
        return forced
    if flops < _ENGINE_MIN_FLOPS:
        return "torch"
    key = _engine_key(width, num_threads)
    if key not in _ENGINE_CACHE:
        _ENGINE_CACHE[key] = _measure_engines(key[0], key[1])
    return _ENGINE_CACHE[key]


def _measure_engines(width: int, num_threads: int) -> str:
    import torch
    from threadpoolctl import threadpool_limits

    # (rows, width) x (width, 4096), rows a power of two in [64, 512] for about 1 GFLOP per product
    # (2 GFLOP at width 4096): the six products cost 30-100 ms at every width. Small products can
    # mispredict the search's large tiles (at width 4096 this picked torch on a 2-core AMD EPYC,
    # where numpy is 1.5x faster on real tiles), so the search measures on its own first tile and
    # uses this only for tiles too small to split.
    rows = int(min(512, max(64, 1 << max(0, round(np.log2(1e9 / (2 * width * 4096)))))))
    rng = np.random.default_rng(0)
    A = rng.standard_normal((rows, width), dtype=np.float32)
    B = rng.standard_normal((4096, width), dtype=np.float32)
    C = np.empty((rows, 4096), np.float32)
    At, Bt, Ct = torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(C)

    def best(fn: Any) -> float:
        fn()
        t = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            fn()
            t = min(t, time.perf_counter() - t0)
        return t

    with threadpool_limits(limits=num_threads, user_api="blas"), torch_threads(num_threads):
        t_np = best(lambda: np.matmul(A, B.T, out=C))
        t_torch = best(lambda: torch.mm(At, Bt.t(), out=Ct))
    return "numpy" if t_np < t_torch else "torch"


@contextlib.contextmanager
def _blas_threads(num_threads: int | None) -> Iterator[None]:
    """Limit numpy's BLAS to ``num_threads`` threads (``None``: leave it)."""
    if num_threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=num_threads, user_api="blas"):
        yield


def tile_topk(torch: Any, S: Any, k: int) -> tuple[Any, Any]:
    """The ``k`` largest scores of each row of ``S`` ``(s, m)`` and their columns (unsorted).

    When the row is wide against ``k`` (``m >= 16 * k * TOPK_GROUP``) a two-stage selection: the
    maximum of every group of :data:`TOPK_GROUP` consecutive columns, the ``k`` best groups, then
    the best ``k`` of those groups' columns (the top ``k`` of a row always lie in the ``k`` groups
    with the largest maxima); otherwise ``torch.topk``. Measured on a 2-core AMD EPYC, 1,118 rows
    of 60,000 scores: 3.7x as fast as ``torch.topk`` at ``k = 10``, 1.8x at ``k = 75``, 1.25x at
    ``k = 100``; slower once the groups' columns are more than a sixteenth of the row (hence the
    rule). The same values (ties aside).
    """
    s, m = S.shape
    g = TOPK_GROUP
    if m < 16 * k * g or not S.is_contiguous() or S.device.type != "cpu":
        return torch.topk(S, k, dim=1, largest=True, sorted=False)
    groups = m // g
    mc = groups * g
    gmax = S.as_strided((s, groups, g), (m, g, 1)).amax(dim=2)
    _, gi = torch.topk(gmax, k, dim=1, sorted=False)
    cols = (gi[:, :, None] * g + torch.arange(g, device=S.device)).reshape(s, k * g)
    if mc < m:
        cols = torch.cat((cols, torch.arange(mc, m, device=S.device).expand(s, m - mc)), dim=1)
    v, pos = torch.topk(torch.gather(S, 1, cols), k, dim=1, largest=True, sorted=False)
    return v, torch.gather(cols, 1, pos)


class _LowPrecision:
    """Operand scaling, GEMM and rounding-error bound of a bfloat16/float16 scoring pass.

    Operands are scaled by powers of two so that every query and base row has norm <= 1 (no
    float16 overflow; the scaling is exact), rounded to ``dtype`` and multiplied with float32
    accumulation. For the float32-exact certificate, ``|S_low - q.x| <= rel_err * ||q|| * ||x||
    + abs_err / (q_scale * x_scale)`` (Higham, *Accuracy and Stability of Numerical Algorithms*,
    2nd ed., §3.1: rounding of both inputs ``2u + u^2``, float32 summation ``gamma_d``, rounding of
    the output ``u_out``; Cauchy-Schwarz turns ``sum |q_i x_i|`` into ``||q|| ||x||``; ``abs_err``
    covers values in the subnormal range).
    """

    def __init__(self, torch: Any, dev: Any, precision: str, *, q_max: float, x_max: float, d: int):
        self.dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[precision]
        self.q_scale = 2.0 ** -np.ceil(np.log2(q_max)) if q_max > 0 else 1.0
        self.x_scale = 2.0 ** -np.ceil(np.log2(x_max)) if x_max > 0 else 1.0
        self.cuda = dev.type == "cuda"
        u = 2.0**-8 if precision == "bfloat16" else 2.0**-11
        sub = 2.0**-134 if precision == "bfloat16" else 2.0**-25  # half the smallest subnormal
        u_out = u  # the output may be rounded to the input dtype (CPU); float32 on CUDA is within this
        g = d * 2.0**-24 / (1 - d * 2.0**-24)
        self.rel_err = 1.001 * ((2 * u + u * u) * (1 + g) * (1 + u_out) + g * (1 + u_out) + u_out)
        self.abs_err = 1.001 * ((sub * 2 * np.sqrt(d) + d * sub * sub) * (1 + g) * (1 + u_out) + sub)

    def matmul(self, torch: Any, a: Any, bT: Any) -> Any:
        """``a @ bT`` as a float32 tensor (float32 accumulation)."""
        if self.cuda:
            prev = (torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
                    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction)
            torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
            try:
                try:
                    return torch.mm(a, bT, out_dtype=torch.float32)
                except (TypeError, RuntimeError):  # torch without mm(out_dtype=) on this device
                    return torch.mm(a, bT).float()
            finally:
                (torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
                 torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction) = prev
        return torch.mm(a, bT).float()


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
        raise InputError(f"device {spec!r} requested but CUDA is not available; expected device 'cpu' or 'auto'", param="device")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {spec!r} requested but MPS is not available; expected device 'cpu' or 'auto'", param="device")
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
        Queries per block; ``None`` sizes the score buffer to about 256 MB (e.g. 1118 queries x 60000 rows).
    base_batch_size : int or None, default None
        Base rows per block; ``None``: as many as fit in 256 MB of float32 (at most 262144).
    precision : {"float32", "bfloat16", "float16"}, default "float32"
        Arithmetic of the scoring GEMM. ``bfloat16``/``float16`` pick candidates in low precision
        and re-rank them in float32 with a certificate and a float32 fallback, so the neighbours
        are those of ``float32`` (see the module docstring); worth it where low-precision GEMMs
        are fast (AVX512-BF16/AMX CPUs for bfloat16, GPUs for both; float16 on most CPUs is slow).
    rerank_factor : int, default 4
        Candidates per query in low precision: ``k * rerank_factor``.

    Attributes
    ----------
    n_samples_, n_features_ : int
        Shape of the fitted base.
    last_stats_ : dict
        After a low-precision search: ``precision``, ``candidates``, ``queries``, ``certified``,
        ``fallback`` (queries searched again in float32).

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
        precision: str = "float32",
        rerank_factor: int = 4,
    ):
        super().__init__(metric=metric)
        if precision not in PRECISIONS:
            raise InputError(f"precision {precision!r} not understood; expected one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.rerank_factor = check_positive_int("rerank_factor", rerank_factor)
        self.last_stats_: dict[str, Any] = {}
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
            "precision": self.precision,
            "rerank_factor": self.rerank_factor,
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
        with torch.inference_mode(), torch_threads(self.num_threads), _blas_threads(self.num_threads):
            if self.precision == "float32":
                best_d, best_i = self._scan(torch, dev, Q, k)
                return self._finish(torch, best_d, best_i)
            return self._search_low_precision(torch, dev, Q, k)

    def _finish(self, torch: Any, best_d: Any, best_i: Any) -> tuple[np.ndarray, np.ndarray]:
        """Sort the running top-k ascending, take the square root for l2, return numpy arrays."""
        best_d, order = torch.sort(best_d, dim=1, stable=True)
        best_i = torch.gather(best_i, 1, order)
        if self.metric == "l2":
            best_d.sqrt_()
        if not torch.isfinite(best_d).all():  # pragma: no cover - guarded by check_k and finite inputs
            raise KnnToolsError("exact search produced non-finite distances (overflow in the input values?)")
        return best_d.cpu().numpy(), best_i.cpu().numpy()

    def _scan(self, torch: Any, dev: Any, Q: np.ndarray | None, k: int, low: Any = None) -> tuple[Any, Any]:
        """One pass over the base: the running best ``k`` per query, unsorted.

        Returns ``(dist, idx)`` tensors ``(n_queries, k)``; ``dist`` is the squared distance for l2.
        With ``low`` (a :class:`_LowPrecision`) the scores come from a low-precision GEMM and the
        distances are approximations (no clamping, no near-pair correction): candidates only.
        """
        src = self._source
        assert src is not None and self._sq_norms is not None
        n, d = src.n_samples, src.n_features
        self_query = Q is None
        nq = n if self_query else len(Q)
        metric = self.metric

        bb = self.base_batch_size or rows_per_block(d, BASE_BLOCK_BYTES, maximum=BASE_BLOCK_ROWS)
        bb = max(min(bb, n), k)  # the first base block fills every query's top-k
        qb = min(nq, self.batch_size or max(64, SCORE_BUFFER_ELEMENTS // bb))
        cpu = dev.type == "cpu"

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
        # In low precision the operands are q and x (x / ||x|| for cosine), scaled by powers of two
        # and rounded; ||x||^2 is added in float32 after the GEMM (it does not survive rounding).
        augment = metric == "l2" and low is None
        width = d + 1 if augment else d
        # float32 on CPU: numpy's BLAS or torch, from the cache / KNNTOOLS_GEMM, else measured on
        # the first tile (``measure``); small searches use torch unmeasured
        engine, measure, key = "torch", False, None
        if low is None and cpu:
            key = _engine_key(width, torch.get_num_threads())
            engine = _forced_engine() or _ENGINE_CACHE.get(key) or ""
            if not engine:
                engine, measure = ("numpy", True) if 2.0 * n * nq * width >= _ENGINE_MIN_FLOPS else ("torch", False)
        op_dtype = torch.float32 if low is None else low.dtype
        best_d = torch.empty((nq, k), dtype=torch.float32, device=dev)
        best_i = torch.empty((nq, k), dtype=torch.int64, device=dev)
        # numpy-backed buffers when the GEMM runs in numpy (OpenBLAS) or is being measured, so both
        # libraries share them
        if engine == "numpy":
            score_np = np.empty(qb * bb, np.float32)
            xa_np = np.empty((bb, width), np.float32) if metric != "ip" else None
            qa_np = np.empty((qb, width), np.float32)
            score_buf, qa_buf = torch.from_numpy(score_np), torch.from_numpy(qa_np)
            xa_buf = torch.from_numpy(xa_np) if xa_np is not None else None
        else:
            score_buf = torch.empty(qb * bb, dtype=torch.float32, device=dev) if low is None else None
            xa_buf = torch.empty((bb, width), dtype=op_dtype, device=dev) if (metric != "ip" or low is not None) else None
            qa_buf = torch.empty((qb, width), dtype=op_dtype, device=dev)
        if augment:
            qa_buf[:, d] = -1
        float32_view = src.in_memory and src.dtype == np.float32
        xbuf = None if float32_view else np.empty((bb, d), np.float32)
        qbuf = None if float32_view or not self_query else np.empty((qb, d), np.float32)
        inf = float("inf")

        for b0 in range(0, n, bb):
            b1 = min(b0 + bb, n)
            m = b1 - b0
            xb_np = src.block(b0, b1, out=xbuf)
            xb = torch.from_numpy(xb_np).to(dev)
            if low is not None:
                xa = xa_buf[:m]
                if metric == "cosine":
                    xa.copy_(xb * x_inv[b0:b1, None])
                else:
                    xa.copy_(xb * low.x_scale)
            elif metric == "l2":
                xa = xa_buf[:m]
                xa[:, :d] = xb
                xa[:, d] = x_sq[b0:b1]
            elif metric == "cosine":
                xa = torch.mul(xb, x_inv[b0:b1, None], out=xa_buf[:m])
            else:
                xa = xb
            xaT = xa.t()
            xaT_np = None
            if engine == "numpy":
                xaT_np = (xa_np[:m] if metric != "ip" else xb_np).T
            for q0 in range(0, nq, qb):
                q1 = min(q0 + qb, nq)
                s = q1 - q0
                qc = (torch.from_numpy(src.block(q0, q1, out=qbuf)) if self_query else Qt[q0:q1]).to(dev)
                qa = qa_buf[:s]
                if low is not None:
                    qa.copy_(qc.float() * low.q_scale)  # float16 queries: scale in float32 (no subnormal loss)
                    S = low.matmul(torch, qa, xaT)
                    if metric == "l2":
                        S = S.mul_(2.0 / (low.q_scale * low.x_scale)).sub_(x_sq[None, b0:b1])
                    else:
                        S = S.mul_(1.0 / (low.q_scale * (1.0 if metric == "cosine" else low.x_scale)))
                else:
                    if augment:
                        torch.mul(qc, 2, out=qa[:, :d])
                    else:
                        qa.copy_(qc)
                    S = score_buf[: s * m].view(s, m)
                    done = False
                    if measure:  # first tile: computed in four row blocks, alternating the libraries
                        measure = False
                        choice = _split_tile_gemm(torch, qa_np[:s], xaT_np, score_np[: s * m].reshape(s, m), qa, xaT, S)
                        done = choice is not None
                        # too small to split: the synthetic measurement decides
                        engine = _ENGINE_CACHE[key] = choice if done else gemm_engine(width, key[1])
                    if done:
                        pass
                    elif engine == "numpy":
                        np.matmul(qa_np[:s], xaT_np, out=score_np[: s * m].reshape(s, m))
                    else:
                        torch.mm(qa, xaT, out=S)
                if self_query:
                    lo, hi = max(q0, b0), min(q1, b1)
                    if lo < hi:
                        r = torch.arange(lo, hi, device=dev)
                        S[r - q0, r - b0] = -inf  # own row, by identity
                kk = min(k, m)
                v, i = tile_topk(torch, S, kk)
                if metric == "l2":
                    dist = q_sq[q0:q1, None] - v  # squared Euclidean
                    if low is None:
                        dist.clamp_min_(0)
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
        return best_d, best_i

    # -- low precision: candidates, exact re-rank, certificate, float32 fallback -----------------
    def _search_low_precision(self, torch: Any, dev: Any, Q: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Score in bfloat16/float16, re-rank ``k * rerank_factor`` candidates in float32, certify, fall back.

        For every query the candidates' distances are recomputed in float32 (``||q - x||^2``
        directly for l2). Every row left out scored no better than the worst candidate ``T``; the
        rounding error of the low-precision GEMM is bounded per query (see :func:`_low_precision_error`),
        so if ``T`` minus that bound is still farther than the k-th re-ranked distance, no row left
        out can belong to the top ``k``: the answer is the float32 exact one. Queries whose
        certificate fails are searched again in float32 (counted in :attr:`last_stats_`).
        """
        src = self._source
        assert src is not None and self._sq_norms is not None
        n, d = src.n_samples, src.n_features
        self_query = Q is None
        nq = n if self_query else len(Q)
        n_cand = n - 1 if self_query else n
        M = min(n_cand, k * self.rerank_factor)
        x_sq = self._sq_norms
        q_sq = x_sq if self_query else np.einsum("ij,ij->i", Q, Q, dtype=np.float64).astype(np.float32)
        x_max = float(np.sqrt(x_sq.max(initial=0.0)))
        q_norm = np.sqrt(q_sq.astype(np.float64))
        low = _LowPrecision(torch, dev, self.precision, q_max=float(q_norm.max(initial=0.0)),
                            x_max=1.0 if self.metric == "cosine" else x_max, d=d)
        cand_d, cand_i = self._scan(torch, dev, Q, M, low=low)
        cand_i = cand_i.cpu().numpy()
        T = cand_d.max(dim=1).values.cpu().numpy().astype(np.float64)  # worst candidate, approximate
        exact_d, exact_i = self._rerank(Q, cand_i, k)
        # bound on how much better than T a row left out can truly be (metric units; squared for l2)
        c, a = low.rel_err, low.abs_err
        u32 = 2.0**-24
        if self.metric == "l2":
            slack = 2.0 * (c * q_norm * x_max + a / (low.q_scale * low.x_scale)) + 16 * u32 * (q_sq + 2 * q_norm * x_max + x_max**2)
        elif self.metric == "cosine":
            q_inv = np.where(q_norm > 0, 1.0 / np.where(q_norm > 0, q_norm, 1.0), 0.0)
            slack = (c * q_norm + a / low.q_scale) * q_inv + 32 * u32
        else:
            slack = c * q_norm * x_max + a / (low.q_scale * low.x_scale) + 16 * u32 * q_norm * x_max
        dk = exact_d[:, -1].astype(np.float64)
        dk = dk + 4 * (d + 2) * u32 * np.abs(dk) + 1e-30
        ok = (T - slack > dk) if M < n_cand else np.ones(nq, bool)
        bad = np.flatnonzero(~ok)
        if len(bad):
            if self_query:  # the failed rows of the base, searched as outside queries; own row dropped after
                rows = src.data[bad] if src.in_memory else src.data[bad.tolist()]
                qrows = np.ascontiguousarray(np.asarray(rows, dtype=np.float32).reshape(len(bad), d))
                fd, fi = (t.cpu().numpy() for t in self._sorted(torch, *self._scan(torch, dev, qrows, k + 1)))
                fi, fd = drop_own_rows(fi, fd, bad)
            else:
                fd, fi = (t.cpu().numpy() for t in self._sorted(torch, *self._scan(torch, dev, np.ascontiguousarray(Q[bad]), k)))
            exact_d[bad], exact_i[bad] = fd, fi
        self.last_stats_ = {"precision": self.precision, "candidates": M, "queries": nq, "certified": int(nq - len(bad)), "fallback": int(len(bad))}
        if self.metric == "l2":
            exact_d = np.sqrt(np.maximum(exact_d, 0))
        return exact_d.astype(np.float32), exact_i.astype(np.int64)

    @staticmethod
    def _sorted(torch: Any, dist: Any, idx: Any) -> tuple[Any, Any]:
        dist, order = torch.sort(dist, dim=1, stable=True)
        return dist, torch.gather(idx, 1, order)

    def _rerank(self, Q: np.ndarray | None, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 distances of the candidate rows, best ``k`` sorted (squared for l2)."""
        src = self._source
        assert src is not None and self._sq_norms is not None
        nq, M = cand.shape
        d = src.n_features
        out_d = np.empty((nq, k), np.float32)
        out_i = np.empty((nq, k), np.int64)
        step = max(1, (64 << 20) // (4 * M * d))
        for q0 in range(0, nq, step):
            q1 = min(q0 + step, nq)
            idx = cand[q0:q1]
            q = src.block(q0, q1) if Q is None else Q[q0:q1]
            q = np.asarray(q, dtype=np.float32)
            if src.in_memory:
                X = np.asarray(src.data[idx.reshape(-1)], dtype=np.float32).reshape(q1 - q0, M, d)
            else:
                uniq, inv = np.unique(idx.reshape(-1), return_inverse=True)
                X = np.asarray(src.data[uniq], dtype=np.float32).reshape(len(uniq), d)[inv].reshape(q1 - q0, M, d)
            if self.metric == "l2":
                diff = X - q[:, None, :]
                dist = np.einsum("qmd,qmd->qm", diff, diff)
            else:
                dots = np.einsum("qmd,qd->qm", X, q)
                if self.metric == "cosine":
                    xs, qs = self._sq_norms[idx], np.einsum("ij,ij->i", q, q)
                    xi = np.where(xs > 0, 1.0 / np.sqrt(np.where(xs > 0, xs, 1.0)), 0.0)
                    qi = np.where(qs > 0, 1.0 / np.sqrt(np.where(qs > 0, qs, 1.0)), 0.0)
                    dist = 1.0 - dots * xi * qi[:, None]
                else:
                    dist = -dots
            dist = dist.astype(np.float32)
            order = np.argsort(dist, axis=1, kind="stable")[:, :k]
            out_d[q0:q1] = np.take_along_axis(dist, order, axis=1)
            out_i[q0:q1] = np.take_along_axis(idx, order, axis=1)
        return out_d, out_i

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
