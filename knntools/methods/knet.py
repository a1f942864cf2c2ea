"""kNet: distil a k-nearest-neighbour classifier on a network's embedding into a tiny network.

Mizrahi & Avidan, *kNet: A Deep kNN Network To Handle Label Noise*. A preliminary network is
trained on (noisy) labels; kNN in its penultimate layer is robust to the noise but must store the
whole training set. kNet is a two-layer fully connected network that takes a sample's embedding
``x`` *and* the desired ``k`` and predicts the normalised vote vector kNN would produce (§3), so the
training set can be discarded after distillation.

Architecture (paper Table 1)::

    input [x, k_enc] (d + 1) -> FC(d + 1 -> h) -> ReLU -> BatchNorm1d(h) -> FC(h -> L) -> softmax

with ``h = d / 16`` in the paper (:func:`default_hidden`: ``max(1, ceil(d / 16))``; any width can be
chosen) and ``L`` the number of classes. ``k`` enters as one extra input feature,
``k_enc = k / k_scale`` (:data:`K_ENCODING`), where ``k_scale`` is the upper end of the training
k range (101 for the paper's ``[1, 101]``). A *fixed kNet* keeps the same scale (101 by default),
so its constant training input is ``k / 101`` and other ks stay near the trained input rather
than being fed as ``k / 1`` far outside anything seen in training.

Targets (§3, §4): for every training sample, its ``k_max`` nearest *other* training samples in the
chosen layer are found once (through :mod:`knntools.search`); the target for a given ``k`` is the
vote vector of the first ``k`` neighbours' (noisy) labels divided by ``k``. The per-k vote counts
are kept as cumulative counts ``[n, k_max, L]`` (:func:`cumulative_votes`) so a target is one
lookup. ``include_self=True`` counts the sample itself as its own first neighbour (then the k-th
target uses the sample and its k − 1 nearest others); the paper's kNN on the training set is
usually taken without the query itself, which is the default.

Training (§3, §4): each sample of each mini-batch gets a random ``k`` uniform in
``[k_low, k_high]`` (the paper: [1, 101]) — or one fixed ``k`` for *fixed kNet* — and the loss is
the cross-entropy against the soft target, ``-sum_c t_c log softmax(z)_c`` (the paper found it
converges faster than KL divergence, with which it shares the gradient). Adam optimiser.

Everything here works on arrays; nothing reads files or prints. Randomness comes from ``seed``
only (the global torch RNG state is left as it was).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from knntools.errors import InputError
from knntools.methods._splits import DEFAULT_VAL_FRACTION, validation_split

#: How ``k`` is fed to the network (recorded in checkpoints).
K_ENCODING = "k / k_scale"
#: Identifies a kNet checkpoint (``torch.load(weights_only=True)`` gives a plain dict).
CHECKPOINT_FORMAT = "knntools-knet"
CHECKPOINT_VERSION = 1
#: Paper defaults (§4): k drawn uniformly from [1, 101].
DEFAULT_K_RANGE = (1, 101)


# --------------------------------------------------------------------------------------------
# Targets: kNN votes
# --------------------------------------------------------------------------------------------


def check_k_range(k_low: int, k_high: int, n_train: int, *, include_self: bool = False) -> tuple[int, int]:
    """Validate a training k range against the number of training samples.

    The bound is the one rule of the search layer, :func:`knntools.search.base.check_k`: every
    sample needs ``k_high`` neighbours among the candidate rows, which are the ``n_train - 1``
    *other* samples by default, or all ``n_train`` with ``include_self`` (the sample is then its
    own first neighbour, see :func:`training_neighbors`).

    Parameters
    ----------
    k_low, k_high : int
        Inclusive range, ``1 <= k_low <= k_high`` (a fixed kNet passes ``(k, k)``).
    n_train : int
        Training samples.
    include_self : bool, default False

    Returns
    -------
    (int, int)

    Raises
    ------
    InputError
        ``k_low < 1``, ``k_low > k_high``, or ``k_high`` beyond the candidate rows; the message
        starts with ``k range LOW:HIGH``.
    """
    from knntools.search.base import check_k

    k_low, k_high = _range_shape(k_low, k_high)
    try:
        check_k(k_high, int(n_train), exclude_self=not include_self)
    except InputError as exc:
        raise InputError(f"k range {k_low}:{k_high}: {exc}") from None
    return k_low, k_high


def _range_shape(k_low: Any, k_high: Any) -> tuple[int, int]:
    ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (k_low, k_high))
    if not ok or k_low < 1 or k_high < k_low:
        raise InputError(f"k range {k_low}:{k_high}: expected integers 1 <= low <= high")
    return int(k_low), int(k_high)


def neighbor_labels_from_indices(indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Labels of neighbours: ``labels[indices]``.

    Parameters
    ----------
    indices : ndarray (n, k) int64, rows of the training set, nearest first
    labels : ndarray (n_train,) int64 in [0, L)

    Returns
    -------
    ndarray (n, k) int64
    """
    return np.asarray(labels, dtype=np.int64)[np.asarray(indices, dtype=np.int64)]


def training_neighbors(index: Any, k_max: int, *, include_self: bool = False) -> np.ndarray:
    """Indices of each training sample's ``k_max`` nearest training samples, nearest first.

    Parameters
    ----------
    index : NeighborIndex
        Fitted on the training rows (see :func:`knntools.search.make_index`).
    k_max : int
        Neighbours per sample.
    include_self : bool, default False
        Put the sample itself first and fill the other ``k_max - 1`` slots with its nearest other
        samples; by default the sample is excluded (``index.kneighbors(None, k_max)``).

    Returns
    -------
    ndarray (n_train, k_max) int64
    """
    n = int(index.n_samples_)
    if include_self:
        own = np.arange(n, dtype=np.int64)[:, None]
        if k_max == 1:
            return own
        _, idx = index.kneighbors(None, k_max - 1)
        return np.concatenate([own, idx.astype(np.int64)], axis=1)
    _, idx = index.kneighbors(None, k_max)
    return idx.astype(np.int64)


