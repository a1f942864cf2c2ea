"""kNN by sequence-to-sequence and memory networks (Xu & Klabjan, "k-Nearest Neighbors by Means of
Sequence to Sequence Deep Neural Networks and Memory Networks").

Five models mimic a K-nearest-neighbour classifier by predicting, for an input vector ``x``, the
labels ``Y_1^P … Y_K^P`` and/or the feature vectors ``X_1^P … X_K^P`` of its K nearest training
samples (the *kNN targets*, computed upfront), plus a final label ``Y^P``:

========== ================================================================ =======================
model      architecture (paper §3)                                          loss
========== ================================================================ =======================
v2ls       LSTM encoder over the length-1 sequence ``(x)``, LSTM decoder of  L1
           K steps; step t: ``Y_t^P = softmax((W y_t + b)/tau)``
v2vs       same, step t: ``X_t^P = W2 relu(W1 y_t + b1) + b2``              L2
v2vsls     both heads                                                       L1 + lam · L2
mnknn      end-to-end memory network, K hops over a memory of n random      L1
           training samples, a label after every hop
mnknn-vec  MNkNN plus ``X_t^P = W_x relu(T z_t) + b_x`` after every hop      L1 + lam · L2
========== ================================================================ =======================

with (§3, "V2LS" and "V2VS"), averaged over the samples of a mini-batch::

    L1 = sum_t KL(Y_t^T || Y_t^P) / K + alpha · KL(Y^GT || Y^P),   Y^P = sum_t Y_t^P / K
    L2 = sum_t ||X_t^P − X_t^T||²

``Y_t^T`` and ``Y^GT`` are one-hot (the t-th neighbour's label, the sample's own label), so each KL
is a cross-entropy; :func:`kl_divergence` also accepts soft targets.

Predictions: ``argmax Y^P`` for every model with a label head. V2VS has no label head; its label is
the majority vote of the labels of its K predicted vectors, each vector's label being the label of
its nearest *training* sample (1-NN in the standardised feature space through :mod:`knntools.search`,
:class:`ReferenceLabeler`, over every training row by default — ``label_bank`` restricts it to a
random bank, a documented deviation); ties go to the smallest class index.

Deviations from the paper, all off by default (see ``docs/seq2knn.md``): ``label_bank > 0``;
``memory_labels`` (label embedding in MNkNN memory values); ``attention_scale`` (1/sqrt(hidden) in
the MNkNN attention); ``memory_draws > 1`` (MNkNN predictions averaged over several memories);
``include_query=False`` (out-of-core sets S without the query).

kNN targets
-----------
:func:`full_neighbors` runs an exact (or hnsw) search of every training row against the whole
training set, excluding the row itself (:mod:`knntools.search`). :func:`out_of_core_neighbors` is
the paper's Algorithm 1: for each training row, R random batches of B rows are drawn (with
replacement across batches), and the running K nearest are merged with each batch's rows, so only
one query block and one batch are ever in memory; the rows can be an h5py dataset read batch by
batch from disk. The result equals exact K-NN over the union of the sampled batches (self excluded).

Defaults follow §4: K = 5, tau = 0.85, lam = 0.12, alpha = 9.5, Adam lr = 0.01, dropout 0.2,
batch normalisation, memory of n = 64 samples, R = 50, B = 64.
Everything here works on arrays/tensors: no files are opened and nothing is printed.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from knntools.errors import InputError

MODELS = ("v2ls", "v2vs", "v2vsls", "mnknn", "mnknn-vec")
#: Models with a label head (predict ``Y_t^P``) / a vector head (predict ``X_t^P``).
LABEL_MODELS = ("v2ls", "v2vsls", "mnknn", "mnknn-vec")
VECTOR_MODELS = ("v2vs", "v2vsls", "mnknn-vec")
MEMORY_MODELS = ("mnknn", "mnknn-vec")

DEFAULTS: dict[str, Any] = {
    "K": 5, "tau": 0.85, "lam": 0.12, "alpha": 9.5, "lr": 0.01, "dropout": 0.2, "hidden": 64,
    "memory_size": 64, "batches": 50, "batch_size": 64,
}
#: The paper's oversampling setting (§4 "Oversampling"): more weight on the vectors.
OVERSAMPLE_DEFAULTS: dict[str, Any] = {"lam": 1.3, "alpha": 3.0}


# ---------------------------------------------------------------------------------------------
# Input checks and row access
# ---------------------------------------------------------------------------------------------


def check_model_name(name: str) -> str:
    """Return ``name`` if it is one of :data:`MODELS` (``mnknn_vec`` accepted for ``mnknn-vec``).

    Raises
    ------
    InputError
        Unknown model name.
    """
    n = str(name).lower().replace("_", "-")
    if n not in MODELS:
        raise InputError(f"model {name!r} is unknown; expected one of {', '.join(MODELS)}")
    return n


def check_labels(y: np.ndarray, n_classes: int, where: str = "labels") -> np.ndarray:
    """Return ``y`` as int64 after checking it lies in ``[0, n_classes)``.

    Raises
    ------
    InputError
        Labels out of range or not integers.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise InputError(f"{where}: dtype {y.dtype}; expected integer labels")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise InputError(f"{where}: labels span [{y.min()}, {y.max()}]; expected integers in [0, {n_classes})")
    return y


