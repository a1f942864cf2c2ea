"""The training loop used by ``knntools train``: in-memory tensors, or a DataLoader for folder sets.

Images stay in memory as one float32 tensor in ``[0, 1]`` (design.md §6: a DataLoader over PIL
images costs 4–5 s per Fashion-MNIST epoch on its own, a preloaded tensor ≈ 0.1 s); batches are
drawn by index, normalised on the fly and, with ``augment``, randomly cropped (zero padding of
H/8 px, as the usual 4 px on 32 px CIFAR) and horizontally flipped on tensors.

Determinism: the shuffle of epoch ``e`` comes from a generator seeded with ``(seed, e)`` and the
augmentation of batch ``b`` of epoch ``e`` from one seeded with ``(seed, e, b)``, so a run resumed
from any step checkpoint replays exactly the batches it would have seen (the global torch RNG,
used by dropout, is saved in the checkpoint too). On CPU the same seed gives the same weights.

Mixed precision on CUDA (``amp=True``): autocast to bfloat16 where supported, else float16 with a
gradient scaler. CPU training is float32.

Folder image sets (``imagefolder``, ``imagenet``) do not fit in memory: ``X`` may then be a
``torch.utils.data.Dataset`` yielding ``(image tensor [C, H, W] in [0, 1], target)``; batches are
read by a ``DataLoader`` with ``workers`` worker processes over exactly the index batches the
in-memory path would draw (same shuffle, same seeds). Labels always come from ``y`` (they may be
noisy), never from the dataset's targets.

Data-parallel training (torchrun)
---------------------------------
When a ``torch.distributed`` process group with more than one process is active,
:func:`train_model` wraps the model in ``DistributedDataParallel`` (gradients averaged over
ranks every step) and each rank draws its batches with a ``DistributedSampler`` over the
training rows (``shuffle=True``, ``seed=cfg.seed``, ``set_epoch(e)``: one global permutation per
epoch, rank ``r`` takes every ``W``-th row). ``cfg.batch_size`` is the *global* batch: each rank
takes ``ceil(batch_size / W)`` rows per step, so an epoch has about as many optimizer steps as
on one process and the hyperparameters mean the same at any world size.

Per-rank seeding: the model is initialised from ``seed`` on every rank (DDP also broadcasts rank
0's weights); augmentation of batch ``b`` of epoch ``e`` on rank ``r`` uses a generator seeded
with ``(seed, e, b, r)`` (``r = 0`` gives the single-process seeds); the global torch RNG (dropout)
is re-seeded with ``seed + 1_000_003 * r`` at the start, and every rank's RNG state is saved in
the training state (``rng_ranks``) so a resumed run with the same world size replays exactly.
After every epoch BatchNorm buffers are broadcast from rank 0, the running loss/accuracy sums are
summed over ranks, and the test set is evaluated in ``W`` contiguous blocks whose sums are
all-reduced, so every rank holds the same history. A single process (no group, or world size 1)
runs exactly the in-memory loop above, bit for bit.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("none", "cosine", "step")
NO_FLIP_DATASETS = ("mnist", "kmnist", "digits", "svhn")  # flipping changes what a digit/character is


@dataclass
class TrainConfig:
    """Hyperparameters of :func:`train_model`.

    Attributes
    ----------
    epochs : int, default 10
    batch_size : int, default 128
    optimizer : {"adam", "sgd"}, default "adam"
    lr : float, default 1e-3          initial learning rate
    momentum : float, default 0.9     SGD only (Nesterov off)
    weight_decay : float, default 0.0 L2 penalty (coupled, as torch's SGD/Adam ``weight_decay``)
    lr_schedule : {"none", "cosine", "step"}, default "none"
        ``cosine``: lr·½(1 + cos(π·step/total_steps)) per step; ``step``: lr·gamma^m with m the
        number of ``milestones`` (epochs) reached.
    milestones : list of int           epochs at which ``step`` decays the lr
    gamma : float, default 0.1
    augment : bool, default False     random crop (pad H/8) and, if ``flip``, horizontal flip
    flip : bool, default True
    amp : bool, default True          mixed precision on CUDA (ignored on CPU)
    seed : int, default 0
    eval_batch_size : int, default 1000
    checkpoint_every : int, default 0  call ``on_checkpoint`` every this many optimizer steps (0: never)
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "none"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    augment: bool = False
    flip: bool = True
    amp: bool = True
    seed: int = 0
    eval_batch_size: int = 1000
    checkpoint_every: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form (stored in the checkpoint's provenance)."""
        return asdict(self)


# ------------------------------------------------------------------------------------------
# Normalisation and augmentation
# ------------------------------------------------------------------------------------------


def normalization_stats(X: np.ndarray) -> dict[str, list[float]]:
    """Per-channel (images [N, C, H, W]) or per-feature (tables [N, D]) mean and std of ``X``.

    Returns ``{"mean": [...], "std": [...]}`` (std of constant columns set to 1). Computed in float64
    chunks so 60k images need no extra copy.
    """
    X = np.asarray(X)
    return _moments_to_stats((X[start : start + 4096] for start in range(0, len(X), 4096)), X.shape[1])


def normalization_stats_stream(dataset: Any, rows: np.ndarray | None = None, *, max_images: int = 2000, seed: int = 0,
                               batch_size: int = 256, workers: int = 0) -> dict[str, list[float]]:
    """Per-channel mean and std of an image ``torch.utils.data.Dataset`` from a seeded sample.

    Parameters
    ----------
    dataset : torch Dataset yielding ``(image float32 [C, H, W] in [0, 1], target)``
    rows : ndarray int64, optional   rows to sample from (default: all)
    max_images : int, default 2000   sample size (all rows when there are fewer): one pass over
        ImageNet would cost as much as an epoch, and 2000 images fix the per-channel moments to
        about three decimals
    seed : int                        the sample is ``default_rng(seed).choice(rows, …)``, sorted
    batch_size, workers : DataLoader settings

    Returns
    -------
    dict ``{"mean": [...], "std": [...]}`` as :func:`normalization_stats`.
    """
    from knntools.io.datasets import iter_batches

    rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) > max_images:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_images, replace=False))
    return _moments_to_stats(xb.numpy() for _, xb in iter_batches(dataset, batch_size, indices=rows, workers=workers))