def cumulative_votes(neighbor_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Cumulative class counts of the first 1..k_max neighbours.

    Parameters
    ----------
    neighbor_labels : ndarray (n, k_max) int, nearest first, values in [0, n_classes)
    n_classes : int

    Returns
    -------
    ndarray (n, k_max, n_classes), unsigned integer (uint8 when k_max <= 255, else uint16/uint32)
        ``out[i, k - 1, c]`` = number of the first ``k`` neighbours of ``i`` labelled ``c``; the
        kNN target for ``k`` is ``out[i, k - 1] / k``.
    """
    nl = np.asarray(neighbor_labels, dtype=np.int64)
    n, k_max = nl.shape
    dtype = np.uint8 if k_max <= 255 else (np.uint16 if k_max <= 65535 else np.uint32)
    onehot = np.zeros((n, k_max, n_classes), dtype=dtype)
    np.put_along_axis(onehot, nl[:, :, None], 1, axis=2)
    return np.cumsum(onehot, axis=1, dtype=dtype)


def vote_targets(cum: np.ndarray | torch.Tensor, rows: Any, ks: Any) -> np.ndarray | torch.Tensor:
    """Normalised kNN vote vectors for ``(row, k)`` pairs: ``cum[rows, ks - 1] / ks``.

    Parameters
    ----------
    cum : (n, k_max, L) cumulative counts from :func:`cumulative_votes` (ndarray or tensor)
    rows : (m,) int rows
    ks : (m,) int, each in [1, k_max]

    Returns
    -------
    (m, L) float32, rows sum to 1 (same array library as ``cum``)
    """
    if isinstance(cum, torch.Tensor):
        rows_t = torch.as_tensor(rows, dtype=torch.long, device=cum.device)
        ks_t = torch.as_tensor(ks, dtype=torch.long, device=cum.device)
        return cum[rows_t, ks_t - 1].float() / ks_t[:, None].float()
    rows = np.asarray(rows, dtype=np.int64)
    ks = np.asarray(ks, dtype=np.int64)
    return (cum[rows, ks - 1].astype(np.float32) / ks[:, None].astype(np.float32)).astype(np.float32)


def knn_vote(neighbor_labels: np.ndarray, k: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain kNN: normalised votes of the first ``k`` neighbours and the predicted class.

    Ties between classes with the same count are broken in favour of the class whose first
    vote comes from the nearer neighbour (so ``k = 2`` with two different labels predicts the
    nearest neighbour's label, as ``k = 1`` does).

    Parameters
    ----------
    neighbor_labels : ndarray (n, >= k) int, nearest first
    k : int, >= 1
    n_classes : int

    Returns
    -------
    proba : ndarray (n, n_classes) float32, rows sum to 1
    pred : ndarray (n,) int64
    """
    nl = np.asarray(neighbor_labels, dtype=np.int64)[:, :k]
    n = len(nl)
    counts = np.zeros((n, n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), k), nl.ravel()), 1)
    first = np.full((n, n_classes), k, dtype=np.int64)  # position of each class's nearest vote
    np.minimum.at(first, (np.repeat(np.arange(n), k), nl.ravel()), np.tile(np.arange(k), n))
    key = counts * (k + 1) - first
    pred = key.argmax(axis=1).astype(np.int64)
    return (counts / float(k)).astype(np.float32), pred


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


def default_hidden(d: int) -> int:
    """Hidden width of Table 1, ``d / 16``, rounded up and at least 1."""
    return max(1, math.ceil(int(d) / 16))