def take_rows(X: Any, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (any order, repeats allowed) of an array or h5py dataset as float32 [len(rows), D].

    h5py datasets are read with one sorted, de-duplicated fancy read (only those rows touch memory).

    Raises
    ------
    InputError
        Non-finite values in the rows read.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(X, np.ndarray):
        out = X[rows]
    else:
        uniq, inverse = np.unique(rows, return_inverse=True)
        block = np.asarray(X[uniq]) if len(uniq) else np.zeros((0, *X.shape[1:]), dtype=np.float32)
        out = block[inverse]
    out = np.asarray(out, dtype=np.float32).reshape(len(rows), -1)
    if not np.isfinite(out).all():
        bad = int(rows[np.flatnonzero(~np.isfinite(out).all(axis=1))[0]])
        raise InputError(f"{_name(X)}: non-finite value (NaN or Inf) at row {bad}; expected finite values")
    return out


def _name(X: Any) -> str:
    f = getattr(X, "file", None)
    return f"{getattr(f, 'filename', '?')}: {str(getattr(X, 'name', '')).lstrip('/')}" if f is not None else "features"


def stream_moments(X: Any, rows: np.ndarray | None = None, chunk_rows: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (float64 [D]; std of constant features set to 1).

    ``X`` may be an h5py dataset: it is read in blocks of ``chunk_rows`` (restricted to ``rows``
    when given), never whole. Raises :class:`InputError` on non-finite values.
    """
    n_total = int(X.shape[0])
    rows = np.arange(n_total) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
    s = s2 = None
    n = 0
    for start in range(0, len(rows), chunk_rows):
        block = take_rows(X, rows[start : start + chunk_rows]).astype(np.float64)
        s = block.sum(0) if s is None else s + block.sum(0)
        s2 = (block**2).sum(0) if s2 is None else s2 + (block**2).sum(0)
        n += len(block)
    if n == 0:
        raise InputError(f"{_name(X)}: no rows; expected at least one training sample")
    mean = s / n
    var = np.maximum(s2 / n - mean**2, 0.0)
    std = np.sqrt(var)
    std[std < 1e-8] = 1.0
    return mean, std


class Standardizer:
    """``(x - mean) / std`` per feature (fitted on training rows; stored in checkpoints)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    @classmethod
    def identity(cls, dim: int) -> "Standardizer":
        return cls(np.zeros(dim), np.ones(dim))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def inverse(self, Z: np.ndarray) -> np.ndarray:
        return (np.asarray(Z, dtype=np.float32) * self.std + self.mean).astype(np.float32)


class RowView:
    """Standardised rows of an array or h5py dataset: ``view[rows]`` → float32 [len(rows), D]."""

    def __init__(self, X: Any, scaler: Standardizer | None = None):
        self.X = X
        self.scaler = scaler
        self.shape = (int(X.shape[0]), int(np.prod(X.shape[1:], dtype=np.int64)))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Any) -> np.ndarray:
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(self.shape[0]))
        block = take_rows(self.X, np.asarray(rows))
        return self.scaler(block) if self.scaler is not None else block


# ---------------------------------------------------------------------------------------------
# kNN targets: full and out-of-core (Algorithm 1)
# ---------------------------------------------------------------------------------------------


def full_neighbors(X: np.ndarray, K: int = 5, *, backend: str = "exact", metric: str = "l2", **params: Any) -> tuple[np.ndarray, np.ndarray]:
    """K nearest training rows of every training row in the whole set, excluding the row itself.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32
    K : int, default 5
    backend, metric, **params
        See :func:`knntools.search.make_index`.

    Returns
    -------
    distances : float32 [n_samples, K] ascending; indices : int64 [n_samples, K] rows of ``X``.

    Raises
    ------
    InputError
        ``K >= n_samples`` or invalid search options.
    """
    from knntools.search import knn_search

    X = np.ascontiguousarray(X, dtype=np.float32)
    if K >= len(X):
        raise InputError(f"K={K} is larger than the {len(X) - 1} other training samples; expected K < {len(X)}")
    return knn_search(X, None, K, backend=backend, metric=metric, exclude_self=True, **params)


def _pair_dist(torch: Any, Q: Any, B: Any, metric: str) -> Any:
    if metric == "l2":
        d2 = (Q * Q).sum(1, keepdim=True) - 2.0 * Q @ B.T + (B * B).sum(1)[None, :]
        return d2.clamp_min_(0.0).sqrt_()
    if metric == "cosine":
        qn = Q / Q.norm(dim=1, keepdim=True).clamp_min(1e-12)
        bn = B / B.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return 1.0 - qn @ bn.T
    if metric == "ip":
        return -(Q @ B.T)
    raise InputError(f"unknown metric {metric!r}; expected l2, cosine or ip")


def _self_dist(torch: Any, Q: Any, metric: str) -> np.ndarray:
    """Each row's distance to itself in the metric's units (l2/cosine: 0; ip: −||q||²) → float [n]."""
    if metric == "ip":
        return (-(Q * Q).sum(1)).numpy()
    _pair_dist(torch, Q[:1], Q[:1], metric)  # validates the metric name
    return np.zeros(len(Q), dtype=np.float32)