def _moments_to_stats(blocks: Any, width: int | None = None) -> dict[str, list[float]]:
    s = ss = None
    if width is not None:
        s, ss = np.zeros(width, dtype=np.float64), np.zeros(width, dtype=np.float64)
    count = 0
    for block in blocks:
        block = np.asarray(block).astype(np.float64)
        axes = (0, 2, 3) if block.ndim == 4 else (0,)
        width = block.shape[1]
        if s is None:
            s, ss = np.zeros(width, dtype=np.float64), np.zeros(width, dtype=np.float64)
        s += block.sum(axis=axes)
        ss += (block**2).sum(axis=axes)
        count += block.size // width
    if s is None:
        return {"mean": [], "std": []}
    mean = s / max(count, 1)
    std = np.sqrt(np.maximum(ss / max(count, 1) - mean**2, 0.0))
    std[std < 1e-8] = 1.0
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


class Normalizer:
    """``x ↦ (x − mean) / std`` on batches; identity when ``mean`` is empty.

    Parameters
    ----------
    normalization : dict  ``{"mean": [...], "std": [...]}`` (per channel for 4-D batches, per
        feature for 2-D batches), or empty lists for the identity
    device : torch.device
    """

    def __init__(self, normalization: dict[str, Sequence[float]] | None, device: Any = "cpu"):
        import torch

        norm = normalization or {}
        mean, std = list(norm.get("mean") or []), list(norm.get("std") or [])
        self.identity = not mean
        if not self.identity:
            self.mean = torch.tensor(mean, dtype=torch.float32, device=device)
            self.std = torch.tensor(std if std else [1.0] * len(mean), dtype=torch.float32, device=device)

    def __call__(self, x: Any) -> Any:
        if self.identity:
            return x
        shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
        return (x - self.mean.view(shape)) / self.std.view(shape)


