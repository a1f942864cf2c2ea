"""PyTorch's distributed runtime as knntools uses it: torchrun's environment, one process group.

knntools never launches processes itself. Under ``torchrun`` (or a SLURM step that sets the same
variables) every process reads its rank from the environment that torchrun sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``); without them a command runs as a single process (rank 0 of 1),
exactly as before. The backend follows the device: ``nccl`` for CUDA, ``gloo`` for CPU.

Reading the environment imports nothing heavy; torch is imported only when a group is started.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator

from knntools.errors import InputError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a torchrun job.

    Attributes
    ----------
    rank : int
        Global rank in ``[0, world_size)``; 0 when not under torchrun.
    world_size : int
        Number of processes (``>= 1``); 1 when not under torchrun.
    local_rank : int
        Rank on this machine (selects the CUDA device); 0 when not under torchrun.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes checkpoints, metrics and messages."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"environment variable {name}={raw!r}: expected an integer (set by torchrun)") from None


def env_info() -> DistInfo:
    """Read rank, world size and local rank from torchrun's environment variables.

    Returns
    -------
    DistInfo
        ``DistInfo(0, 1, 0)`` when ``WORLD_SIZE`` is unset (a plain single-process run).

    Raises
    ------
    InputError
        If the variables are not integers or are inconsistent (``0 <= RANK < WORLD_SIZE``).
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise InputError(f"torchrun environment RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}: expected 0 <= RANK < WORLD_SIZE")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def backend_for(device: Any) -> str:
    """The torch.distributed backend for a device: ``"nccl"`` for CUDA, ``"gloo"`` otherwise."""
    kind = getattr(device, "type", str(device)).split(":")[0]
    return "nccl" if kind == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(device: Any = "cpu", *, timeout_s: float = 1800.0) -> Iterator[DistInfo]:
    """Join torchrun's process group for the duration of a command (no-op for a single process).

    Parameters
    ----------
    device : torch.device or str
        The device this rank computes on; picks the backend (:func:`backend_for`). For CUDA the
        rank's device is set to ``cuda:LOCAL_RANK`` before the group starts.
    timeout_s : float
        Collective timeout in seconds (default 1800): a rank that dies makes the others fail
        after at most this long instead of hanging forever.

    Yields
    ------
    DistInfo
        This process's rank and world size.
    """
    info = env_info()
    if not info.distributed:
        yield info
        return
    import torch
    import torch.distributed as dist

    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    started = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        started = True
    try:
        yield info
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    import sys

    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