def merge_topk(dist_a: np.ndarray, idx_a: np.ndarray, dist_b: np.ndarray, idx_b: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge two candidate lists per query into the K nearest *distinct* rows (Algorithm 1's update).

    Parameters
    ----------
    dist_a, idx_a : [n, Ka] current best (``inf`` / ``-1`` where empty)
    dist_b, idx_b : [n, Kb] the new batch's candidates (``inf`` / ``-1`` to ignore)
    K : int

    Returns
    -------
    (distances float32 [n, K], indices int64 [n, K]) ascending; a row drawn in several batches is
    kept once; slots without a candidate hold ``inf`` / ``-1``.
    """
    d = np.concatenate([dist_a, dist_b], axis=1).astype(np.float64)
    i = np.concatenate([idx_a, idx_b], axis=1)
    # sort by index (stable) to drop rows met in several batches, then by distance
    o = np.argsort(i, axis=1, kind="stable")
    i_s = np.take_along_axis(i, o, 1)
    d_s = np.take_along_axis(d, o, 1)
    dup = np.zeros_like(i_s, dtype=bool)
    dup[:, 1:] = (i_s[:, 1:] == i_s[:, :-1]) & (i_s[:, 1:] >= 0)
    d_s[dup | (i_s < 0)] = np.inf
    o2 = np.argsort(d_s, axis=1, kind="stable")[:, :K]
    dist = np.take_along_axis(d_s, o2, 1)
    idx = np.take_along_axis(i_s, o2, 1)
    idx[~np.isfinite(dist)] = -1
    return dist.astype(np.float32), idx.astype(np.int64)


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
    batches), read, and merged into the running K nearest (:func:`merge_topk`). Every query thus
    gets the exact K nearest among the union of its R·B sampled rows, plus itself with
    ``include_query`` (the paper: "we sample a subset S from the training set (including x)": the
    query is a candidate of every S, so with l2/cosine its first target is itself, at distance 0).
    With ``include_query=False`` the query's own row is never its neighbour (a deviation, matching
    the full targets of :func:`full_neighbors`). Only one query block and one batch are in memory
    at a time.

    Parameters
    ----------
    X : ndarray or h5py.Dataset of shape (n_rows, n_features)
        Rows (read batch by batch when an h5py dataset).
    K : int, default 5
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
        ``batch_size <= K``, ``K`` larger than the pool minus one, or non-finite rows.
    """
    import torch

    from knntools.utils import as_generator

    rng = as_generator(random_state)
    n = int(X.shape[0])
    pool = np.arange(n, dtype=np.int64) if pool is None else np.asarray(pool, dtype=np.int64)
    query_rows = pool if query_rows is None else np.asarray(query_rows, dtype=np.int64)
    if K < 1:
        raise InputError(f"K={K}: expected a positive number of neighbours")
    if batches < 1:
        raise InputError(f"batches={batches}: expected R >= 1")
    if batch_size <= K:
        raise InputError(f"batch size B={batch_size} must exceed K={K} (paper: B > K)")
    if K > len(pool) - 1:
        raise InputError(f"K={K} is larger than the {len(pool) - 1} other training samples; expected K < {len(pool)}")
    B = min(batch_size, len(pool))
    qb = int(query_block or batch_size)
    tf = transform or (lambda a: a)
    out_d = np.empty((len(query_rows), K), dtype=np.float32)
    out_i = np.empty((len(query_rows), K), dtype=np.int64)
    samples: list[np.ndarray] = []
    for qs in range(0, len(query_rows), qb):
        qrows = query_rows[qs : qs + qb]
        Q = torch.from_numpy(tf(take_rows(X, qrows)))
        best_d = np.full((len(qrows), K), np.inf, dtype=np.float32)
        best_i = np.full((len(qrows), K), -1, dtype=np.int64)
        if include_query:  # x ∈ S: the query is a candidate at its distance to itself
            d_self = _self_dist(torch, Q, metric)
            best_d, best_i = merge_topk(best_d, best_i, d_self[:, None].astype(np.float32), qrows[:, None], K)
        seen = []
        for _ in range(batches):
            brows = np.sort(rng.choice(pool, size=B, replace=False))
            Xb = torch.from_numpy(tf(take_rows(X, brows)))
            d = _pair_dist(torch, Q, Xb, metric).numpy()
            cand = np.broadcast_to(brows, d.shape).copy()
            if not include_query:
                self_hit = cand == qrows[:, None]
                d[self_hit] = np.inf
                cand[self_hit] = -1
            kk = min(K, d.shape[1])
            part = np.argpartition(d, kk - 1, axis=1)[:, :kk]
            best_d, best_i = merge_topk(best_d, best_i, np.take_along_axis(d, part, 1), np.take_along_axis(cand, part, 1), K)
            if return_samples:
                seen.append(brows)
        if (best_i < 0).any():  # fewer than K distinct others sampled: top up deterministically
            missing = np.flatnonzero((best_i < 0).any(1))
            for r in missing:
                others = pool[pool != qrows[r]]
                extra = rng.choice(others, size=min(len(others), 4 * K + 8), replace=False)
                de = _pair_dist(torch, Q[r : r + 1], torch.from_numpy(tf(take_rows(X, extra))), metric).numpy()
                best_d[r : r + 1], best_i[r : r + 1] = merge_topk(best_d[r : r + 1], best_i[r : r + 1], de, extra[None, :], K)
        out_d[qs : qs + len(qrows)] = best_d
        out_i[qs : qs + len(qrows)] = best_i
        if return_samples:
            samples.append(np.unique(np.concatenate(seen)))
    if return_samples:
        return out_d, out_i, samples
    return out_d, out_i


# ---------------------------------------------------------------------------------------------
# Losses (paper §3)
# ---------------------------------------------------------------------------------------------


def kl_divergence(target: Any, pred: Any, eps: float = 1e-12) -> Any:
    """``KL(target || pred) = sum_c target_c (log target_c − log pred_c)`` over the last axis (0 log 0 = 0).

    Parameters
    ----------
    target, pred : torch tensors [..., C] of probabilities.

    Returns
    -------
    torch tensor [...]
    """
    import torch

    t = target.clamp_min(0.0)
    logt = torch.where(t > 0, torch.log(t.clamp_min(eps)), torch.zeros_like(t))
    return (t * (logt - torch.log(pred.clamp_min(eps)))).sum(-1)


def _as_dist(labels_or_probs: Any, n_classes: int) -> Any:
    import torch

    if labels_or_probs.dtype in (torch.int64, torch.int32, torch.long):
        return torch.nn.functional.one_hot(labels_or_probs.long(), n_classes).to(torch.float32)
    return labels_or_probs


def label_loss(step_probs: Any, neighbor_targets: Any, ground_truth: Any, alpha: float = 9.5) -> Any:
    """L1 of the paper (V2LS, MNkNN), averaged over the batch.

    ``L1 = mean_n [ sum_t KL(Y_t^T || Y_t^P) / K + alpha · KL(Y^GT || Y^P) ]``, ``Y^P = mean_t Y_t^P``.

    Parameters
    ----------
    step_probs : float tensor [n, K, C]   ``Y_t^P`` (rows sum to 1)
    neighbor_targets : int64 [n, K] labels or float [n, K, C] distributions   ``Y_t^T``
    ground_truth : int64 [n] labels or float [n, C]   ``Y^GT``
    alpha : float, default 9.5

    Returns
    -------
    scalar tensor
    """
    n, K, C = step_probs.shape
    yt = _as_dist(neighbor_targets, C)
    gt = _as_dist(ground_truth, C)
    per_step = kl_divergence(yt, step_probs).sum(1) / K
    final = kl_divergence(gt, step_probs.mean(1))
    return (per_step + alpha * final).mean()


def vector_loss(step_vectors: Any, neighbor_vectors: Any) -> Any:
    """L2 of the paper (V2VS): ``mean_n sum_t ||X_t^P − X_t^T||²`` for tensors [n, K, D]."""
    return ((step_vectors - neighbor_vectors) ** 2).sum(-1).sum(-1).mean()


def combined_loss(out: dict[str, Any], y_nb: Any, x_nb: Any, y: Any, *, alpha: float, lam: float) -> Any:
    """The model's training loss: L1 (label models), L2 (V2VS) or L1 + lam·L2 (V2VSLS, MNkNN_VEC)."""
    loss = None
    if "step_probs" in out:
        loss = label_loss(out["step_probs"], y_nb, y, alpha)
    if "step_vectors" in out:
        l2 = vector_loss(out["step_vectors"], x_nb)
        loss = l2 if loss is None else loss + lam * l2
    return loss


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def _torch_modules() -> Any:
    import torch
    from torch import nn

    class Seq2KNN(nn.Module):
        """V2LS / V2VS / V2VSLS (paper §3): LSTM encoder over the length-1 sequence ``(x)`` and an
        LSTM decoder of K steps.

        The input is embedded by ``Linear(D, H) · BatchNorm · ReLU · Dropout`` and encoded by one LSTM
        step; the decoder cell at step t reads ``[h^e_T, Y_{t-1}^P, X_{t-1}^P]`` (zeros at t = 1,
        each part only when the model has that head) and its output ``y_t`` (after BatchNorm and
        Dropout) feeds ``Y_t^P = softmax((W y_t + b)/tau)`` and/or ``X_t^P = W2 relu(W1 y_t + b1) + b2``.

        forward(x [n, D]) → dict with ``step_probs`` [n, K, C], ``probs`` [n, C] (= mean over steps)
        and/or ``step_vectors`` [n, K, D].
        """

        def __init__(self, n_features: int, n_classes: int, K: int = 5, hidden: int = 64, tau: float = 0.85,
                     dropout: float = 0.2, label_head: bool = True, vector_head: bool = True):
            super().__init__()
            self.K, self.tau, self.C, self.D = K, tau, n_classes, n_features
            self.label_head, self.vector_head = label_head, vector_head
            self.embed = nn.Sequential(nn.Linear(n_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout))
            self.encoder = nn.LSTM(hidden, hidden, batch_first=True)
            dec_in = hidden + (n_classes if label_head else 0) + (n_features if vector_head else 0)
            self.decoder = nn.LSTMCell(dec_in, hidden)
            self.norm = nn.BatchNorm1d(hidden)
            self.drop = nn.Dropout(dropout)
            if label_head:
                self.W_y = nn.Linear(hidden, n_classes)
            if vector_head:
                self.vec = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_features))

        def forward(self, x: Any) -> dict[str, Any]:
            n = x.shape[0]
            e = self.embed(x)
            _, (h, c) = self.encoder(e[:, None, :])
            ctx, h, c = h[0], h[0], c[0]
            prev_y = x.new_zeros(n, self.C) if self.label_head else None
            prev_x = x.new_zeros(n, self.D) if self.vector_head else None
            probs, vecs = [], []
            for _ in range(self.K):
                parts = [ctx] + ([prev_y] if self.label_head else []) + ([prev_x] if self.vector_head else [])
                h, c = self.decoder(torch.cat(parts, 1), (h, c))
                yt = self.drop(self.norm(h))
                if self.label_head:
                    prev_y = torch.softmax(self.W_y(yt) / self.tau, dim=1)
                    probs.append(prev_y)
                if self.vector_head:
                    prev_x = self.vec(yt)
                    vecs.append(prev_x)
            out: dict[str, Any] = {}
            if probs:
                out["step_probs"] = torch.stack(probs, 1)
                out["probs"] = out["step_probs"].mean(1)
            if vecs:
                out["step_vectors"] = torch.stack(vecs, 1)
            return out

    class MemKNN(nn.Module):
        """MNkNN / MNkNN_VEC (paper §3): an end-to-end memory network with K hops over a memory of
        n training samples; hop t predicts the t-th neighbour.

        The paper's model (§2.2, §3): query ``u^1 = B x``; memory keys ``m_i = A x_i``, values
        ``c_i = C x_i``; per hop ``p = softmax(uᵀm)``, ``o = sum_i p_i c_i``, ``z_t = H u^t + o^t``
        (then BatchNorm, Dropout), ``u^{t+1} = z_t``, ``Y_t^P = softmax((W z_t + b)/tau)`` and, with
        the vector head, ``X_t^P = W_x relu(T z_t) + b_x``. A, C, H are shared across hops
        (Sukhbaatar et al.). Two documented deviations, off by default:

        * ``memory_labels=True``: values ``c_i = C x_i + E y_i`` (a label embedding ``E`` lets a hop
          read its memory sample's label; the paper's memory holds feature vectors only);
        * ``attention_scale=True``: ``p = softmax(uᵀm / sqrt(hidden))`` (scaled dot product).

        forward(x [n, D], memory_x [m, D], memory_y int64 [m]) → dict as :class:`Seq2KNN`
        (``memory_y`` is only read with ``memory_labels``).
        """

        def __init__(self, n_features: int, n_classes: int, K: int = 5, hidden: int = 64, tau: float = 0.85,
                     dropout: float = 0.2, vector_head: bool = True, memory_labels: bool = False, attention_scale: bool = False):
            super().__init__()
            self.K, self.tau, self.C, self.D = K, tau, n_classes, n_features
            self.label_head, self.vector_head = True, vector_head
            self.memory_labels, self.attention_scale = bool(memory_labels), bool(attention_scale)
            self.B = nn.Sequential(nn.Linear(n_features, hidden), nn.BatchNorm1d(hidden))
            self.A = nn.Linear(n_features, hidden)
            self.Cm = nn.Linear(n_features, hidden)
            if self.memory_labels:
                self.E = nn.Embedding(n_classes, hidden)
            self.H = nn.Linear(hidden, hidden, bias=False)
            self.norm = nn.BatchNorm1d(hidden)
            self.drop = nn.Dropout(dropout)
            self.W_y = nn.Linear(hidden, n_classes)
            if vector_head:
                self.vec = nn.Sequential(nn.Linear(hidden, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, n_features))

        def forward(self, x: Any, memory_x: Any, memory_y: Any) -> dict[str, Any]:
            u = self.B(x)
            m = self.A(memory_x)
            cval = self.Cm(memory_x) + self.E(memory_y) if self.memory_labels else self.Cm(memory_x)
            scale = 1.0 / math.sqrt(m.shape[1]) if self.attention_scale else 1.0
            probs, vecs = [], []
            for _ in range(self.K):
                p = torch.softmax((u @ m.T) * scale, dim=1)
                o = p @ cval
                z = self.drop(self.norm(self.H(u) + o))
                probs.append(torch.softmax(self.W_y(z) / self.tau, dim=1))
                if self.vector_head:
                    vecs.append(self.vec(z))
                u = z
            out = {"step_probs": torch.stack(probs, 1)}
            out["probs"] = out["step_probs"].mean(1)
            if vecs:
                out["step_vectors"] = torch.stack(vecs, 1)
            return out

    class FFN(nn.Module):
        """The feed-forward benchmark (paper §4): 4 linear layers, BatchNorm, ReLU, Dropout.

        forward(x [n, D]) → dict with ``probs`` [n, C].
        """

        def __init__(self, n_features: int, n_classes: int, hidden: int = 64, dropout: float = 0.2):
            super().__init__()
            layers: list[Any] = []
            d = n_features
            for _ in range(3):
                layers += [nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout)]
                d = hidden
            layers.append(nn.Linear(d, n_classes))
            self.net = nn.Sequential(*layers)

        def forward(self, x: Any) -> dict[str, Any]:
            logits = self.net(x)
            return {"logits": logits, "probs": torch.softmax(logits, 1)}

    return Seq2KNN, MemKNN, FFN