def augment_batch(x: Any, generator: Any, *, flip: bool = True, pad: int | None = None) -> Any:
    """Random crop (zero padding ``pad`` px, default H//8) and random horizontal flip of an image batch.

    Parameters
    ----------
    x : torch.Tensor [B, C, H, W]
    generator : torch.Generator   source of randomness (CPU)
    flip : bool
    pad : int, optional

    Returns
    -------
    torch.Tensor of the same shape (non-image batches are returned unchanged).
    """
    import torch
    import torch.nn.functional as F

    if x.ndim != 4:
        return x
    b, c, h, w = x.shape
    p = max(1, h // 8) if pad is None else int(pad)
    if p > 0:
        padded = F.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[bi, ci, rows, cols]
    if flip:
        mask = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


# ------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------


def predict_logits(model: Any, X: Any, *, normalizer: Normalizer, device: Any, batch_size: int = 1000,
                   rows: tuple[int, int] | None = None, workers: int = 0) -> np.ndarray:
    """Logits of ``model`` (eval mode, float32, no grad) on ``X`` → float32 [N, C].

    ``X`` is an array/tensor [N, ...] or an image ``torch.utils.data.Dataset`` (read with a
    DataLoader of ``workers`` processes); ``rows=(start, stop)`` restricts it to those rows.
    """
    import torch

    model.eval()
    outs = []
    with torch.inference_mode():
        if rows is None and not _is_stream(X):
            X_t = torch.as_tensor(X)
            for start in range(0, len(X_t), batch_size):
                xb = normalizer(X_t[start : start + batch_size].to(device, torch.float32))
                outs.append(model(xb).float().cpu())
        else:
            from knntools.io.datasets import iter_batches

            for _, xb in iter_batches(X, batch_size, rows=rows, workers=workers, pin_memory=torch.device(device).type == "cuda"):
                outs.append(model(normalizer(xb.to(device, torch.float32, non_blocking=True))).float().cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)


def evaluate(model: Any, X: Any, y: Any, *, normalizer: Normalizer, device: Any, batch_size: int = 1000, workers: int = 0) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(X, y)``: ``{"loss": float, "acc": float}``.

    ``X`` as in :func:`predict_logits`.
    """
    import torch
    import torch.nn.functional as F

    logits = torch.from_numpy(predict_logits(model, X, normalizer=normalizer, device=device, batch_size=batch_size, workers=workers))
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if len(y_t) == 0:
        return {"loss": float("nan"), "acc": float("nan")}
    return {"loss": float(F.cross_entropy(logits, y_t)), "acc": int((logits.argmax(1) == y_t).sum()) / len(y_t)}


def _is_stream(X: Any) -> bool:
    """True for a ``torch.utils.data.Dataset`` (read through a DataLoader), False for arrays/tensors."""
    import torch

    return isinstance(X, torch.utils.data.Dataset)


def _dist_group() -> tuple[int, int]:
    """``(rank, world_size)`` of the active torch.distributed group, ``(0, 1)`` without one."""
    import sys

    if "torch.distributed" not in sys.modules:
        return 0, 1
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_seed(seed: int, rank: int) -> int:
    """Seed of the global torch RNG (dropout) on ``rank`` of a data-parallel run: ``seed + 1_000_003 * rank``."""
    return int(seed) + 1_000_003 * int(rank)


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


def lr_at(cfg: TrainConfig, step: int, epoch: int, total_steps: int) -> float:
    """Learning rate at global optimizer ``step`` (0-based) during ``epoch`` (0-based)."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)
    return cfg.lr


def make_optimizer(model: Any, cfg: TrainConfig) -> Any:
    """``torch.optim.Adam`` or ``SGD`` (momentum ``cfg.momentum``) with ``cfg.weight_decay``."""
    import torch

    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer {cfg.optimizer!r}; expected one of {OPTIMIZERS}")


def _batch_generator(seed: int, epoch: int, batch: int | None = None, rank: int = 0) -> Any:
    import torch

    key = (int(seed) * 1_000_003 + epoch * 7_919 + (0 if batch is None else batch + 1) * 104_729 + int(rank) * 15_485_863) % (2**63 - 1)
    return torch.Generator().manual_seed(key)


def train_model(
    model: Any,
    X: Any,
    y: np.ndarray,
    cfg: TrainConfig,
    *,
    normalization: dict[str, Sequence[float]] | None = None,
    X_test: Any = None,
    y_test: np.ndarray | None = None,
    device: Any = "cpu",
    state: dict[str, Any] | None = None,
    on_batch: Callable[..., None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    workers: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train ``model`` in place with mini-batch SGD/Adam and cross-entropy.

    Under an active ``torch.distributed`` group of more than one process, trains data-parallel
    (DistributedDataParallel + DistributedSampler, see the module docstring); every rank must
    call it with the same arguments.

    Parameters
    ----------
    model : torch.nn.Module
    X : ndarray float32 [N, C, H, W] in [0, 1] or [N, D]; or an image ``torch.utils.data.Dataset``
        of N items ``(float32 [C, H, W] in [0, 1], target)`` read with a DataLoader
    y : ndarray int64 [N]          labels to train on (possibly noisy)
    cfg : TrainConfig
    normalization : dict, optional  ``{"mean", "std"}`` applied on the fly (see :class:`Normalizer`)
    X_test, y_test : optional       evaluated after every epoch (clean labels); ``X_test`` as ``X``
    device : torch.device or str
    state : dict, optional
        ``training_state`` of a checkpoint to resume from (optimizer, step, epoch, RNG, history).
    on_batch : callable(n_samples, loss=..., acc=...), optional   progress (this rank's rows)
    on_epoch : callable(record), optional                         after each epoch's record
    on_checkpoint : callable(training_state), optional
        Every ``cfg.checkpoint_every`` steps; receives the training state (model weights are read
        from ``model`` by the caller). Under DDP the state is gathered from every rank, so every
        rank reaches this point; the caller writes on rank 0 only.
    workers : int, default 0
        DataLoader worker processes when ``X``/``X_test`` are Datasets (ignored for arrays).

    Returns
    -------
    history : list of dict
        One record per epoch: epoch (1-based), step, lr, train_loss, train_acc (on ``y``, running
        average over the epoch in train mode, summed over ranks), test_loss, test_acc (None without
        a test set), train_time_s, time_s.
    state : dict
        Final training state (for checkpoints that can be resumed); under DDP it adds
        ``world_size``, ``rng_ranks`` and ``epoch_sums_ranks``.
    """
    import torch
    import torch.nn.functional as F

    device = torch.device(device)
    model.to(device)
    rank, world = _dist_group()
    distributed = world > 1
    stream = _is_stream(X)
    if stream:
        X_t = X
    else:
        X_t = torch.as_tensor(np.asarray(X, dtype=np.float32))
    y_t = torch.as_tensor(np.asarray(y, dtype=np.int64))
    on_gpu = device.type == "cuda"
    if on_gpu and not stream and X_t.numel() * 4 < (2 << 30):
        X_t, y_t = X_t.to(device), y_t.to(device)
    norm = Normalizer(normalization, device)
    fwd = model
    if distributed:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        fwd = DistributedDataParallel(model, device_ids=[device.index] if on_gpu and device.index is not None else None)
    opt = make_optimizer(model, cfg)
    use_amp = bool(cfg.amp and on_gpu)
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    n = len(y_t)
    sampler = None
    batch_size = cfg.batch_size
    n_local = n
    if distributed:
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=int(cfg.seed), drop_last=False)
        batch_size = max(1, -(-cfg.batch_size // world))
        n_local = len(sampler)
    steps_per_epoch = max(1, math.ceil(n_local / batch_size))
    total_steps = cfg.epochs * steps_per_epoch
    history: list[dict[str, Any]] = []
    epoch0, step, skip, sums = 0, 0, 0, [0.0, 0, 0]
    if distributed and not state:
        torch.manual_seed(rank_seed(cfg.seed, rank))
    if state:
        opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        epoch0, step, skip = int(state["epoch"]), int(state["step"]), int(state.get("epoch_step", 0))
        sums = list(state.get("epoch_sums", [0.0, 0, 0]))
        history = list(state.get("history", []))
        same_world = int(state.get("world_size", 1)) == world
        if not distributed:
            if state.get("rng") is not None:
                torch.set_rng_state(state["rng"].cpu().to(torch.uint8))
        elif same_world and state.get("rng_ranks"):
            torch.set_rng_state(state["rng_ranks"][rank].cpu().to(torch.uint8))
            sums = list(state["epoch_sums_ranks"][rank])
        else:  # another world size: fresh per-rank RNG; rank 0 carries the epoch's running sums
            torch.manual_seed(rank_seed(cfg.seed, rank) + step)
            if state.get("epoch_sums_ranks"):
                parts = state["epoch_sums_ranks"]
                sums = [sum(float(r[0]) for r in parts), sum(int(r[1]) for r in parts), sum(int(r[2]) for r in parts)]
            if rank:
                sums = [0.0, 0, 0]

    def snapshot(epoch: int, epoch_step: int) -> dict[str, Any]:
        snap = {
            "epoch": epoch, "step": step, "epoch_step": epoch_step, "optimizer": copy.deepcopy(opt.state_dict()),
            "scaler": copy.deepcopy(scaler.state_dict()) if scaler.is_enabled() else {}, "rng": torch.get_rng_state(),
            "epoch_sums": [float(sums[0]), int(sums[1]), int(sums[2])], "history": list(history),
        }
        if distributed:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, (torch.get_rng_state(), [float(sums[0]), int(sums[1]), int(sums[2])]))
            snap["world_size"] = world
            snap["rng"] = gathered[0][0]
            snap["rng_ranks"] = [g[0] for g in gathered]
            snap["epoch_sums_ranks"] = [g[1] for g in gathered]
        return snap

    def epoch_batches(epoch: int) -> Any:
        """Yield ``(b, idx, xb, yb)`` for the batches ``skip…`` of ``epoch`` on this rank."""
        if sampler is not None:
            sampler.set_epoch(epoch)
            perm = torch.as_tensor(list(sampler), dtype=torch.long)
        else:
            perm = torch.randperm(n, generator=_batch_generator(cfg.seed, epoch))
        if not stream:
            if X_t.device != torch.device("cpu"):
                perm = perm.to(X_t.device)
            for b in range(skip, steps_per_epoch):
                idx = perm[b * batch_size : (b + 1) * batch_size]
                yield b, idx, X_t[idx].to(device, non_blocking=True), y_t[idx].to(device, non_blocking=True)
            return
        from knntools.io.datasets import iter_batches

        chunks = [perm[b * batch_size : (b + 1) * batch_size] for b in range(skip, steps_per_epoch)]
        loader = iter_batches(X_t, batch_size, batches=[c.tolist() for c in chunks], workers=workers, pin_memory=on_gpu)
        for b, idx, (_, xb) in zip(range(skip, steps_per_epoch), chunks, loader):
            yield b, idx, xb.to(device, torch.float32, non_blocking=True), y_t[idx].to(device, non_blocking=True)

    def evaluate_all() -> dict[str, float]:
        if not distributed:
            return evaluate(model, X_test, y_test, normalizer=norm, device=device, batch_size=cfg.eval_batch_size, workers=workers)
        nt = len(y_test)
        a, b_ = rank * nt // world, (rank + 1) * nt // world
        logits = torch.from_numpy(predict_logits(model, X_test, normalizer=norm, device=device, batch_size=cfg.eval_batch_size,
                                                 rows=(a, b_), workers=workers))
        yt = torch.as_tensor(np.asarray(y_test[a:b_]), dtype=torch.long)
        tot = torch.zeros(3, dtype=torch.float64)
        if len(yt):
            tot += torch.tensor([float(F.cross_entropy(logits, yt, reduction="sum")), int((logits.argmax(1) == yt).sum()), len(yt)], dtype=torch.float64)
        tot = tot.to(device)
        dist.all_reduce(tot)
        tot = tot.cpu()
        return {"loss": float(tot[0] / max(tot[2], 1)), "acc": float(tot[1] / max(tot[2], 1))}

    for epoch in range(epoch0, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        for b, idx, xb, yb in epoch_batches(epoch):
            if cfg.augment:
                xb = augment_batch(xb, _batch_generator(cfg.seed, epoch, b, rank), flip=cfg.flip)
            lr = lr_at(cfg, step, epoch, total_steps)
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                logits = fwd(norm(xb))
                loss = F.cross_entropy(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            with torch.no_grad():
                correct = int((logits.argmax(1) == yb).sum())
            lv = float(loss.detach())
            sums[0] += lv * len(idx)
            sums[1] += correct
            sums[2] += len(idx)
            if on_batch is not None:
                on_batch(len(idx), loss=lv, acc=sums[1] / max(sums[2], 1))
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and (on_checkpoint is not None or distributed):
                snap = snapshot(epoch, b + 1)
                if on_checkpoint is not None:
                    on_checkpoint(snap)
        skip = 0
        if distributed:
            for buf in model.buffers():  # BatchNorm statistics: rank 0's, as DDP's next forward would
                dist.broadcast(buf.data, 0)
            tot = torch.tensor([float(sums[0]), float(sums[1]), float(sums[2])], dtype=torch.float64, device=device)
            dist.all_reduce(tot)
            ep_sums = [float(v) for v in tot.cpu()]
        else:
            ep_sums = sums
        record: dict[str, Any] = {
            "epoch": epoch + 1, "step": step, "lr": lr_at(cfg, step - 1, epoch, total_steps),
            "train_loss": ep_sums[0] / max(ep_sums[2], 1), "train_acc": ep_sums[1] / max(ep_sums[2], 1),
            "test_loss": None, "test_acc": None, "time_s": 0.0,
        }
        train_time = time.perf_counter() - t0
        if X_test is not None and y_test is not None and len(y_test):
            ev = evaluate_all()
            record["test_loss"], record["test_acc"] = ev["loss"], ev["acc"]
        record["train_time_s"] = train_time
        record["time_s"] = time.perf_counter() - t0
        sums = [0.0, 0, 0]
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    model.eval()
    return history, snapshot(cfg.epochs, 0)


# ------------------------------------------------------------------------------------------
# One call: data -> network -> trained kind="model" checkpoint (what `knntools train` runs)
# ------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`fit_classifier` returns.

    Attributes
    ----------
    checkpoint : dict
        The final ``kind="model"`` checkpoint (header, weights, provenance, history, metrics,
        training_state); write it with :func:`knntools.models.checkpoint.write_checkpoint`.
    model : torch.nn.Module
        The trained network (eval mode, on ``device``).
    history : list of dict
        Per-epoch metrics (epoch, step, lr, train_loss, train_acc, test_loss, test_acc, train_time_s, time_s).
    info : dict
        Run facts: model_uuid, arch, arch_kwargs, dataset, classes, n_train, n_test, n_parameters,
        steps_per_epoch, start_epoch, epochs, labels_file, labels_uuid, device, world_size, backend.
    """

    checkpoint: dict[str, Any]
    model: Any
    history: list[dict[str, Any]]
    info: dict[str, Any]


def _training_labels(labels: Any, train_ds: Any, is_table: bool) -> tuple[np.ndarray, str | None, str | None]:
    """The labels to train on from a ``labels`` file (checked against ``train_ds``), with its uuid and path."""
    from pathlib import Path

    from knntools.errors import InputError
    from knntools.io.h5 import KFile

    with KFile(labels, "labels") as lf:
        if lf.n_samples != train_ds.n_samples:
            raise InputError(f"{labels}: labels: {lf.n_samples} rows but {train_ds.name}/train has {train_ds.n_samples}; expected a labels file made for this training split")
        if lf.n_classes and lf.n_classes != train_ds.n_classes:
            raise InputError(f"{labels}: classes: {lf.n_classes} classes but {train_ds.name} has {train_ds.n_classes}; expected the same classes")
        if lf.attrs.get("split") not in (None, "train") and not is_table:
            raise InputError(f"{labels}: split is '{lf.attrs.get('split')}'; expected labels for the train split")
        if lf.attrs.get("dataset") not in (None, train_ds.name):
            raise InputError(f"{labels}: made for dataset '{lf.attrs.get('dataset')}'; expected '{train_ds.name}'")
        y = lf.read_labels("labels")
        if lf.has("ids") and not np.array_equal(lf.read("ids").astype(np.int64), train_ds.ids):
            raise InputError(f"{labels}: ids differ from the rows of {train_ds.name}/train; expected a labels file made for this split")
        return y, lf.uuid, str(Path(labels).resolve())


def _load_training_data(dataset: str, *, data_dir: Any, download: bool, label_column: str | None, test_dataset: str | None,
                        image_size: int, resumed: dict | None) -> tuple[Any, Any, bool]:
    """``(train split, test split or None, is_table)`` of a dataset name or table file."""
    from pathlib import Path

    from knntools.errors import InputError
    from knntools.io import datasets as dsets

    is_table = Path(dataset).suffix.lower() in (".csv", ".npz", ".h5", ".hdf5")
    if is_table:
        train_ds = dsets.load_table(dataset, label_column=label_column)
        test_ds = dsets.load_table(test_dataset, label_column=label_column) if test_dataset else None
        if test_ds is not None and test_ds.X.shape[1:] != train_ds.X.shape[1:]:
            raise InputError(f"{test_dataset}: {test_ds.X.shape[1]} features but {dataset} has {train_ds.X.shape[1]}; expected the same columns")
        return train_ds, test_ds, True
    if test_dataset:
        raise InputError(f"{test_dataset}: a separate test table is only for tabular training sets; image sets are evaluated on their test split")
    if resumed is not None and dataset in dsets.FOLDER_SETS:
        image_size = int(resumed["input_shape"][-1])
    train_ds = dsets.load_dataset(dataset, split="train", data_dir=data_dir, download=download, image_size=image_size)
    test_ds = dsets.load_dataset(dataset, split="test", data_dir=data_dir, download=download, image_size=image_size)
    return train_ds, test_ds, False


def fit_classifier(
    dataset: str = "digits",
    *,
    arch: str = "mlp",
    arch_kwargs: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    data_dir: Any = None,
    download: bool = False,
    label_column: str | None = None,
    test_dataset: str | None = None,
    image_size: int = 224,
    labels: Any = None,
    subset: int | None = None,
    normalize: bool = True,
    resume: Any = None,
    device: Any = "cpu",
    workers: int = 0,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    on_batch: Callable[..., None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a classifier on a dataset split and return its ``kind="model"`` checkpoint.

    Loads the train (and test) split, the training labels (dataset labels, a ``noise`` labels
    file, or those of a resumed checkpoint), draws a seeded subset, fits the input normalisation,
    builds ``arch`` seeded with ``config.seed`` and runs :func:`train_model`. The same seed, thread
    count and torch build give bit-identical weights.

    Parameters
    ----------
    dataset : str, default "digits"
        A dataset name of :mod:`knntools.io.datasets` or a ``.csv``/``.npz``/``.h5`` table.
    arch : str, default "mlp"
        Registry name (:func:`knntools.models.registry.build_model`); ignored when resuming.
    arch_kwargs : dict, optional
        Architecture keyword arguments.
    config : TrainConfig, optional
        Hyperparameters (default ``TrainConfig()``). ``flip`` is switched off for datasets in
        :data:`NO_FLIP_DATASETS`.
    data_dir, download, label_column, image_size
        Passed to :func:`knntools.io.datasets.load_dataset` / ``load_table``.
    test_dataset : str, optional
        Tables only: a table evaluated after every epoch (image sets use their test split).
    labels : path, optional
        A ``labels`` file (``knntools noise``) for the training split: train on its labels.
    subset : int, optional
        Train on this many rows drawn without replacement (seeded), sorted (Cohen et al. 2018).
    normalize : bool, default True
        Fit per-channel (images) / per-feature (tables) mean and std on the training rows.
    resume : path, optional
        A checkpoint with ``training_state`` (step or final) to continue up to ``config.epochs``.
    device : torch.device or str, default "cpu"
    workers : int, default 0
        DataLoader workers for streamed folder sets.
    on_start : callable, optional
        Called once before training with the run facts (``TrainResult.info`` plus ``epochs``,
        ``optimizer``, ``lr``, ``batch_size``, ``bar_total``: rows this process will see).
    on_batch, on_epoch
        Passed to :func:`train_model`.
    on_checkpoint : callable, optional
        With ``config.checkpoint_every``: called on rank 0 with each step checkpoint (a full
        ``kind="model"`` checkpoint whose provenance has ``step`` and ``epoch_float``).

    Returns
    -------
    TrainResult

    Raises
    ------
    InputError
        Unknown dataset or arch, an arch that cannot run on the input shape, a labels file or
        test table that does not fit the training split, a subset larger than the split, a resume
        checkpoint without training_state, of another dataset, or already trained ``epochs``.
    SchemaError
        A resume file that is not a model checkpoint.
    """
    import dataclasses
    from pathlib import Path

    import torch

    from knntools import __version__
    from knntools.distributed import backend_for
    from knntools.errors import InputError
    from knntools.io.h5 import command_line, new_uuid, utc_now
    from knntools.models import registry
    from knntools.models.checkpoint import make_checkpoint, model_from_checkpoint, read_checkpoint
    from knntools.utils import seed_everything

    cfg = config or TrainConfig()
    kwargs = dict(arch_kwargs or {})
    seed = cfg.seed
    resumed = read_checkpoint(resume, kind="model") if resume is not None else None
    if resumed is not None:
        if "training_state" not in resumed:
            raise InputError(f"{resume}: checkpoint has no training_state; expected a checkpoint written by `knntools train` (step or final)")
        arch, kwargs, prov = resumed["arch"], dict(resumed["arch_kwargs"]), resumed["provenance"]
        if dataset != prov.get("dataset") and Path(dataset).stem != prov.get("dataset"):
            raise InputError(f"{resume}: trained on dataset '{prov.get('dataset')}' but the dataset given is '{dataset}'; expected the same dataset")
    else:
        registry.check_arch(arch)
    train_ds, test_ds, is_table = _load_training_data(dataset, data_dir=data_dir, download=download, label_column=label_column,
                                                      test_dataset=test_dataset, image_size=image_size, resumed=resumed)
    y_train, labels_uuid, labels_file = train_ds.y, None, None
    if labels is not None:
        y_train, labels_uuid, labels_file = _training_labels(labels, train_ds, is_table)
    if resumed is not None and "train_labels" in resumed and labels is None:
        y_train = resumed["train_labels"].numpy().astype(np.int64)
        labels_uuid, labels_file = resumed["provenance"].get("labels_uuid"), resumed["provenance"].get("labels_file")
        if len(y_train) != train_ds.n_samples:
            raise InputError(f"{resume}: train_labels has {len(y_train)} rows but {train_ds.name}/train has {train_ds.n_samples}")
    if subset is not None and subset > train_ds.n_samples:
        raise InputError(f"subset of {subset} rows: the training split has only {train_ds.n_samples} rows")

    seed_everything(seed)
    rows = np.arange(train_ds.n_samples)
    if resumed is not None and "subset_ids" in resumed:
        rows = resumed["subset_ids"].numpy().astype(np.int64)
    elif subset is not None:
        rows = np.sort(np.random.default_rng(seed).choice(train_ds.n_samples, size=subset, replace=False))
    if train_ds.streaming:  # folder sets: a view of the torch Dataset, images decoded by the DataLoader
        X_fit = train_ds.X if len(rows) == train_ds.n_samples else torch.utils.data.Subset(train_ds.X, rows.tolist())
        y_fit = y_train[rows]
    else:
        X_fit, y_fit = train_ds.X[rows], y_train[rows]
    if resumed is not None:
        normalization = dict(resumed["normalization"])
    elif not normalize:
        normalization = {"mean": [], "std": []}
    elif train_ds.streaming:
        normalization = normalization_stats_stream(train_ds.X, rows, seed=seed, workers=workers)
    else:
        normalization = normalization_stats(X_fit)

    torch.manual_seed(seed)
    if resumed is not None:
        model = model_from_checkpoint(resumed)
    else:
        model = registry.build_model(arch, train_ds.input_shape, train_ds.n_classes, **kwargs)
        try:
            with torch.no_grad():
                model.eval()
                model(torch.zeros((2, *train_ds.input_shape)))
        except RuntimeError as exc:
            raise InputError(f"arch {arch}: cannot run on {train_ds.name}'s input shape {train_ds.input_shape} ({str(exc).splitlines()[0][:140]})") from None
    n_params = int(sum(p.numel() for p in model.parameters()))
    cfg = dataclasses.replace(cfg, flip=cfg.flip and train_ds.name not in NO_FLIP_DATASETS)
    start_epoch = 0
    if resumed is not None:
        start_epoch = int(resumed["training_state"]["epoch"])
        if start_epoch >= cfg.epochs and int(resumed["training_state"].get("epoch_step", 0)) == 0:
            raise InputError(f"{resume}: already trained {start_epoch} epochs; expected more epochs than {start_epoch}")
    rank, world = _dist_group()
    dev = torch.device(device) if isinstance(device, str) else device
    provenance = {
        "model_uuid": new_uuid(), "created": utc_now(), "knntools_version": __version__,
        "command": command_line(), "dataset": train_ds.name,
        "data_dir": str(Path(data_dir).resolve()) if data_dir else None, "dataset_path": str(Path(dataset).resolve()) if is_table else None,
        "split": "train", "n_train": int(len(rows)), "labels_file": labels_file, "labels_uuid": labels_uuid,
        "subset": int(subset) if subset is not None else (int(len(rows)) if resumed is not None and "subset_ids" in resumed else None),
        "seed": int(seed), "hyperparameters": cfg.as_dict(), "device": str(dev), "n_parameters": n_params,
        # a seed reproduces a network only with the same torch build and CPU thread count:
        # the thread count changes the order of floating-point sums in convolutions
        "torch_version": str(torch.__version__), "num_threads": int(torch.get_num_threads()),
        "resumed_from": str(resume) if resume is not None else None,
        "resumed_model_uuid": resumed["provenance"].get("model_uuid") if resumed is not None else None,
        # data-parallel runs (torchrun): number of processes and their torch.distributed backend
        "world_size": int(world), "backend": backend_for(dev) if world > 1 else None,
    }

    def make_ckpt(training_state: dict[str, Any] | None, history: list[dict[str, Any]]) -> dict[str, Any]:
        ckpt: dict[str, Any] = {
            "arch": arch, "arch_kwargs": kwargs, "input_shape": list(train_ds.input_shape), "classes": list(train_ds.classes),
            "normalization": {"mean": list(normalization["mean"]), "std": list(normalization["std"])},
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "provenance": dict(provenance), "history": list(history),
        }
        if labels_file is not None or not np.array_equal(y_train, train_ds.y):
            ckpt["train_labels"] = torch.as_tensor(np.asarray(y_train, dtype=np.int64))
        if len(rows) != train_ds.n_samples:
            ckpt["subset_ids"] = torch.as_tensor(rows.astype(np.int64))
        if training_state is not None:
            ckpt["training_state"] = training_state
        return make_checkpoint(ckpt, kind="model")

    steps_per_epoch = -(-len(rows) // cfg.batch_size)

    def step_checkpoint(state: dict[str, Any]) -> None:
        if rank != 0:  # every rank reaches a checkpoint (its RNG is gathered); rank 0 hands it on
            return
        ck = make_ckpt(state, state["history"])
        ck["provenance"]["step"], ck["provenance"]["epoch_float"] = state["step"], state["epoch"] + state["epoch_step"] / max(1, steps_per_epoch)
        on_checkpoint(ck)

    info = {
        "model_uuid": provenance["model_uuid"], "arch": arch, "arch_kwargs": kwargs, "dataset": train_ds.name, "classes": list(train_ds.classes),
        "n_train": int(len(rows)), "n_test": None if test_ds is None else test_ds.n_samples, "n_parameters": n_params,
        "steps_per_epoch": steps_per_epoch, "start_epoch": start_epoch, "epochs": cfg.epochs, "labels_file": labels_file,
        "labels_uuid": labels_uuid, "device": str(dev), "world_size": int(world), "backend": provenance["backend"],
    }
    if on_start is not None:
        on_start({**info, "optimizer": cfg.optimizer, "lr": cfg.lr, "batch_size": cfg.batch_size,
                  "bar_total": (cfg.epochs - start_epoch) * len(rows)})
    history, final_state = train_model(
        model, X_fit, y_fit, cfg, normalization=normalization,
        X_test=None if test_ds is None else test_ds.X, y_test=None if test_ds is None else test_ds.y,
        device=dev, state=resumed["training_state"] if resumed is not None else None,
        on_batch=on_batch, on_epoch=on_epoch, on_checkpoint=step_checkpoint if cfg.checkpoint_every and on_checkpoint else None, workers=workers,
    )
    ckpt = make_ckpt(final_state, history)
    last = history[-1] if history else {}
    ckpt["metrics"] = {k: last.get(k) for k in ("train_loss", "train_acc", "test_loss", "test_acc")}
    return TrainResult(checkpoint=ckpt, model=model, history=history, info={**info, "steps": int(final_state["step"])})
