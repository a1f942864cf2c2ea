"""Shards of an activation set: which rows of a split one file holds.

A shard is an ordinary knntools file (kind ``activations`` or ``features``) holding a contiguous
block of rows of a split, with five extra root attributes (docs/format.md, "Shards"):

``shard_index``, ``shard_count``
    ``I`` and ``N`` of ``--shard I/N`` (or the torchrun rank and world size).
``row_start``, ``row_stop``
    The half-open row range ``[row_start, row_stop)`` of the full split held here.
``total_rows``
    Rows in the full split.

A **set** is an ordinary ``activations`` (or ``features``) file whose per-sample datasets are HDF5
virtual datasets over the parts, with the root attribute ``parts`` listing them (relative path,
uuid and row range; docs/format.md, "Shards and sets"). :class:`knntools.io.h5.KFile` opens a set
like one file; :func:`set_parts` enumerates its parts (for searching shard by shard);
:func:`write_merged` and :func:`write_virtual_set` make a plain file or a set from parts.

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


def part_path(output: str | os.PathLike, index: int, count: int) -> Path:
    """Where ``embed`` under torchrun writes shard ``index`` of ``count`` of the set ``output``.

    ``test.h5`` -> ``test-00000-of-00002.h5`` (in the same folder; five digits, zero-padded).
    """
    p = Path(output)
    return p.with_name(f"{p.stem}-{index:05d}-of-{count:05d}{p.suffix or '.h5'}")


@dataclass(frozen=True)
class ShardInfo:
    """The shard attributes of one file (see the module docstring)."""

    path: Path
    shard_index: int
    shard_count: int
    row_start: int
    row_stop: int
    total_rows: int
    #: uuid of the part file ("" when the file has none).
    uuid: str = ""

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
    info = ShardInfo(path=p, **vals, uuid=str(attrs.get("uuid", "") or ""))
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
            attrs = {k: f.attrs[k] for k in (*SHARD_ATTRS, "uuid") if k in f.attrs}
    except OSError as exc:
        raise InputError(f"{p}: not a readable HDF5 file ({str(exc).splitlines()[0][:120]})") from None
    return shard_info_from_attrs(p, attrs)


# --------------------------------------------------------------------------------------------
# Sets: one file over many parts
# --------------------------------------------------------------------------------------------

#: Root attribute of a set file: JSON list of its parts (see :func:`set_parts`).
PARTS_ATTR = "parts"

#: File kinds that can be sharded, merged and opened as a set.
SET_KINDS = ("activations", "features")

#: Root attributes that every part of one set must share (when present in any of them).
IDENTITY_ATTRS = ("kind", "dataset", "split", "model_uuid", "model_arch", "classes", "layer_order", "penultimate",
                  "attack", "attack_params", "pooling", "layer_dtype", "feature_names")

#: Root attributes of a part that are not copied into a merged file or a set (provenance is new,
#: ``accuracy`` is recomputed over all rows, ``run_id`` marks the parts of one torchrun job).
_NOT_COPIED = ("format", "format_version", "kind", "uuid", "parents", "knntools_version", "created", "command", "seed",
               *SHARD_ATTRS, PARTS_ATTR, "accuracy", "run_id")

#: Bytes of one part read at a time by :func:`write_merged` (bounded memory).
MERGE_CHUNK_BYTES = 64 << 20


def parts_from_attrs(set_path: str | os.PathLike, attrs: dict[str, Any]) -> list[ShardInfo]:
    """The parts listed in a set file's (decoded) root attributes; ``[]`` for a plain file.

    Part paths are stored relative to the set file's folder and returned joined to it.

    Raises
    ------
    InputError
        If the ``parts`` attribute is not a list of part records.
    """
    raw = attrs.get(PARTS_ATTR)
    if raw is None:
        return []
    sp = Path(set_path)
    keys = ("path", "uuid", *SHARD_ATTRS)
    if not isinstance(raw, list) or not all(isinstance(r, dict) and all(k in r for k in keys) for r in raw):
        raise InputError(f"{sp}: attribute '{PARTS_ATTR}' is not a list of part records; expected JSON objects with {', '.join(keys)}")
    out = []
    for r in raw:
        rel = Path(str(r["path"]))
        out.append(ShardInfo(path=rel if rel.is_absolute() else Path(os.path.normpath(sp.parent / rel)), uuid=str(r["uuid"]),
                             **{k: int(r[k]) for k in SHARD_ATTRS}))
    return out


def set_parts(path: str | os.PathLike) -> list[ShardInfo]:
    """The parts of a sharded set file, in row order; ``[]`` when ``path`` is a plain file.

    Parameters
    ----------
    path : path-like
        A knntools file (a set written by ``knntools merge --virtual`` or ``embed`` under torchrun,
        or any plain file).

    Returns
    -------
    list of ShardInfo
        One per part: ``path`` (the part file, resolved against the set's folder), ``uuid``,
        ``shard_index``, ``shard_count``, ``row_start``, ``row_stop`` (rows of the set it holds)
        and ``total_rows``. Rows ``[row_start, row_stop)`` of the set are rows
        ``[0, row_stop - row_start)`` of the part.

    Raises
    ------
    InputError
        Unreadable file or a malformed ``parts`` attribute. Parts are *not* opened here
        (:class:`knntools.io.h5.KFile` checks that they exist and match).
    """
    import h5py

    from knntools.io.h5 import read_attrs

    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            attrs = read_attrs(f)
    except OSError as exc:
        raise InputError(f"{p}: not a readable HDF5 file ({str(exc).splitlines()[0][:120]})") from None
    return sorted(parts_from_attrs(p, attrs), key=lambda s: s.row_start)


def check_set_parts(set_path: str | os.PathLike, parts: list[ShardInfo]) -> None:
    """Check that every part of a set exists and is the file the set was made from.

    HDF5 reads a missing source of a virtual dataset as fill values without an error; this
    check turns that into an :class:`InputError` when the set is opened.

    Raises
    ------
    InputError
        A part file is missing, unreadable, or has another uuid or row range than recorded.
    """
    import h5py

    sp = Path(set_path)
    for part in parts:
        what = f"part {part.path.name} (shard {part.shard_index}/{part.shard_count}, rows [{part.row_start}, {part.row_stop}))"
        if not part.path.is_file():
            raise InputError(f"{sp}: {what} not found at {part.path}; expected every part file of the set beside it (move a set together with its parts)")
        try:
            with h5py.File(part.path, "r") as f:
                uuid = f.attrs.get("uuid")
                uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
                rows = (int(f.attrs.get("row_start", -1)), int(f.attrs.get("row_stop", -1)))
        except OSError as exc:
            raise InputError(f"{sp}: {what} at {part.path} is not a readable HDF5 file ({str(exc).splitlines()[0][:80]})") from None
        if uuid != part.uuid:
            raise InputError(f"{sp}: {what} at {part.path} has uuid {uuid}; expected {part.uuid} (the part was replaced after the set was made; make the virtual set again with `knntools merge`)")
        if rows != (part.row_start, part.row_stop):
            raise InputError(f"{sp}: {what} at {part.path} holds rows [{rows[0]}, {rows[1]}); expected [{part.row_start}, {part.row_stop})")


@dataclass
class _Part:
    """What :func:`check_parts` learns about one part file."""

    info: ShardInfo
    attrs: dict[str, Any]
    #: per-sample datasets: name -> (dtype, shape[1:], attrs)
    samples: dict[str, tuple[Any, tuple[int, ...], dict[str, Any]]]
    #: other datasets: name -> (array, attrs)
    other: dict[str, tuple[Any, dict[str, Any]]]


def _read_part(path: Path) -> _Part:
    import h5py
    import numpy as np

    from knntools.io.h5 import KFile, read_attrs

    with KFile(path) as kf:
        if kf.kind not in SET_KINDS:
            raise InputError(f"{path}: file kind is '{kf.kind}'; expected {' or '.join(SET_KINDS)} parts")
        if kf.attrs.get(PARTS_ATTR) is not None:
            raise InputError(f"{path}: is a set of {len(kf.parts)} parts, not a part; expected the part files themselves")
        info = shard_info_from_attrs(path, kf.attrs)
        if info is None:
            raise InputError(f"{path}: not a shard (no {', '.join(SHARD_ATTRS)} attributes); expected a part written by a sharded `knntools embed` (shard I of N) or under torchrun")
        info = ShardInfo(**{**info.__dict__, "uuid": kf.uuid})
        samples: dict[str, tuple[Any, tuple[int, ...], dict[str, Any]]] = {}
        other: dict[str, Any] = {}

        def visit(name: str, obj: Any) -> None:
            if not isinstance(obj, h5py.Dataset):
                return
            if obj.attrs.get("axis0") == "samples":
                samples[name] = (obj.dtype, tuple(obj.shape[1:]), read_attrs(obj))
            else:
                other[name] = (np.asarray(obj[()]), read_attrs(obj))

        kf.f.visititems(visit)
        if kf.n_samples != info.n_rows:
            raise InputError(f"{path}: {kf.n_samples} rows but its shard attributes say [{info.row_start}, {info.row_stop}); expected {info.n_rows} rows")
        return _Part(info=info, attrs=dict(kf.attrs), samples=samples, other=other)


def check_parts(paths: list[str | os.PathLike]) -> list[_Part]:
    """Open and check the parts of one split before merging them; returns them sorted by ``row_start``.

    The parts must be files of kind ``activations`` or ``features`` with shard attributes, agree on
    :data:`IDENTITY_ATTRS` (model, dataset, split, classes, layers…), on the names, dtypes and
    widths of their datasets, on ``total_rows`` and ``shard_count``, and their row ranges must be
    contiguous, non-overlapping and cover ``[0, total_rows)``. They may be given in any order.

    Raises
    ------
    InputError
        Naming the offending part and what was expected: no parts, a missing file, not a shard,
        a duplicate, a mismatch, an overlap or a gap.
    """
    import numpy as np

    if not paths:
        raise InputError("no parts given; expected the PART files of a sharded `knntools embed`")
    parts = [_read_part(Path(p)) for p in paths]
    ref = parts[0]
    rname = ref.info.path
    for part in parts[1:]:
        name = part.info.path
        for key in IDENTITY_ATTRS:
            a, b = ref.attrs.get(key), part.attrs.get(key)
            if a != b:
                raise InputError(f"{name}: {key} is {b!r} but {rname} has {a!r}; expected parts of one split of one model")
        if set(part.samples) != set(ref.samples):
            raise InputError(f"{name}: datasets {sorted(part.samples)} differ from {rname}'s {sorted(ref.samples)}; expected the same datasets")
        for ds, (dtype, tail, _) in ref.samples.items():
            pd, pt, _ = part.samples[ds]
            if pd != dtype or pt != tail:
                raise InputError(f"{name}: {ds} is {pd} x {list(pt)} per row but {rname} has {dtype} x {list(tail)}; expected the same dtype and width")
        for ds, (arr, _) in ref.other.items():
            if ds not in part.other or not np.array_equal(part.other[ds][0], arr):
                raise InputError(f"{name}: dataset '{ds}' differs from {rname}'s; expected identical non-sample datasets")
        if part.info.total_rows != ref.info.total_rows:
            raise InputError(f"{name}: total_rows {part.info.total_rows} but {rname} has {ref.info.total_rows}; expected parts of one split")
    seen: dict[str, Path] = {}
    for part in parts:
        for key in (part.info.uuid, str(part.info.path.resolve())):
            if key in seen:
                raise InputError(f"{part.info.path}: duplicate of {seen[key]} (shard {part.info.shard_index}/{part.info.shard_count}); expected each part once")
        seen[part.info.uuid] = seen[str(part.info.path.resolve())] = part.info.path
    parts.sort(key=lambda p: (p.info.row_start, p.info.row_stop))
    total = ref.info.total_rows
    count = ref.info.shard_count

    def missing(a: int, b: int) -> str:
        idx = [i for i in range(count) if a <= shard_rows(total, i, count)[0] < b]
        return (f"missing shard {', '.join(f'{i}/{count}' for i in idx)} (rows [{a}, {b}) of {total})" if idx
                else f"rows [{a}, {b}) of {total} are missing")

    pos = 0
    prev: _Part | None = None
    for part in parts:
        i = part.info
        label = f"{i.path} (shard {i.shard_index}/{i.shard_count}) holds rows [{i.row_start}, {i.row_stop})"
        if i.row_start < pos:
            raise InputError(f"{label}, overlapping {prev.info.path if prev else '?'}'s rows up to {pos}; expected non-overlapping parts")
        if i.row_start > pos:
            raise InputError(f"{missing(pos, i.row_start)} before {i.path}; expected a part for every shard, starting at row {pos}")
        pos, prev = i.row_stop, part
    if pos != total:
        raise InputError(f"{missing(pos, total)} after {prev.info.path if prev else '?'}; expected a part for every shard, covering all {total} rows")
    counts = {p.info.shard_count for p in parts}
    if len(counts) > 1 or len(parts) != ref.info.shard_count:
        bad = next((p for p in parts if p.info.shard_count != ref.info.shard_count), parts[-1])
        raise InputError(f"{bad.info.path}: shard {bad.info.shard_index}/{bad.info.shard_count} among {len(parts)} parts of shard_count "
                         f"{sorted(counts)}; expected all N shards of one I/N split")
    return parts


def _set_attrs(parts: list[_Part]) -> dict[str, Any]:
    """Root attributes of a merged file or set: the parts' common ones plus the recomputed accuracy."""
    attrs = {k: v for k, v in parts[0].attrs.items() if k not in _NOT_COPIED}
    accs = [p.attrs.get("accuracy") for p in parts]
    if all(isinstance(a, (int, float)) for a in accs):
        total = sum(p.info.n_rows for p in parts)
        correct = sum(round(float(a) * p.info.n_rows) for a, p in zip(accs, parts))
        if total:
            attrs["accuracy"] = correct / total
    return attrs


def write_merged(path: str | os.PathLike, parts: list[_Part], *, force: bool = False, chunk_bytes: int = MERGE_CHUNK_BYTES) -> str:
    """Copy checked parts (:func:`check_parts`) into one plain file, streaming; returns its uuid.

    Memory is bounded by ``chunk_bytes`` (default 64 MiB) of one dataset at a time. The output is a
    new file (new uuid, ``parents`` = the parts' uuids) with the parts' common root attributes and
    no shard attributes; its arrays are the parts' rows in order, bit for bit.

    Raises
    ------
    InputError
        The output exists without ``force`` (:func:`knntools.io.h5.create`).
    """
    import math

    import h5py

    from knntools.io.h5 import create, create_stream, write_array

    ref = parts[0]
    total = ref.info.total_rows
    seed = ref.attrs.get("seed")
    with create(path, ref.attrs["kind"], parents=[p.info.uuid for p in parts], seed=seed if isinstance(seed, int) and seed >= 0 else None,
                attrs=_set_attrs(parts), force=force) as f:
        for name, (dtype, tail, ds_attrs) in ref.samples.items():
            out = create_stream(f, name, (total, *tail), dtype, attrs={k: v for k, v in ds_attrs.items() if k != "axis0"})
            row_bytes = max(1, dtype.itemsize * int(math.prod(tail)))
            step = max(1, chunk_bytes // row_bytes)
            for part in parts:
                with h5py.File(part.info.path, "r") as pf:
                    src = pf[name]
                    for a in range(0, part.info.n_rows, step):
                        b = min(part.info.n_rows, a + step)
                        out[part.info.row_start + a : part.info.row_start + b] = src[a:b]
        for name, (arr, ds_attrs) in ref.other.items():
            write_array(f, name, arr, per_sample=False, attrs=ds_attrs)
        return str(f.attrs["uuid"])


def write_virtual_set(path: str | os.PathLike, parts: list[_Part], *, force: bool = False, parents: list[str] | None = None,
                      extra_attrs: dict[str, Any] | None = None) -> str:
    """Write a set: a file whose datasets are HDF5 virtual datasets over checked parts; returns its uuid.

    Nothing is copied. Sources are recorded by paths relative to the set's folder (HDF5 looks for
    a relative source in the virtual file's folder first), so a folder holding the set and its
    parts can be moved; the root attribute ``parts`` lists them (:func:`set_parts`). Missing
    sources would read as fill values (NaN for floats, -1 for integers), which is why
    :class:`knntools.io.h5.KFile` checks the parts whenever it opens a set.

    Parameters
    ----------
    path : path-like
        Destination (atomic; refused if it exists unless ``force``).
    parts : list
        From :func:`check_parts`, in row order.
    parents : list of str, optional
        Provenance parents (default: the parts' uuids).
    extra_attrs : dict, optional
        More root attributes.

    Raises
    ------
    InputError
        The output exists without ``force`` or its folder is missing.
    """
    import h5py
    import numpy as np

    from knntools.io.h5 import create, set_attrs, write_array

    ref = parts[0]
    total = ref.info.total_rows
    dest_dir = Path(os.path.abspath(Path(path).parent))
    records = []
    for p in parts:
        rel = os.path.relpath(os.path.abspath(p.info.path), dest_dir)
        records.append({"path": rel, "uuid": p.info.uuid, **p.info.as_attrs()})
    attrs = {**_set_attrs(parts), PARTS_ATTR: records, **(extra_attrs or {})}
    seed = ref.attrs.get("seed")
    with create(path, ref.attrs["kind"], parents=parents if parents is not None else [p.info.uuid for p in parts],
                seed=seed if isinstance(seed, int) and seed >= 0 else None, attrs=attrs, force=force) as f:
        for name, (dtype, tail, ds_attrs) in ref.samples.items():
            layout = h5py.VirtualLayout(shape=(total, *tail), dtype=dtype)
            for p, rec in zip(parts, records):
                if p.info.n_rows:
                    layout[p.info.row_start : p.info.row_stop] = h5py.VirtualSource(rec["path"], name, shape=(p.info.n_rows, *tail), dtype=dtype)
            fill = np.nan if np.dtype(dtype).kind == "f" else (-1 if np.dtype(dtype).kind == "i" else 0)
            ds = f.create_virtual_dataset(name, layout, fillvalue=fill)
            set_attrs(ds, ds_attrs)
        for name, (arr, ds_attrs) in ref.other.items():
            write_array(f, name, arr, per_sample=False, attrs=ds_attrs)
        return str(f.attrs["uuid"])