def build_model(name: str, n_features: int, n_classes: int, *, K: int = 5, hidden: int = 64, tau: float = 0.85, dropout: float = 0.2,
                memory_labels: bool = False, attention_scale: bool = False) -> Any:
    """Construct one of :data:`MODELS` (or ``"ffn"``, the benchmark) as a ``torch.nn.Module``.

    ``memory_labels`` / ``attention_scale`` (MNkNN models only, default False = the paper's memory
    network): add a label embedding to the memory values / scale the attention by 1/sqrt(hidden).

    Raises
    ------
    InputError
        Unknown name or non-positive sizes.
    """
    Seq2KNN, MemKNN, FFN = _torch_modules()
    if min(n_features, n_classes, K, hidden) < 1:
        raise InputError(f"model sizes must be positive (n_features={n_features}, n_classes={n_classes}, K={K}, hidden={hidden})")
    if not tau > 0:
        raise InputError(f"tau={tau}: expected a positive softmax temperature")
    if name == "ffn":
        return FFN(n_features, n_classes, hidden, dropout)
    name = check_model_name(name)
    if name in MEMORY_MODELS:
        return MemKNN(n_features, n_classes, K, hidden, tau, dropout, vector_head=name == "mnknn-vec",
                      memory_labels=memory_labels, attention_scale=attention_scale)
    return Seq2KNN(n_features, n_classes, K, hidden, tau, dropout, label_head=name in LABEL_MODELS, vector_head=name in VECTOR_MODELS)


