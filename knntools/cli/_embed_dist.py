"""``embed`` under torchrun: every rank writes one part, rank 0 then writes the set over the parts.

The protocol (docs/train_embed.md, "Sharded embedding"):

1. rank 0 draws a run id and broadcasts it; every rank writes its part
   ``<stem>-<rank:05d>-of-<world:05d>.h5`` (atomically, root attribute ``run_id``);
2. an all-reduce of the accuracy counts doubles as the barrier "every part is written";
3. rank 0 checks the parts and writes the set (``-o``), then broadcasts its uuid: the commit.

Until the commit, any failure — an exception, a peer that died (the collective fails), or the
SIGTERM torchrun sends to the surviving ranks when one worker exits — makes every surviving rank
remove what this run wrote (parts and set carrying this run id, and the ``.partial`` temporaries of
the part names), so a failed run leaves no set and no parts behind.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, Callable

from knntools.errors import KnnToolsError


class _PeerFailure(KnnToolsError):
    """A collective failed: another rank died or stopped."""


def _collective(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        import re

        detail = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:100]
        raise _PeerFailure(f"another rank failed or stopped ({detail})") from exc


def _run_id_of(path: Path) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            v = f.attrs.get("run_id")
    except Exception:
        return None
    return v.decode() if isinstance(v, bytes) else (str(v) if v is not None else None)


def embed_distributed(write: Callable[[Path, dict], dict], output: Path, shard_attrs: dict, *, device: Any, force: bool) -> tuple[str, dict[str, int]]:
    """Run the torchrun protocol above; returns the set's uuid and the summed counts (on every rank).

    Parameters
    ----------
    write : callable
        ``write(dest, extra_root_attrs) -> {"correct", "correct_vs_labels", ...}`` embeds this
        rank's rows into ``dest`` (:func:`knntools.models.features.write_activations`).
    output : Path
        The set file (``-o``); parts go beside it (:func:`knntools.io.shards.part_path`).
    shard_attrs : dict
        This rank's shard attributes (shard_index = rank, shard_count = world size).

    Returns
    -------
    (uuid, counts)
        The set's uuid and ``{"correct", "correct_vs_labels"}`` summed over the ranks.

    Raises
    ------
    KnnToolsError
        When a peer fails (exit 1; rank 0 alone reports it), or whatever this rank's own work raised.
    """
    import uuid

    import torch
    import torch.distributed as tdist

    from knntools.distributed import backend_for, process_group
    from knntools.io.shards import check_parts, part_path, write_virtual_set

    with process_group(device) as di:
        rank, world = di.rank, di.world_size
        parts = [part_path(output, i, world) for i in range(world)]
        box: list[Any] = [uuid.uuid4().hex if rank == 0 else None]
        _collective(tdist.broadcast_object_list, box, src=0)
        run_id = str(box[0])
        done = {"committed": False}

        def cleanup() -> None:
            if done["committed"]:
                return
            for p in [*parts, output]:
                if p.exists() and _run_id_of(p) == run_id:
                    p.unlink(missing_ok=True)
                for tmp in p.parent.glob(f".{p.name}.*.partial"):
                    tmp.unlink(missing_ok=True)

        def on_term(signum: int, frame: Any) -> None:  # torchrun stops the survivors when a worker fails
            cleanup()
            if rank == 0:
                from knntools.cli._errors import error_line

                msg = f"{output}: rank 0 stopped (signal {signum}): another rank failed or stopped; no set written and this run's parts removed"
                os.write(2, (error_line("embed", msg) + "\n").encode())
            os._exit(128 + signum)

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            res = write(parts[rank], {**shard_attrs, "run_id": run_id})
            dev = torch.device(f"cuda:{di.local_rank}") if backend_for(device) == "nccl" else torch.device("cpu")
            t = torch.tensor([res["correct"], res["correct_vs_labels"]], dtype=torch.int64, device=dev)
            _collective(tdist.all_reduce, t)  # also the barrier: every part is written
            counts = dict(zip(("correct", "correct_vs_labels"), (int(v) for v in t.cpu().tolist())))
            set_uuid = None
            if rank == 0:
                set_uuid = write_virtual_set(output, check_parts(parts), force=force, extra_attrs={"run_id": run_id})
            box = [set_uuid]
            _collective(tdist.broadcast_object_list, box, src=0)  # the commit
            done["committed"] = True
            return str(box[0]), counts
        except BaseException as exc:
            cleanup()
            if isinstance(exc, _PeerFailure):
                if rank != 0:
                    import typer

                    raise typer.Exit(1) from None  # rank 0 (or the failing rank) reports
                raise KnnToolsError(f"{output}: rank {rank}: {exc}; no set written and this run's parts removed") from None
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
