"""The training loop on in-memory tensors (no DataLoader), used by ``knntools train``.

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
    axes = (0, 2, 3) if X.ndim == 4 else (0,)
    width = X.shape[1]
    s = np.zeros(width, dtype=np.float64)
    ss = np.zeros(width, dtype=np.float64)
    count = 0
    for start in range(0, len(X), 4096):
        block = X[start : start + 4096].astype(np.float64)
        s += block.sum(axis=axes)
        ss += (block**2).sum(axis=axes)
        count += block.size // width
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


def predict_logits(model: Any, X: Any, *, normalizer: Normalizer, device: Any, batch_size: int = 1000) -> np.ndarray:
    """Logits of ``model`` (eval mode, float32, no grad) on ``X`` → float32 [N, C]."""
    import torch

    model.eval()
    X_t = torch.as_tensor(X)
    outs = []
    with torch.inference_mode():
        for start in range(0, len(X_t), batch_size):
            xb = normalizer(X_t[start : start + batch_size].to(device, torch.float32))
            outs.append(model(xb).float().cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)


def evaluate(model: Any, X: Any, y: Any, *, normalizer: Normalizer, device: Any, batch_size: int = 1000) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(X, y)``: ``{"loss": float, "acc": float}``."""
    import torch
    import torch.nn.functional as F

    logits = torch.from_numpy(predict_logits(model, X, normalizer=normalizer, device=device, batch_size=batch_size))
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if len(y_t) == 0:
        return {"loss": float("nan"), "acc": float("nan")}
    return {"loss": float(F.cross_entropy(logits, y_t)), "acc": int((logits.argmax(1) == y_t).sum()) / len(y_t)}


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


def _batch_generator(seed: int, epoch: int, batch: int | None = None) -> Any:
    import torch

    key = (int(seed) * 1_000_003 + epoch * 7_919 + (0 if batch is None else batch + 1) * 104_729) % (2**63 - 1)
    return torch.Generator().manual_seed(key)


def train_model(
    model: Any,
    X: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    *,
    normalization: dict[str, Sequence[float]] | None = None,
    X_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    device: Any = "cpu",
    state: dict[str, Any] | None = None,
    on_batch: Callable[..., None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train ``model`` in place with mini-batch SGD/Adam and cross-entropy on in-memory data.

    Parameters
    ----------
    model : torch.nn.Module
    X : ndarray float32 [N, C, H, W] in [0, 1] or [N, D]
    y : ndarray int64 [N]          labels to train on (possibly noisy)
    cfg : TrainConfig
    normalization : dict, optional  ``{"mean", "std"}`` applied on the fly (see :class:`Normalizer`)
    X_test, y_test : optional       evaluated after every epoch (clean labels)
    device : torch.device or str
    state : dict, optional
        ``training_state`` of a checkpoint to resume from (optimizer, step, epoch, RNG, history).
    on_batch : callable(n_samples, loss=..., acc=...), optional   progress
    on_epoch : callable(record), optional                         after each epoch's record
    on_checkpoint : callable(training_state), optional
        Every ``cfg.checkpoint_every`` steps; receives the training state (model weights are read
        from ``model`` by the caller).

    Returns
    -------
    history : list of dict
        One record per epoch: epoch (1-based), step, lr, train_loss, train_acc (on ``y``, running
        average over the epoch in train mode), test_loss, test_acc (None without a test set), time_s.
    state : dict
        Final training state (for checkpoints that can be resumed).
    """
    import torch
    import torch.nn.functional as F

    device = torch.device(device)
    model.to(device)
    X_t = torch.as_tensor(np.asarray(X, dtype=np.float32))
    y_t = torch.as_tensor(np.asarray(y, dtype=np.int64))
    on_gpu = device.type == "cuda"
    if on_gpu and X_t.numel() * 4 < (2 << 30):
        X_t, y_t = X_t.to(device), y_t.to(device)
    norm = Normalizer(normalization, device)
    opt = make_optimizer(model, cfg)
    use_amp = bool(cfg.amp and on_gpu)
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    n = len(X_t)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total_steps = cfg.epochs * steps_per_epoch
    history: list[dict[str, Any]] = []
    epoch0, step, skip, sums = 0, 0, 0, [0.0, 0, 0]
    if state:
        opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if state.get("rng") is not None:
            torch.set_rng_state(state["rng"].cpu().to(torch.uint8))
        epoch0, step, skip = int(state["epoch"]), int(state["step"]), int(state.get("epoch_step", 0))
        sums = list(state.get("epoch_sums", [0.0, 0, 0]))
        history = list(state.get("history", []))

    def snapshot(epoch: int, epoch_step: int) -> dict[str, Any]:
        return {
            "epoch": epoch, "step": step, "epoch_step": epoch_step, "optimizer": copy.deepcopy(opt.state_dict()),
            "scaler": copy.deepcopy(scaler.state_dict()) if scaler.is_enabled() else {}, "rng": torch.get_rng_state(),
            "epoch_sums": [float(sums[0]), int(sums[1]), int(sums[2])], "history": list(history),
        }

    for epoch in range(epoch0, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=_batch_generator(cfg.seed, epoch))
        if X_t.device != torch.device("cpu"):
            perm = perm.to(X_t.device)
        for b in range(skip, steps_per_epoch):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            xb = X_t[idx].to(device, non_blocking=True)
            yb = y_t[idx].to(device, non_blocking=True)
            if cfg.augment:
                xb = augment_batch(xb, _batch_generator(cfg.seed, epoch, b), flip=cfg.flip)
            lr = lr_at(cfg, step, epoch, total_steps)
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                logits = model(norm(xb))
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
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and on_checkpoint is not None:
                on_checkpoint(snapshot(epoch, b + 1))
        skip = 0
        record: dict[str, Any] = {
            "epoch": epoch + 1, "step": step, "lr": lr_at(cfg, step - 1, epoch, total_steps),
            "train_loss": sums[0] / max(sums[2], 1), "train_acc": sums[1] / max(sums[2], 1),
            "test_loss": None, "test_acc": None, "time_s": 0.0,
        }
        train_time = time.perf_counter() - t0
        if X_test is not None and y_test is not None and len(y_test):
            ev = evaluate(model, X_test, y_test, normalizer=norm, device=device, batch_size=cfg.eval_batch_size)
            record["test_loss"], record["test_acc"] = ev["loss"], ev["acc"]
        record["train_time_s"] = train_time
        record["time_s"] = time.perf_counter() - t0
        sums = [0.0, 0, 0]
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    model.eval()
    return history, snapshot(cfg.epochs, 0)