# ---------------------------------------------------------------------------------------------
# Training and inference
# ---------------------------------------------------------------------------------------------


class SubsetRows:
    """Rows ``rows`` of a row view (array, :class:`RowView`): ``view[i]`` → ``X[rows[i]]``; nothing is read upfront."""

    def __init__(self, X: Any, rows: np.ndarray):
        self.X = X
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), int(X.shape[1]))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: Any) -> np.ndarray:
        return np.asarray(self.X[self.rows[idx]], dtype=np.float32)


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


@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes
    ----------
    model : torch.nn.Module (best validation epoch's weights, in eval mode)
    history : list of dicts (epoch, loss, val_f1, val_accuracy, seconds)
    best_epoch : int
    best_val_f1 : float
    seconds : float  training wall time
    bank : (standardised rows [m, D] — an array or a :class:`SubsetRows` view —, labels int64 [m]):
        the training rows (all, or ``label_bank`` random ones): the MNkNN memory pool at inference
    reference : :class:`ReferenceLabeler` over the same rows (V2VS labelling at inference)
    """

    model: Any
    bank: tuple[Any, np.ndarray] | None = None
    reference: Any = None
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_f1: float = float("nan")
    seconds: float = 0.0


def _memory_draw(rng: np.random.Generator, pool: np.ndarray, size: int) -> np.ndarray:
    return np.sort(rng.choice(pool, size=min(size, len(pool)), replace=False))


def predict(
    model: Any,
    X: Any,
    *,
    name: str,
    memory: tuple[Any, np.ndarray] | None = None,
    memory_size: int = 64,
    memory_draws: int = 1,
    reference: Any = None,
    batch_size: int = 1024,
    device: Any = "cpu",
    random_state: Any = 0,
) -> dict[str, np.ndarray]:
    """Run a trained model on rows ``X`` (standardised; array or :class:`RowView`).

    Parameters
    ----------
    model : torch.nn.Module from :func:`build_model`
    X : [n, D] float32
    name : model name (``ffn`` for the benchmark)
    memory : (rows view, labels int64) the memory samples are drawn from (MNkNN models)
    memory_size : int, default 64
    memory_draws : int, default 1
        MNkNN: one random memory per batch of queries (the paper: "the model takes a query x and
        random samples x_1 … x_n"); more averages the predictions over that many memories (a
        deviation that lowers the variance).
    reference : :class:`ReferenceLabeler`, or (standardised features [m, D], labels [m]) indexed
        exactly — used to label V2VS vectors by their nearest reference row
    batch_size, device, random_state

    Returns
    -------
    dict: ``predictions`` int64 [n], ``scores`` float32 [n, C] (``Y^P``; V2VS: vote fractions),
    ``step_labels`` int64 [n, K] (argmax Y_t^P, or the 1-NN labels of X_t^P for V2VS) and, for
    vector models, ``step_vectors`` float32 [n, K, D].
    """
    import torch

    from knntools.utils import as_generator

    rng = as_generator(random_state)
    model.eval()
    n = len(X)
    probs_all, steps_all, vecs_all = [], [], []
    with torch.no_grad():
        for s in range(0, n, batch_size):
            xb = torch.from_numpy(np.asarray(X[np.arange(s, min(n, s + batch_size))] if not isinstance(X, np.ndarray) else X[s : s + batch_size])).to(device)
            if name in MEMORY_MODELS:
                mem_view, mem_y = memory  # type: ignore[misc]
                pool = np.arange(len(mem_y))
                acc = None
                for _ in range(max(1, memory_draws)):
                    rows = _memory_draw(rng, pool, memory_size)
                    out = model(xb, torch.from_numpy(mem_view[rows]).to(device), torch.from_numpy(mem_y[rows]).to(device))
                    acc = out if acc is None else {k: acc[k] + v for k, v in out.items()}
                out = {k: v / max(1, memory_draws) for k, v in acc.items()}  # type: ignore[union-attr]
            else:
                out = model(xb)
            if "probs" in out:
                probs_all.append(out["probs"].cpu().numpy())
            if "step_probs" in out:
                steps_all.append(out["step_probs"].argmax(-1).cpu().numpy())
            if "step_vectors" in out:
                vecs_all.append(out["step_vectors"].cpu().numpy())
    res: dict[str, np.ndarray] = {}
    if vecs_all:
        res["step_vectors"] = np.concatenate(vecs_all).astype(np.float32)
    if probs_all:
        res["scores"] = np.concatenate(probs_all).astype(np.float32)
        res["predictions"] = res["scores"].argmax(1).astype(np.int64)
        if steps_all:
            res["step_labels"] = np.concatenate(steps_all).astype(np.int64)
    else:  # V2VS: vote among the 1-NN labels of the predicted vectors
        if reference is None:
            raise InputError("V2VS predictions need a reference set (features, labels) to label its predicted vectors")
        labeler = reference if isinstance(reference, ReferenceLabeler) else ReferenceLabeler(reference[0], reference[1])
        V = res["step_vectors"]
        labels = labeler.labels(V.reshape(-1, V.shape[-1])).reshape(V.shape[0], V.shape[1])
        C = int(getattr(model, "C"))
        votes = np.stack([(labels == c).sum(1) for c in range(C)], 1).astype(np.float32)
        res["scores"] = votes / votes.sum(1, keepdims=True)
        res["predictions"] = votes.argmax(1).astype(np.int64)
        res["step_labels"] = labels.astype(np.int64)
    return res


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Macro-averaged F1 over ``n_classes`` classes (scikit-learn, zero_division=0)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def train_model(
    name: str,
    X: Any,
    y: np.ndarray,
    n_classes: int,
    *,
    neighbors: np.ndarray | None = None,
    train_rows: np.ndarray | None = None,
    val: tuple[Any, np.ndarray] | None = None,
    K: int = 5,
    hidden: int = 64,
    tau: float = 0.85,
    lam: float = 0.12,
    alpha: float = 9.5,
    lr: float = 0.01,
    dropout: float = 0.2,
    epochs: int = 30,
    batch_size: int = 64,
    memory_size: int = 64,
    label_bank: int | None = 0,
    memory_labels: bool = False,
    attention_scale: bool = False,
    memory_draws: int = 1,
    backend: str = "exact",
    metric: str = "l2",
    search_params: dict[str, Any] | None = None,
    device: Any = "cpu",
    random_state: Any = 0,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train one model (or the ``ffn`` benchmark) with Adam; keep the best validation macro-F1 epoch.

    Parameters
    ----------
    name : one of :data:`MODELS` or ``"ffn"``
    X : standardised rows, ndarray [N, D] or :class:`RowView` over an h5py dataset (rows are read
        per mini-batch: the set need not be in memory)
    y : int64 [N] labels of every row of ``X``
    n_classes : int
    neighbors : int64 [N, K] kNN-target rows of ``X`` for the rows in ``train_rows`` (row i of
        ``neighbors`` belongs to ``train_rows[i]``); required except for ``ffn``
    train_rows : int64 rows of ``X`` to train on (default all); MNkNN memories come from them too
    val : (X_val [m, D] standardised, y_val [m]) for model selection (optional)
    K, hidden, tau, lam, alpha, lr, dropout : see the module docstring (paper defaults)
    epochs : int, default 30
    batch_size : int, default 64   mini-batch size
    memory_size : int, default 64  MNkNN memory n (a new random memory per mini-batch)
    label_bank : int, default 0
        Reference rows for inference (validation scoring here, and :attr:`TrainResult.bank` /
        :attr:`TrainResult.reference`): 0 or None = every training row (the paper: V2VS vectors
        are labelled against the training set; MNkNN memories are drawn from it); N > 0 = N random
        training rows (a deviation; 4096 was this module's former fixed bank).
    memory_labels, attention_scale : bool, default False   MNkNN deviations (see :func:`build_model`)
    memory_draws : int, default 1   MNkNN memories averaged per prediction (see :func:`predict`)
    backend, metric, search_params
        Search used to label V2VS vectors (:class:`ReferenceLabeler`; ``metric`` should be the
        metric of the kNN targets).
    device, random_state, callback (called with each epoch's history row)

    Returns
    -------
    TrainResult

    Raises
    ------
    InputError
        Missing or mis-shaped ``neighbors``, labels out of range.
    """
    import torch

    from knntools.utils import as_generator

    rng = as_generator(random_state)
    devices = [device] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):  # seed dropout/init without touching the caller's global RNG
        torch.manual_seed(int(rng.integers(0, 2**31 - 1)))
        return _train(name, X, y, n_classes, rng, neighbors=neighbors, train_rows=train_rows, val=val, K=K, hidden=hidden, tau=tau,
                      lam=lam, alpha=alpha, lr=lr, dropout=dropout, epochs=epochs, batch_size=batch_size, memory_size=memory_size,
                      label_bank=label_bank, memory_labels=memory_labels, attention_scale=attention_scale, memory_draws=memory_draws,
                      backend=backend, metric=metric, search_params=search_params or {}, device=device, callback=callback)