class KNet(nn.Module):
    """kNet (paper Table 1): FC(d+1 → h) · ReLU · BatchNorm1d(h) · FC(h → L) (· softmax).

    Parameters
    ----------
    d : int
        Input dimension (width of the embedding layer).
    n_classes : int
        ``L``.
    hidden : int or None
        ``h``; ``None`` → :func:`default_hidden` (``ceil(d / 16)``).
    k_scale : float, default 101
        ``k`` is encoded as ``k / k_scale`` and appended to ``x`` (:data:`K_ENCODING`).

    Notes
    -----
    ``forward(x, k)`` takes ``x`` float32 ``(B, d)`` and ``k`` (int or ``(B,)`` tensor of ks) and
    returns the *logits* ``(B, L)``; the softmax of Table 1 is applied by :meth:`proba` and folded
    into the loss during training. Trainable parameters:
    ``(d + 1)·h + h + 2h + h·L + L`` (BatchNorm also keeps 2h running statistics, not counted).
    """

    def __init__(self, d: int, n_classes: int, hidden: int | None = None, k_scale: float = 101.0):
        super().__init__()
        self.d = int(d)
        self.n_classes = int(n_classes)
        self.hidden = int(hidden) if hidden is not None else default_hidden(d)
        if self.d < 1 or self.n_classes < 2 or self.hidden < 1:
            raise InputError(f"kNet: d={d}, n_classes={n_classes}, hidden={hidden}; expected d >= 1, n_classes >= 2, hidden >= 1")
        if not (k_scale > 0):
            raise InputError(f"kNet: k_scale={k_scale}; expected a positive number")
        self.k_scale = float(k_scale)
        self.fc1 = nn.Linear(self.d + 1, self.hidden)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm1d(self.hidden)
        self.fc2 = nn.Linear(self.hidden, self.n_classes)

    def encode_k(self, k: Any, batch: int, device: Any) -> torch.Tensor:
        """``(batch, 1)`` float32 column ``k / k_scale`` from an int or a ``(batch,)`` tensor/array."""
        kt = torch.as_tensor(k, dtype=torch.float32, device=device)
        if kt.ndim == 0:
            kt = kt.expand(batch)
        return (kt / self.k_scale).reshape(batch, 1)

    def forward(self, x: torch.Tensor, k: Any) -> torch.Tensor:  # noqa: D401
        """Logits ``(B, L)`` for embeddings ``x`` ``(B, d)`` and neighbour counts ``k``."""
        z = torch.cat([x, self.encode_k(k, x.shape[0], x.device)], dim=1)
        return self.fc2(self.bn(self.relu(self.fc1(z))))

    def proba(self, x: torch.Tensor, k: Any) -> torch.Tensor:
        """Softmax output of Table 1: the predicted normalised kNN vote vector ``(B, L)``."""
        return torch.softmax(self.forward(x, k), dim=1)

    def n_parameters(self) -> int:
        """Number of trainable parameters (the paper's memory footprint of kNet)."""
        return int(sum(p.numel() for p in self.parameters()))

    def config(self) -> dict[str, Any]:
        """Constructor arguments (for checkpoints)."""
        return {"d": self.d, "n_classes": self.n_classes, "hidden": self.hidden, "k_scale": self.k_scale}


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    """What :func:`fit_knet` returns.

    Attributes
    ----------
    model : KNet            trained, in eval mode, on CPU
    losses : list of float  mean training cross-entropy per epoch
    seconds : float         wall time of the training loop
    params : dict           the training settings (k range / fixed k, epochs, batch size, lr, seed)
    """

    model: KNet
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_c t_c log softmax(logits)_c`` (§3 loss)."""
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def fit_knet(
    X: np.ndarray,
    cum: np.ndarray,
    *,
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    fixed_k: int | None = None,
    k_scale: float | None = None,
    hidden: int | None = None,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: Any = "cpu",
    num_threads: int | None = 1,
    callback: Any = None,
) -> FitResult:
    """Train a kNet on embeddings ``X`` against the kNN vote targets ``cum``.

    Parameters
    ----------
    X : ndarray (n, d) float32
        Training embeddings (e.g. the preliminary network's penultimate layer).
    cum : ndarray (n, k_max, L) unsigned int
        Cumulative neighbour votes from :func:`cumulative_votes`, ``k_max >= k_high`` (or ``fixed_k``).
    k_range : (int, int), default (1, 101)
        Inclusive range; every sample of every batch gets its own ``k ~ U{k_low..k_high}`` (§4).
    fixed_k : int or None
        Train a *fixed kNet*: every sample uses this ``k`` (``k_range`` then only sets ``k_scale``).
    k_scale : float or None
        ``k`` is fed as ``k / k_scale``; default ``k_range[1]`` (101), also for a fixed kNet.
    hidden : int or None
        Hidden width (default ``ceil(d / 16)``, Table 1).
    epochs, batch_size : int, defaults 30, 128
    lr, weight_decay : float, defaults 1e-3, 0
        Adam settings.
    seed : int, default 0
        Seeds weight initialisation, the shuffling and the k draws (global RNG untouched).
    device : str or torch.device, default "cpu"
    num_threads : int or None, default 1
        torch CPU threads while training (restored afterwards). The network is so small that
        one thread is fastest: measured 0.3 s vs 22 s for 2 epochs of 20k × 128-d with 2 threads
        on a busy 2-core machine (thread synchronisation dominates). ``None`` keeps the caller's.
    callback : callable(epoch: int, loss: float) or None
        Called after every epoch (progress reporting).

    Returns
    -------
    FitResult

    Raises
    ------
    InputError
        Shape mismatches, ``k`` beyond the targets' ``k_max``, non-finite ``X``, bad settings.
    """
    import time

    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or cum.ndim != 3 or len(X) != len(cum):
        raise InputError(f"kNet: X {X.shape} and targets {cum.shape}: expected (n, d) and (n, k_max, L) with the same n")
    if not np.isfinite(X).all():
        raise InputError("kNet: X has non-finite values; expected finite embeddings")
    n, d = X.shape
    k_max, n_classes = int(cum.shape[1]), int(cum.shape[2])
    if fixed_k is not None:
        lo = hi = int(fixed_k)
    else:
        lo, hi = (int(v) for v in k_range)
    scale = float(k_scale) if k_scale is not None else float(k_range[1])
    if lo < 1 or hi < lo or hi > k_max:
        raise InputError(f"kNet: k range {lo}:{hi}; expected 1 <= low <= high <= {k_max} (neighbours computed)")
    if epochs < 1 or batch_size < 1 or not (lr > 0):
        raise InputError(f"kNet: epochs={epochs}, batch_size={batch_size}, lr={lr}; expected positive values")
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(int(seed))
        model = KNet(d, n_classes, hidden=hidden, k_scale=scale).to(dev)
    gen = torch.Generator(device="cpu").manual_seed(int(seed) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    Xt = torch.from_numpy(X).to(dev)
    cum_t = torch.from_numpy(np.ascontiguousarray(cum)).to(dev)
    t0 = time.perf_counter()
    losses: list[float] = []
    old_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        _train_loop(model, opt, Xt, cum_t, gen, lo, hi, epochs, batch_size, dev, losses, callback)
    finally:
        torch.set_num_threads(old_threads)
    model.eval()
    model.cpu()
    params = {"k_range": [lo, hi], "fixed_k": None if fixed_k is None else int(fixed_k), "k_scale": scale, "epochs": int(epochs),
              "batch_size": int(batch_size), "lr": float(lr), "weight_decay": float(weight_decay), "seed": int(seed)}
    return FitResult(model=model, losses=losses, seconds=time.perf_counter() - t0, params=params)


def _train_loop(model: KNet, opt: Any, Xt: torch.Tensor, cum_t: torch.Tensor, gen: torch.Generator, lo: int, hi: int,
                epochs: int, batch_size: int, dev: Any, losses: list[float], callback: Any) -> None:
    n = Xt.shape[0]
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        ks_all = torch.randint(lo, hi + 1, (n,), generator=gen)
        total, seen = 0.0, 0
        for start in range(0, n, batch_size):
            rows = perm[start : start + batch_size]
            if len(rows) < 2 and n >= 2:  # BatchNorm needs 2+ samples in training mode
                continue
            ks = ks_all[start : start + batch_size].to(dev)
            rows_d = rows.to(dev)
            target = vote_targets(cum_t, rows_d, ks)
            logits = model(Xt[rows_d], ks)
            loss = soft_cross_entropy(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
            seen += len(rows)
        losses.append(total / max(1, seen))
        if callback is not None:
            callback(epoch, losses[-1])


@torch.no_grad()
def predict_proba(model: KNet, X: np.ndarray, k: int, *, batch_size: int = 8192, device: Any = "cpu") -> np.ndarray:
    """kNet's predicted vote vector for every row of ``X`` at neighbour count ``k``.

    Parameters
    ----------
    model : KNet (put in eval mode here)
    X : ndarray (n, d) float32
    k : int, >= 1 (values outside the training range extrapolate; callers should warn)

    Returns
    -------
    ndarray (n, L) float32, rows sum to 1

    Raises
    ------
    InputError
        ``X`` width differs from the model's ``d``.
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != model.d:
        raise InputError(f"kNet: input has shape {X.shape}; expected (n, {model.d})")
    dev = torch.device(device)
    model.eval().to(dev)
    out = np.empty((len(X), model.n_classes), dtype=np.float32)
    for start in range(0, len(X), batch_size):
        xb = torch.from_numpy(X[start : start + batch_size]).to(dev)
        out[start : start + len(xb)] = model.proba(xb, int(k)).cpu().numpy()
    model.cpu()
    return out


# --------------------------------------------------------------------------------------------
# Comparison with kNN (paper Tables 2–5 and Figure 3)
# --------------------------------------------------------------------------------------------


def approximation_stats(p_knet: np.ndarray, p_knn: np.ndarray) -> dict[str, float]:
    """Figure 3 of the paper for one k: how closely kNet's output follows kNN's vote vector.

    Parameters
    ----------
    p_knet, p_knn : ndarray (n, L) float, rows sum to 1

    Returns
    -------
    dict
        ``mad``: mean over samples and classes of ``|p_knet - p_knn|``;
        ``l1``: mean over samples of ``sum_c |p_knet - p_knn|`` (= ``L · mad``);
        ``max_knn`` / ``max_knet``: mean over samples of the largest entry of each distribution;
        ``agreement``: fraction of samples where both argmaxes agree.
    """
    a = np.asarray(p_knet, dtype=np.float64)
    b = np.asarray(p_knn, dtype=np.float64)
    diff = np.abs(a - b)
    return {
        "mad": float(diff.mean()),
        "l1": float(diff.sum(axis=1).mean()),
        "max_knn": float(b.max(axis=1).mean()),
        "max_knet": float(a.max(axis=1).mean()),
        "agreement": float((a.argmax(axis=1) == b.argmax(axis=1)).mean()),
    }


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``pred == y`` (0.0 for empty input)."""
    pred = np.asarray(pred)
    return float((pred == np.asarray(y)).mean()) if len(pred) else 0.0


def memory_footprint(model: KNet, n_train: int, d: int) -> dict[str, int]:
    """Memory footprint as counted in the paper (§4): kNet parameters vs the stored training set.

    Returns
    -------
    dict
        ``knet_parameters`` (trainable), ``knet_buffers`` (BatchNorm running statistics),
        ``knn_parameters`` = ``n_train · d`` stored feature values (the paper's count; the labels,
        ``n_train`` more integers, are reported as ``knn_labels``), and byte counts in float32.
    """
    p = model.n_parameters()
    b = int(sum(t.numel() for name, t in model.named_buffers() if t.dtype.is_floating_point))
    return {
        "knet_parameters": p,
        "knet_buffers": b,
        "knet_bytes_float32": 4 * (p + b),
        "knn_parameters": int(n_train) * int(d),
        "knn_labels": int(n_train),
        "knn_bytes_float32": 4 * int(n_train) * int(d) + 8 * int(n_train),
    }


# --------------------------------------------------------------------------------------------
# The method end to end: distil (training), pick k on validation rows (issue 17), evaluate
# --------------------------------------------------------------------------------------------


@dataclass
class DistillResult:
    """What :func:`distill` returns.

    Attributes
    ----------
    model : KNet                 trained, in eval mode, on CPU
    fit : FitResult              losses per epoch, training seconds, training settings
    k_range : (int, int)         the ks trained: ``(k_low, k_high)``, or ``(k, k)`` for a fixed kNet
    k_scale : float              ``k`` is fed as ``k / k_scale``
    fixed_k : int or None
    n_train, d, n_classes : int
    train_accuracy : float       kNet at ``k_high`` (the fixed k) against the training labels
    memory : dict                :func:`memory_footprint`
    search_seconds : float       index build (when not given) and the neighbour search
    """

    model: KNet
    fit: FitResult
    k_range: tuple[int, int]
    k_scale: float
    fixed_k: int | None
    n_train: int
    d: int
    n_classes: int
    train_accuracy: float
    memory: dict[str, int]
    search_seconds: float


def _neighbor_index(X: np.ndarray, index: Any, backend: str, metric: str, search_params: Mapping[str, Any] | None) -> Any:
    if index is not None:
        return index
    from knntools.search import fit_index

    return fit_index(backend, X, metric=metric, **dict(search_params or {}))


def distill(
    X: np.ndarray,
    labels: np.ndarray,
    *,
    n_classes: int | None = None,
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    fixed_k: int | None = None,
    include_self: bool = False,
    index: Any = None,
    backend: str = "exact",
    metric: str = "l2",
    search_params: Mapping[str, Any] | None = None,
    **train: Any,
) -> DistillResult:
    """Distil kNN on an embedding into a kNet (paper §3–§4): neighbours, vote targets, training.

    For every training row its ``k_high`` nearest training rows are found once (self excluded
    unless ``include_self``), their ``labels`` are turned into cumulative votes
    (:func:`cumulative_votes`), and :func:`fit_knet` trains a kNet against the normalised votes
    with ``k ~ U{k_low..k_high}`` per sample (§4: [1, 101]) or one ``fixed_k`` (§4 "fixed kNet").

    Parameters
    ----------
    X : ndarray (n, d) float32
        Training embeddings (the preliminary network's penultimate layer in the paper), finite.
    labels : ndarray (n,) int64 in [0, L)
        The training labels kNN votes with (the noisy labels the network was trained on).
    n_classes : int or None
        ``L``; default ``labels.max() + 1``. At least 2.
    k_range : (int, int), default (1, 101)
        Inclusive training range; its top also sets ``k_scale`` (also for a fixed kNet).
    fixed_k : int or None
        Train a fixed kNet at this k.
    include_self : bool, default False
        Count each row as its own first neighbour.
    index : NeighborIndex or None
        A fitted index over ``X`` (e.g. loaded from disk); default: built here with ``backend``,
        ``metric`` and ``search_params`` (:func:`knntools.search.fit_index`).
    **train
        The training settings, passed on to :func:`fit_knet` with its defaults: ``hidden``
        (``ceil(d / 16)``), ``epochs`` (30), ``batch_size`` (128), ``lr`` (1e-3), ``weight_decay``
        (0), ``seed`` (0), ``device`` ("cpu"), ``num_threads`` (1), ``callback``.

    Returns
    -------
    DistillResult

    Raises
    ------
    InputError
        A k range or fixed k outside ``1..n - 1`` (``1..n`` with ``include_self``; the rule of
        :func:`knntools.search.base.check_k`), fewer than 2 classes, labels out of range,
        non-finite ``X``, or an index over a different number of rows.
    """
    import time

    from knntools.search.base import check_k

    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    if X.ndim != 2 or y.shape != (len(X),):
        raise InputError(f"kNet: embeddings {X.shape} and labels {y.shape}: expected (n, d) and (n,)")
    n, d = X.shape
    range_lo, range_hi = _range_shape(*k_range)  # with a fixed k the range only sets k_scale
    if fixed_k is None:
        lo, hi = check_k_range(range_lo, range_hi, n, include_self=include_self)
    else:
        try:
            lo = hi = check_k(fixed_k, n, exclude_self=not include_self)
        except InputError as exc:
            raise InputError(f"fixed k {fixed_k}: {exc}") from None
    C = int(n_classes) if n_classes else (int(y.max()) + 1 if n else 0)
    if C < 2:
        raise InputError(f"labels: {C} class; expected at least 2 classes")
    if n and (y.min() < 0 or y.max() >= C):
        raise InputError(f"labels: values in [{int(y.min())}, {int(y.max())}]; expected class numbers in [0, {C - 1}]")
    t0 = time.perf_counter()
    idx = _neighbor_index(X, index, backend, metric, search_params)
    if int(idx.n_samples_) != n:
        raise InputError(f"index over {idx.n_samples_} rows; expected one over the {n} training rows")
    nb = training_neighbors(idx, hi, include_self=include_self)
    t_search = time.perf_counter() - t0
    cum = cumulative_votes(neighbor_labels_from_indices(nb, y), C)
    fit = fit_knet(X, cum, k_range=(range_lo, range_hi), fixed_k=fixed_k, k_scale=float(range_hi), **train)
    with torch.no_grad():
        train_acc = accuracy(predict_proba(fit.model, X, hi).argmax(1), y)
    return DistillResult(model=fit.model, fit=fit, k_range=(int(lo), int(hi)), k_scale=float(range_hi),
                         fixed_k=None if fixed_k is None else int(fixed_k), n_train=n, d=d, n_classes=C,
                         train_accuracy=train_acc, memory=memory_footprint(fit.model, n, d), search_seconds=t_search)


@dataclass
class KSelection:
    """What :func:`select_k` returns: the k chosen on validation rows, never on test labels.

    Attributes
    ----------
    k : int                   kNet's k: best kNet accuracy on the validation rows (ties: smallest k)
    knn_k : int               the same rule for plain kNN
    ks : list of int          the candidate ks (sorted)
    rows : list of dict       per k: ``k``, ``knet_accuracy``, ``knn_accuracy`` on the validation rows
    n_fit, n_val : int        training rows used to fit / held out
    val_fraction : float
    seed : int                seed of the split
    """

    k: int
    knn_k: int
    ks: list[int]
    rows: list[dict[str, Any]]
    n_fit: int
    n_val: int
    val_fraction: float
    seed: int

    def summary(self) -> dict[str, Any]:
        """JSON-ready dict of the attributes (``method`` = ``"validation"``)."""
        return {"method": "validation", "k": self.k, "knn_k": self.knn_k, "val_fraction": self.val_fraction,
                "seed": self.seed, "n_fit": self.n_fit, "n_val": self.n_val, "validation": self.rows}


def _best_k(rows: list[dict[str, Any]], key: str) -> int:
    return int(max(rows, key=lambda r: (r[key], -r["k"]))["k"])


def select_k(
    X: np.ndarray,
    labels: np.ndarray,
    ks: Any,
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    n_classes: int | None = None,
    backend: str = "exact",
    metric: str = "l2",
    search_params: Mapping[str, Any] | None = None,
    train_seed: int = 0,
    device: Any = "cpu",
    **settings: Any,
) -> KSelection:
    """Pick kNet's k from ``ks`` by accuracy on a held-out stratified fraction of the TRAINING rows.

    The paper leaves the choice of k open (§4 "How to choose k?": k = 41 or 15 "usually gives good
    results") and its tables report every k on the test set; picking the best column there uses
    the test labels. Here the choice never sees test data: :func:`validation_split` holds out
    ``val_fraction`` of the training rows (stratified on ``labels``, seeded), and a kNet is
    **trained without them** with the given training settings (normally the checkpoint's) —
    the validation rows are neither in the neighbour index, nor targets, nor anyone's neighbours —
    so they are queries kNet and kNN have never seen, exactly like test rows in the paper's
    protocol (§4: kNet trained on the training set, evaluated on held-out data). Excluding them
    only from the index while reusing a kNet trained on all rows would leak: every validation
    row's label shaped its neighbours' targets, i.e. the function kNet learned around it.
    Accuracy is measured against ``labels`` (the noisy training labels, all a practitioner has;
    under uniform noise the noisy-label accuracy is an increasing affine function of the clean one,
    so the ranking of ks is the same in expectation). Plain kNN's k is chosen the same way, with
    the fitting rows as the reference set. Ties go to the smallest k.

    Note that the embedding itself (the preliminary network) was trained on all training rows;
    that is outside this function's reach.

    Parameters
    ----------
    X : ndarray (n, d) float32
        Training embeddings.
    labels : ndarray (n,) int64
        Training labels (the ones kNet is distilled from).
    ks : iterable of int
        Candidate ks (the evaluation sweep), each ``>= 1`` and at most the fitting rows.
    val_fraction : float, default 0.1
    seed : int, default 0
        Seed of the split.
    n_classes, backend, metric, search_params, device
        As in :func:`distill`.
    train_seed : int, default 0
        :func:`distill`'s ``seed``.
    **settings
        The training settings, passed on to :func:`distill` with its defaults: ``k_range``,
        ``fixed_k``, ``include_self``, ``hidden``, ``epochs``, ``batch_size``, ``lr``,
        ``weight_decay`` (a checkpoint's: :func:`training_settings`).

    Returns
    -------
    KSelection

    Raises
    ------
    InputError
        As :func:`validation_split` and :func:`distill` (on the fitting rows); a candidate k
        beyond the fitting rows (:func:`knntools.search.base.check_k`).
    """
    from knntools.search.base import check_k

    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    cand = sorted({int(k) for k in ks})
    fit_rows, val_rows = validation_split(y, val_fraction, seed=seed)
    C = int(n_classes) if n_classes else int(y.max()) + 1
    if not cand:
        raise InputError("no candidate ks; expected at least one k >= 1")
    try:
        check_k(cand[0], len(fit_rows)), check_k(cand[-1], len(fit_rows))
    except InputError as exc:
        raise InputError(f"kNN over the {len(fit_rows)} fitting rows (validation rows held out): {exc}") from None
    Xf, Xv = X[fit_rows], X[val_rows]
    idx = _neighbor_index(Xf, None, backend, metric, search_params)
    res = distill(Xf, y[fit_rows], n_classes=C, index=idx, seed=train_seed, device=device, **settings)
    _, nb = idx.kneighbors(Xv, max(cand))
    nl = neighbor_labels_from_indices(nb, y[fit_rows])
    yv = y[val_rows]
    rows = [{"k": k, "knet_accuracy": accuracy(predict_proba(res.model, Xv, k, device=device).argmax(1), yv),
             "knn_accuracy": accuracy(knn_vote(nl, k, C)[1], yv)} for k in cand]
    return KSelection(k=_best_k(rows, "knet_accuracy"), knn_k=_best_k(rows, "knn_accuracy"), ks=cand, rows=rows,
                      n_fit=len(fit_rows), n_val=len(val_rows), val_fraction=float(val_fraction), seed=int(seed))


def training_settings(model: KNet, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The training settings of a distilled kNet, as keyword arguments of :func:`select_k`.

    Parameters
    ----------
    model : KNet
        The checkpoint's network (its ``hidden`` width and ``k_scale``).
    meta : mapping
        The checkpoint's ``meta`` (``k_range``, ``fixed_k``, ``include_self``, ``train`` with
        ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``seed``); missing entries take
        :func:`fit_knet`'s defaults.

    Returns
    -------
    dict
        ``k_range`` (for a fixed kNet ``(1, k_scale)``, which only sets the scale), ``fixed_k``,
        ``include_self``, ``hidden``, ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``train_seed``.
    """
    train = dict(meta.get("train") or {})
    fixed = meta.get("fixed_k")
    k_range = (1, int(model.k_scale)) if fixed is not None else tuple(int(v) for v in (meta.get("k_range") or (1, int(model.k_scale))))
    return {"k_range": k_range, "fixed_k": None if fixed is None else int(fixed), "include_self": bool(meta.get("include_self", False)),
            "hidden": model.hidden, "epochs": int(train.get("epochs", 30)), "batch_size": int(train.get("batch_size", 128)),
            "lr": float(train.get("lr", 1e-3)), "weight_decay": float(train.get("weight_decay", 0.0)),
            "train_seed": int(train.get("seed", 0))}


@dataclass
class Evaluation:
    """What :func:`evaluate` returns.

    Attributes
    ----------
    metrics : dict
        JSON-ready: ``dnn_accuracy`` (or None), ``knet_accuracy`` (at ``predict_k``), ``predict_k``,
        ``accuracy`` (per k of ``ks``: ``k``, ``knet_accuracy``, ``knn_accuracy`` or None — paper
        Tables 2–5), ``approximation`` (per k of ``curve_ks``: :func:`approximation_stats` —
        Figure 3), ``best_knn`` / ``best_knet`` (the best row *on the evaluated labels*: an
        oracle, for the tables only) and, with a ``selection``, ``selection``
        (:meth:`KSelection.summary` plus ``knet_test_accuracy`` / ``knn_test_accuracy`` at the
        selected ks).
    predictions : ndarray (m,) int64       kNet's class at ``predict_k``
    scores : ndarray (m, L) float32        kNet's output at ``predict_k``
    extras : dict of ndarray (m,) int64    ``dnn_predictions``, ``knet_predictions_k<K>``, ``knn_predictions_k<K>``
    ks, curve_ks : list of int
    outside : list of int                  ks outside the training range (kNet extrapolates there)
    search_seconds : float                 kNN index build (when not given) and search
    knet_seconds_per_k : float
    """

    metrics: dict[str, Any]
    predictions: np.ndarray
    scores: np.ndarray
    extras: dict[str, np.ndarray]
    ks: list[int]
    curve_ks: list[int]
    outside: list[int]
    search_seconds: float
    knet_seconds_per_k: float


def default_predict_k(k_range: tuple[int, int], fixed_k: int | None = None) -> int:
    """The k kNet predicts at when none is given: the fixed k, else the middle of the range (51 for 1:101)."""
    return int(fixed_k) if fixed_k is not None else (int(k_range[0]) + int(k_range[1])) // 2


def evaluate(
    model: KNet,
    X: np.ndarray,
    y_true: np.ndarray,
    ks: Any,
    *,
    curve_ks: Any = None,
    predict_k: int | None = None,
    train_X: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
    index: Any = None,
    backend: str = "exact",
    metric: str = "l2",
    search_params: Mapping[str, Any] | None = None,
    dnn_predictions: np.ndarray | None = None,
    k_range: tuple[int, int] | None = None,
    fixed_k: int | None = None,
    selection: KSelection | None = None,
    device: Any = "cpu",
) -> Evaluation:
    """Evaluate a kNet beside the preliminary network and plain kNN (paper Tables 2–5, Figure 3).

    Parameters
    ----------
    model : KNet
    X : ndarray (m, d) float32
        Embeddings of the evaluated rows (same layer and model as the training embeddings).
    y_true : ndarray (m,) int64
        Ground truth of the evaluated rows (the clean labels when known).
    ks : iterable of int
        The sweep: kNet and kNN accuracy at every k (Tables 2–5 columns).
    curve_ks : iterable of int or None
        ks of the kNet-vs-kNN comparison (Figure 3); default ``ks``.
    predict_k : int or None
        k of ``predictions`` / ``scores``; default the selected k with a ``selection``, else
        :func:`default_predict_k`.
    train_X : ndarray (n, d) float32 or None
        Training embeddings for plain kNN; with ``train_labels``. ``None`` skips kNN.
    train_labels : ndarray (n,) int64 or None
        The labels kNN votes with (the noisy training labels).
    index : NeighborIndex or None
        A fitted index over ``train_X`` (else built with ``backend``, ``metric``, ``search_params``).
    dnn_predictions : ndarray (m,) int64 or None
        The preliminary network's classes (argmax of its logits).
    k_range : (int, int) or None
        The training range (default ``(1, k_scale)``), for the default k and the extrapolation list.
    fixed_k : int or None
        The checkpoint's fixed k, if any.
    selection : KSelection or None
        A k chosen on validation rows (:func:`select_k`); its ks must be in ``ks``.
    device : str or torch.device, default "cpu"

    Returns
    -------
    Evaluation

    Raises
    ------
    InputError
        A k beyond the training rows (:func:`knntools.search.base.check_k`), ``X`` of another
        width, shape mismatches, a selected k not in ``ks``.
    """
    import time

    from knntools.search.base import check_k

    X = np.asarray(X, dtype=np.float32)
    y_true = np.asarray(y_true, dtype=np.int64)
    eval_ks = sorted({int(k) for k in ks})
    curve = sorted({int(k) for k in curve_ks}) if curve_ks is not None else list(eval_ks)
    if not eval_ks or min(eval_ks + curve) < 1:
        raise InputError(f"ks {eval_ks}, curve ks {curve}: expected at least one k, every k >= 1")
    lo, hi = (int(v) for v in (k_range or (1, int(model.k_scale))))
    if selection is not None and selection.k not in eval_ks:
        raise InputError(f"selected k={selection.k} is not among the evaluated ks {eval_ks}")
    if predict_k is None:
        predict_k = selection.k if selection is not None else default_predict_k((lo, hi), fixed_k)
    all_ks = sorted(set(eval_ks) | set(curve) | {int(predict_k)})
    C = model.n_classes
    nl_test, t_search = None, 0.0
    if train_X is not None:
        if train_labels is None or len(train_labels) != len(train_X):
            raise InputError("kNN reference: train_labels missing or of another length than train_X")
        try:
            check_k(min(all_ks), len(train_X)), check_k(max(all_ks), len(train_X))
        except InputError as exc:
            raise InputError(f"kNN over the training rows: {exc}") from None
        t0 = time.perf_counter()
        idx = _neighbor_index(np.asarray(train_X, dtype=np.float32), index, backend, metric, search_params)
        _, nb = idx.kneighbors(X, max(all_ks))  # every k voted below
        t_search = time.perf_counter() - t0
        nl_test = neighbor_labels_from_indices(nb, train_labels)
    t0 = time.perf_counter()
    p_knet = {k: predict_proba(model, X, k, device=device) for k in all_ks}
    t_knet = (time.perf_counter() - t0) / len(all_ks)
    acc_rows: list[dict[str, Any]] = []
    approx_rows: list[dict[str, Any]] = []
    extras: dict[str, np.ndarray] = {}
    if dnn_predictions is not None:
        extras["dnn_predictions"] = np.asarray(dnn_predictions, dtype=np.int64)
    for k in all_ks:
        knet_pred = p_knet[k].argmax(axis=1).astype(np.int64)
        row: dict[str, Any] = {"k": k, "knet_accuracy": accuracy(knet_pred, y_true), "knn_accuracy": None}
        p_knn = None
        if nl_test is not None:
            p_knn, knn_pred = knn_vote(nl_test, k, C)
            row["knn_accuracy"] = accuracy(knn_pred, y_true)
        if k in eval_ks:
            acc_rows.append(row)
            extras[f"knet_predictions_k{k}"] = knet_pred
            if p_knn is not None:
                extras[f"knn_predictions_k{k}"] = knn_pred
        if k in curve and p_knn is not None:
            approx_rows.append({"k": k, **approximation_stats(p_knet[k], p_knn)})
    final_pred = p_knet[predict_k].argmax(axis=1).astype(np.int64)
    metrics: dict[str, Any] = {
        "dnn_accuracy": accuracy(dnn_predictions, y_true) if dnn_predictions is not None else None,
        "knet_accuracy": accuracy(final_pred, y_true), "predict_k": int(predict_k),
        "accuracy": acc_rows, "approximation": approx_rows,
        "best_knn": max((r for r in acc_rows if r["knn_accuracy"] is not None), key=lambda r: r["knn_accuracy"], default=None),
        "best_knet": max(acc_rows, key=lambda r: r["knet_accuracy"]),
    }
    if selection is not None:
        by_k = {r["k"]: r for r in acc_rows}
        metrics["selection"] = {**selection.summary(), "knet_test_accuracy": by_k[selection.k]["knet_accuracy"],
                                "knn_test_accuracy": by_k[selection.knn_k]["knn_accuracy"] if selection.knn_k in by_k else None}
    outside = [k for k in all_ks if not lo <= k <= hi]
    return Evaluation(metrics=metrics, predictions=final_pred, scores=p_knet[predict_k], extras=extras, ks=eval_ks,
                      curve_ks=curve, outside=outside, search_seconds=t_search, knet_seconds_per_k=t_knet)


# --------------------------------------------------------------------------------------------
# Checkpoints (plain dicts: torch.load(weights_only=True))
# --------------------------------------------------------------------------------------------


def to_checkpoint(model: KNet, meta: Mapping[str, Any]) -> dict[str, Any]:
    """A self-describing, ``weights_only``-loadable checkpoint dict of ``kind="knet"``.

    Contents: the header of :func:`knntools.models.checkpoint.checkpoint_header` (``format``,
    ``format_version``, ``kind="knet"``), ``architecture`` (``"FC(d+1->h)-ReLU-BN-FC(h->L)-softmax"``),
    ``config`` (``d``, ``n_classes``, ``hidden``, ``k_scale``, ``k_encoding``), ``state_dict``
    (tensors), ``n_parameters`` and ``meta`` (caller facts: source file uuid/path, model_uuid, layer,
    classes, k range, training settings…; only str/int/float/bool/None and lists/dicts of them).
    Write it with :func:`knntools.models.checkpoint.write_checkpoint` ``(ckpt, path, kind="knet")``.
    """
    from knntools.models.checkpoint import make_checkpoint

    cfg = {**model.config(), "k_encoding": K_ENCODING}
    return make_checkpoint({
        "architecture": "FC(d+1->h)-ReLU-BN-FC(h->L)-softmax",
        "config": cfg,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "n_parameters": model.n_parameters(),
        "meta": _plain(dict(meta)),
    }, kind="knet")


def from_checkpoint(obj: Any, where: str = "checkpoint") -> tuple[KNet, dict[str, Any]]:
    """Rebuild a :class:`KNet` from a checkpoint; returns ``(model in eval mode, meta)``.

    Parameters
    ----------
    obj : dict or path-like
        :func:`to_checkpoint`'s dict (or what ``torch.load(weights_only=True)`` read), or the path of
        a ``.pt`` (read with :func:`knntools.models.checkpoint.read_checkpoint` ``(path, kind="knet")``).
        Files of the earlier ``format="knntools-knet"`` load too.
    where : str, default "checkpoint"
        Names the source in messages when ``obj`` is a dict.

    Raises
    ------
    InputError
        Missing file, not a kNet checkpoint (:class:`~knntools.errors.SchemaError`), a newer format
        version, or weights that do not fit the config.
    """
    import os

    from knntools.models.checkpoint import check_checkpoint, read_checkpoint

    expected = "a kNet checkpoint written by `knntools distill-knet`"
    if isinstance(obj, (str, os.PathLike)):
        where = str(obj)
        obj = read_checkpoint(obj, kind="knet", expected=expected)
    else:
        obj = check_checkpoint(obj, kind="knet", where=where, expected=expected)
    cfg = obj.get("config") or {}
    try:
        model = KNet(cfg["d"], cfg["n_classes"], hidden=cfg["hidden"], k_scale=cfg["k_scale"])
        model.load_state_dict(obj["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise InputError(f"{where}: kNet checkpoint does not fit its config ({str(exc).splitlines()[0][:160]}); expected an intact file") from None
    model.eval()
    meta = dict(obj.get("meta") or {})
    meta.setdefault("k_encoding", cfg.get("k_encoding", K_ENCODING))
    return model, meta


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_K_RANGE",
    "DistillResult",
    "Evaluation",
    "FitResult",
    "KNet",
    "KSelection",
    "K_ENCODING",
    "accuracy",
    "approximation_stats",
    "check_k_range",
    "cumulative_votes",
    "default_hidden",
    "default_predict_k",
    "distill",
    "evaluate",
    "fit_knet",
    "from_checkpoint",
    "knn_vote",
    "memory_footprint",
    "neighbor_labels_from_indices",
    "predict_proba",
    "select_k",
    "to_checkpoint",
    "training_neighbors",
    "training_settings",
    "validation_split",
    "vote_targets",
]
