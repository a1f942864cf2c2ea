"""Shards of an activation set: which rows of a split one file holds.

A shard is an ordinary knntools file (kind ``activations`` or ``features``) holding a contiguous
block of rows of a split, with five extra root attributes (docs/format.md, "Shards"):

``shard_index``, ``shard_count``
    ``I`` and ``N`` of ``--shard I/N`` (or the torchrun rank and world size).
``row_start``, ``row_stop``
    The half-open row range ``[row_start, row_stop)`` of the full split held here.
``total_rows``
    Rows in the full split.

Shard ``I`` of ``N`` over ``total`` rows holds ``[I * total // N, (I + 1) * total // N)``
(:func:`shard_rows`), so the shards of one split are contiguous, non-overlapping and in order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knntools.errors import InputError

#: Root attributes that mark a file as one shard of a split.
SHARD_ATTRS = ("shard_index", "shard_count", "row_start", "row_stop", "total_rows")


def parse_shard_spec(text: str) -> tuple[int, int]:
    """Parse ``"I/N"`` into ``(I, N)``.

    Raises
    ------
    InputError
        Unless ``N >= 1`` and ``0 <= I < N`` (e.g. ``2/2`` and ``0/0`` are refused).
    """
    parts = str(text).strip().split("/")
    try:
        if len(parts) != 2:
            raise ValueError
        index, count = int(parts[0]), int(parts[1])
    except ValueError:
        raise InputError(f"shard {text!r}: expected I/N with integers, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(f"shard {text!r}: expected 0 <= I < N and N >= 1, e.g. 0/{max(count, 2)}")
    return index, count


def shard_rows(total_rows: int, index: int, count: int) -> tuple[int, int]:
    """The half-open row range ``[start, stop)`` of shard ``index`` of ``count`` over ``total_rows`` rows.

    Shards differ in size by at most one row; empty shards occur only when ``count > total_rows``.
    """
    if count < 1 or not 0 <= index < count or total_rows < 0:
        raise InputError(f"shard {index}/{count} of {total_rows} rows: expected 0 <= I < N, N >= 1")
    return index * total_rows // count, (index + 1) * total_rows // count


@dataclass(frozen=True)
class ShardInfo:
    """The shard attributes of one file (see the module docstring)."""

    path: Path
    shard_index: int
    shard_count: int
    row_start: int
    row_stop: int
    total_rows: int

    @property
    def n_rows(self) -> int:
        return self.row_stop - self.row_start

    def as_attrs(self) -> dict[str, int]:
        """The root attributes to write into the shard file."""
        return {k: int(getattr(self, k)) for k in SHARD_ATTRS}


def shard_info_from_attrs(path: str | os.PathLike, attrs: dict[str, Any]) -> ShardInfo | None:
    """Build a :class:`ShardInfo` from a file's root attributes; ``None`` when it is not a shard.

    Raises
    ------
    InputError
        If only some shard attributes are present, or they are inconsistent.
    """
    present = [k for k in SHARD_ATTRS if k in attrs]
    if not present:
        return None
    p = Path(path)
    missing = [k for k in SHARD_ATTRS if k not in attrs]
    if missing:
        raise InputError(f"{p}: shard attributes incomplete, missing {', '.join(missing)}; expected all of {', '.join(SHARD_ATTRS)}")
    vals = {k: int(attrs[k]) for k in SHARD_ATTRS}
    info = ShardInfo(path=p, **vals)
    want = shard_rows(info.total_rows, info.shard_index, info.shard_count)
    if (info.row_start, info.row_stop) != want:
        raise InputError(f"{p}: shard {info.shard_index}/{info.shard_count} holds rows "
                         f"[{info.row_start}, {info.row_stop}); expected [{want[0]}, {want[1]}) of {info.total_rows}")
    return info


def read_shard_info(path: str | os.PathLike) -> ShardInfo | None:
    """Read the shard attributes of a knntools file; ``None`` when it is a whole (unsharded) file."""
    import h5py

    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            attrs = {k: f.attrs[k] for k in SHARD_ATTRS if k in f.attrs}
    except OSError as exc:
        raise InputError(f"{p}: not a readable HDF5 file ({str(exc).splitlines()[0][:120]})") from None
    return shard_info_from_attrs(p, attrs)