def _train(name: str, X: Any, y: np.ndarray, n_classes: int, rng: np.random.Generator, *, neighbors: Any, train_rows: Any, val: Any,
           K: int, hidden: int, tau: float, lam: float, alpha: float, lr: float, dropout: float, epochs: int, batch_size: int,
           memory_size: int, label_bank: int | None, memory_labels: bool, attention_scale: bool, memory_draws: int,
           backend: str, metric: str, search_params: dict[str, Any], device: Any, callback: Any) -> TrainResult:
    import torch

    N, D = int(X.shape[0]), int(X.shape[1])
    y = check_labels(y, n_classes)
    rows = np.arange(N, dtype=np.int64) if train_rows is None else np.asarray(train_rows, dtype=np.int64)
    if name != "ffn":
        name = check_model_name(name)
        if neighbors is None or neighbors.shape != (len(rows), K):
            got = None if neighbors is None else neighbors.shape
            raise InputError(f"neighbors: shape {got}; expected ({len(rows)}, {K}) kNN-target rows for the training rows")
    model = build_model(name, D, n_classes, K=K, hidden=hidden, tau=tau, dropout=dropout, memory_labels=memory_labels,
                        attention_scale=attention_scale).to(device)
    if label_bank is not None and label_bank < 0:
        raise InputError(f"label_bank={label_bank}: expected 0 (every training row) or a positive number of rows")
    bank_rows = rows if not label_bank or len(rows) <= label_bank else np.sort(rng.choice(rows, int(label_bank), replace=False))
    bank_X = np.asarray(X[bank_rows], dtype=np.float32) if isinstance(X, np.ndarray) else SubsetRows(X, bank_rows)
    bank = (bank_X, y[bank_rows])
    reference = None
    if name == "v2vs":  # only V2VS labels its vectors by search; built once, reused every epoch
        reference = ReferenceLabeler(bank_X, bank[1], backend=backend, metric=metric, **search_params)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    res = TrainResult(model=model)
    best_state, best_key = None, (-1.0, -math.inf)
    t0 = time.perf_counter()
    bs = max(2, int(batch_size))
    for epoch in range(1, epochs + 1):
        model.train()
        te = time.perf_counter()
        perm = rng.permutation(len(rows))
        total, count = 0.0, 0
        for s in range(0, len(perm), bs):
            pos = perm[s : s + bs]
            if len(pos) < 2:  # BatchNorm needs two samples
                continue
            xr = rows[pos]
            xb = torch.from_numpy(X[xr]).to(device)
            yb = torch.from_numpy(y[xr]).to(device)
            if name == "ffn":
                out = model(xb)
                loss = torch.nn.functional.cross_entropy(out["logits"], yb)
            else:
                nb = neighbors[pos]
                y_nb = torch.from_numpy(y[nb]).to(device)
                x_nb = None
                if name in VECTOR_MODELS:
                    x_nb = torch.from_numpy(X[nb.reshape(-1)].reshape(len(pos), K, D)).to(device)
                if name in MEMORY_MODELS:
                    mrows = _memory_draw(rng, rows, memory_size)
                    out = model(xb, torch.from_numpy(X[mrows]).to(device), torch.from_numpy(y[mrows]).to(device))
                else:
                    out = model(xb)
                loss = combined_loss(out, y_nb, x_nb, yb, alpha=alpha, lam=lam)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(pos)
            count += len(pos)
        row = {"epoch": epoch, "loss": total / max(1, count), "seconds": time.perf_counter() - te}
        if val is not None and len(val[1]):
            pv = predict(model, val[0], name=name, memory=bank, memory_size=memory_size, memory_draws=memory_draws, reference=reference,
                         device=device, random_state=int(rng.integers(0, 2**31 - 1)))
            row["val_f1"] = macro_f1(val[1], pv["predictions"], n_classes)
            row["val_accuracy"] = float((pv["predictions"] == val[1]).mean())
            key = (row["val_f1"], -row["loss"])
        else:
            key = (0.0, -row["loss"])
        if key > best_key:
            best_key, best_state, res.best_epoch = key, copy.deepcopy(model.state_dict()), epoch
            res.best_val_f1 = row.get("val_f1", float("nan"))
        res.history.append(row)
        if callback is not None:
            callback(row)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    res.bank = bank
    res.reference = reference
    res.seconds = time.perf_counter() - t0
    return res


# ---------------------------------------------------------------------------------------------
# kNN benchmarks
# ---------------------------------------------------------------------------------------------


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
    ``batch_size`` training rows (drawn from ``pool``) and votes among its K nearest there.
    ``X`` is a row view (array or :class:`RowView`); returns predictions int64 [n_queries]."""
    import torch

    from knntools.utils import as_generator

    rng = as_generator(random_state)
    preds = np.empty(len(X_query), dtype=np.int64)
    for s in range(0, len(X_query), query_block):
        brows = np.sort(rng.choice(pool, size=min(batch_size, len(pool)), replace=False))
        d = _pair_dist(torch, torch.from_numpy(np.asarray(X_query[s : s + query_block], dtype=np.float32)), torch.from_numpy(X[brows]), metric).numpy()
        kk = min(K, d.shape[1])
        part = np.argsort(d, axis=1)[:, :kk]
        preds[s : s + query_block] = knn_vote(np.asarray(y)[brows][part], n_classes)[0]
    return preds


# ---------------------------------------------------------------------------------------------
# Checkpoints (plain dicts: torch.load(weights_only=True) loads them)
# ---------------------------------------------------------------------------------------------


CHECKPOINT_FORMAT = "knntools-seq2knn"
#: Out-of-core runs store at most this many random training rows in the checkpoint (full runs store
#: the whole reference set: every training row with ``--label-bank 0``).
CHECKPOINT_BANK_ROWS = 4096
CHECKPOINT_VERSION = 1


def checkpoint_dict(model: Any, *, name: str, n_features: int, n_classes: int, classes: Sequence[str], hyper: dict[str, Any],
                    scaler: Standardizer, provenance: dict[str, Any] | None = None, memory: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """A self-describing checkpoint: only tensors, numbers, strings, lists and dicts.

    Keys: ``format``, ``format_version``, ``model`` (name), ``n_features``, ``n_classes``,
    ``classes``, ``hyper`` (K, hidden, tau, lam, alpha, lr, dropout, …), ``scaler_mean`` /
    ``scaler_std`` (float32 tensors [D]), ``state_dict``, ``provenance`` (plain dict) and, for
    MNkNN models and V2VS, ``memory_x`` [m, D] / ``memory_y`` [m]: the standardised training samples
    their memories (MNkNN) or 1-NN labelling (V2VS) draw from at inference.
    """
    import torch

    ck: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "model": name,
        "n_features": int(n_features), "n_classes": int(n_classes), "classes": [str(c) for c in classes],
        "hyper": {k: (float(v) if isinstance(v, float) else v) for k, v in hyper.items()},
        "scaler_mean": torch.from_numpy(np.asarray(scaler.mean, dtype=np.float32)),
        "scaler_std": torch.from_numpy(np.asarray(scaler.std, dtype=np.float32)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "provenance": dict(provenance or {}),
    }
    if memory is not None:
        ck["memory_x"] = torch.from_numpy(np.ascontiguousarray(memory[0], dtype=np.float32))
        ck["memory_y"] = torch.from_numpy(np.asarray(memory[1], dtype=np.int64))
    return ck


def load_checkpoint(path: Any) -> tuple[Any, dict[str, Any], Standardizer]:
    """Load a checkpoint written by ``knntools seq2knn`` with ``torch.load(weights_only=True)``.

    Returns
    -------
    (model in eval mode, checkpoint dict, Standardizer)

    Raises
    ------
    InputError
        Missing/unreadable file or not a seq2knn checkpoint.
    """
    import torch

    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except Exception as exc:
        from knntools.models.checkpoint import load_error_reason

        raise InputError(f"{path}: not a loadable checkpoint: {load_error_reason(exc)}; expected a .pt written by `knntools seq2knn`") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a seq2knn checkpoint (format {ck.get('format') if isinstance(ck, dict) else type(ck).__name__!r}); expected one written by `knntools seq2knn`")
    h = ck["hyper"]
    # checkpoints written before these options existed used the label embedding and the 1/sqrt(d) scaling
    model = build_model(ck["model"], ck["n_features"], ck["n_classes"], K=int(h["K"]), hidden=int(h["hidden"]), tau=float(h["tau"]), dropout=float(h["dropout"]),
                        memory_labels=bool(h.get("memory_labels", True)), attention_scale=bool(h.get("attention_scale", True)))
    model.load_state_dict(ck["state_dict"])
    model.eval()
    scaler = Standardizer(ck["scaler_mean"].numpy(), ck["scaler_std"].numpy())
    return model, ck, scaler
