"""The knntools HDF5 file format, version 1 — the only module that knows dataset paths and attributes.

Every knntools file is an HDF5 file whose root attributes identify it::

    format          "knntools"
    format_version  1                      (int)
    kind            labels | activations | features | predictions | neighbors | table
    uuid            a new UUID4 for every file written
    parents         JSON list of the uuids of the input files it was made from
    knntools_version
    created         ISO-8601 UTC time, e.g. "2026-11-21T20:30:00Z"
    command         JSON list: the argv that made it
    seed            int, or -1 when the command used no randomness / no seed

Per-sample datasets carry the attribute ``axis0 = "samples"``; a reader checks that they all have
the same length (axis 0). Labels are int64 in ``[0, n_classes)`` where ``n_classes = len(classes)``
and ``classes`` is a JSON list of class names in the root attributes. Float datasets must be finite.
Lists and dicts in attributes are stored as JSON strings and decoded on read.

Writing is atomic: :func:`create` writes ``.<name>.<pid>@<host>.<hex>.partial`` in the destination
folder and renames it over the destination only when the ``with`` block finishes without an
exception (including ``KeyboardInterrupt``); an existing destination is refused unless
``force=True``. A temporary file left by a killed run is removed by the next run that writes into
the same folder (:func:`remove_stale_partials`), and readers refuse ``.partial`` files.
Chunked datasets carry HDF5's Fletcher-32 checksum filter, so a file damaged in a copy is refused
when read (exit 2 naming the file) instead of giving wrong numbers.
The README's "File format" section documents every kind's datasets.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid as _uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import h5py
import numpy as np

from knntools import __version__
from knntools.errors import InputError, SchemaError
from knntools.layerspec import resolve_layer_spec, split_spec, unknown_layer
from knntools.utils import utc_now  # noqa: F401  (moved to knntools.utils; re-exported)

FORMAT = "knntools"
FORMAT_VERSION = 1
KINDS = ("labels", "activations", "features", "predictions", "neighbors", "table")

#: Which command writes each kind (used in error hints).
PRODUCERS = {
    "labels": "knntools noise",
    "activations": "knntools embed",
    "features": "knntools features / knntools oversample",
    "predictions": "knntools dknn / lasenn / distill-knet / seq2knn",
    "neighbors": "knntools index --query",
    "table": "knntools probe",
}

#: Target size of one HDF5 chunk in bytes (row-chunked datasets).
CHUNK_BYTES = 1 << 20

_COMMAND_OVERRIDE: list[str] | None = None


def set_command_line(argv: Sequence[str] | None) -> None:
    """Record the command line written to the ``command`` attribute (the CLI calls this)."""
    global _COMMAND_OVERRIDE
    _COMMAND_OVERRIDE = None if argv is None else [str(a) for a in argv]


def command_line() -> list[str]:
    """The command line recorded in provenance: the one :func:`set_command_line` set, else ``["python", *sys.argv]``."""
    return list(_COMMAND_OVERRIDE) if _COMMAND_OVERRIDE is not None else ["python", *sys.argv]


def new_uuid() -> str:
    """Return a new random UUID4 string (file identity)."""
    return str(_uuid.uuid4())


def provenance_attrs(kind: str, *, parents: Iterable[str] = (), seed: int | None = None) -> dict[str, Any]:
    """The root attributes every knntools file carries (see module docstring).

    Raises
    ------
    ValueError
        If ``kind`` is not one of :data:`KINDS` (a programming error, not user input).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown file kind {kind!r}; expected one of {KINDS}")
    argv = _COMMAND_OVERRIDE if _COMMAND_OVERRIDE is not None else ["python", *sys.argv]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "uuid": new_uuid(),
        "parents": json.dumps([p for p in parents if p]),
        "knntools_version": __version__,
        "created": utc_now(),
        "command": json.dumps(list(argv)),
        "seed": -1 if seed is None else int(seed),
    }


def _encode_attr(value: Any) -> Any:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    if value is None:
        return "null"
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{" and value[-1:] in "]}":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, str) and value == "null":
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def set_attrs(obj: h5py.HLObject, attrs: dict[str, Any] | None) -> None:
    """Write ``attrs`` onto an HDF5 object, JSON-encoding lists/dicts and ``None``."""
    for key, value in (attrs or {}).items():
        obj.attrs[key] = _encode_attr(value)


def read_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    """Read all attributes of an HDF5 object, decoding JSON lists/dicts."""
    return {k: _decode_attr(v) for k, v in obj.attrs.items()}


# --------------------------------------------------------------------------------------------
# Atomic outputs: moved to knntools.io.atomic (re-exported here for old imports)
# --------------------------------------------------------------------------------------------


from knntools.io.atomic import (  # noqa: E402,F401
    _ACTIVE_TEMPS,
    _PARTIAL_RE,
    _WRITE_ERRNOS,
    _host,
    _pid_alive,
    atomic_path,
    check_output_path,
    partial_name,
    remove_stale_partials,
)


@contextlib.contextmanager
def create(
    path: str | os.PathLike,
    kind: str,
    *,
    parents: Iterable[str] = (),
    seed: int | None = None,
    attrs: dict[str, Any] | None = None,
    force: bool = False,
) -> Iterator[h5py.File]:
    """Create a knntools HDF5 file atomically.

    Parameters
    ----------
    path : path-like
        Destination. Refused if it exists, unless ``force``.
    kind : str
        One of :data:`KINDS`.
    parents : iterable of str
        UUIDs of the input files (provenance).
    seed : int or None
        Seed of the run (``-1`` recorded when None).
    attrs : dict
        Extra root attributes (lists/dicts JSON-encoded).
    force : bool, default False
        Allow replacing an existing file (still atomically).

    Yields
    ------
    h5py.File
        Open for writing, provenance attributes already set (``f.attrs['uuid']`` is the new uuid).

    Raises
    ------
    InputError
        If the destination exists without ``force`` or its folder is missing.
    """
    with atomic_path(path, force=force) as tmp:
        f = h5py.File(tmp, "w", track_order=True)
        try:
            set_attrs(f, provenance_attrs(kind, parents=parents, seed=seed))
            set_attrs(f, attrs)
            yield f
        finally:
            f.close()


def row_chunks(shape: Sequence[int], dtype: Any) -> tuple[int, ...] | None:
    """Row-wise chunk shape of about :data:`CHUNK_BYTES` for a dataset of ``shape`` and ``dtype``."""
    if len(shape) == 0 or shape[0] == 0:
        return None
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize if len(shape) > 1 else np.dtype(dtype).itemsize
    rows = int(max(1, min(shape[0], CHUNK_BYTES // max(1, row_bytes))))
    return (rows, *shape[1:])


def write_array(
    f: h5py.Group,
    name: str,
    data: Any,
    *,
    per_sample: bool = True,
    attrs: dict[str, Any] | None = None,
    dtype: Any = None,
) -> h5py.Dataset:
    """Write ``data`` as a row-chunked, uncompressed dataset ``name`` (intermediate groups created).

    Parameters
    ----------
    per_sample : bool, default True
        Mark axis 0 as the sample axis (``axis0="samples"``) so readers check its length.
    """
    arr = np.asarray(data, dtype=dtype) if dtype is not None else np.asarray(data)
    if arr.dtype.kind == "U":
        ds = f.create_dataset(name, data=arr.astype(object), dtype=h5py.string_dtype())
    else:
        chunks = row_chunks(arr.shape, arr.dtype) if arr.ndim else None
        ds = f.create_dataset(name, data=arr, chunks=chunks, fletcher32=chunks is not None)
    if per_sample:
        ds.attrs["axis0"] = "samples"
    set_attrs(ds, attrs)
    return ds


def create_stream(
    f: h5py.Group, name: str, shape: Sequence[int], dtype: Any, *, attrs: dict[str, Any] | None = None
) -> h5py.Dataset:
    """Create an empty row-chunked per-sample dataset to be filled in batches (streaming writes)."""
    chunks = row_chunks(shape, dtype)
    ds = f.create_dataset(name, shape=tuple(shape), dtype=dtype, chunks=chunks, fletcher32=chunks is not None)
    ds.attrs["axis0"] = "samples"
    set_attrs(ds, attrs)
    return ds


# --------------------------------------------------------------------------------------------
# Reading and validation
# --------------------------------------------------------------------------------------------


def check_finite(arr: np.ndarray, where: str) -> np.ndarray:
    """Raise :class:`InputError` naming ``where`` and the first bad row if ``arr`` has NaN/Inf."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr.reshape(len(arr), -1) if arr.ndim > 1 else arr))[0]
        raise InputError(f"{where}: non-finite value (NaN or Inf) at row {int(bad[0])}; expected finite values")
    return arr


class KFile:
    """A validated, read-only knntools HDF5 file.

    Parameters
    ----------
    path : path-like
    kind : str or tuple of str, optional
        Accepted kind(s); any other is refused.

    Attributes
    ----------
    path : Path
    kind : str
    uuid : str
    attrs : dict   root attributes, JSON decoded
    classes : list of str   class names ("" list if the file has none)
    n_samples : int   common length of the per-sample datasets (0 if none)
    parts : list of ShardInfo   the parts of a sharded set, in row order ([] for a plain file)

    A *set* (``knntools merge --virtual``, ``embed`` under torchrun; docs/format.md, "Shards and
    sets") opens like one file: its datasets are HDF5 virtual datasets over the part files, read
    through transparently, in row order. Opening it checks that every part exists and is the file
    the set was made from, because HDF5 would silently read a missing part as fill values.

    Raises
    ------
    InputError
        Missing file; a set whose part file is missing or was replaced (the message names the part).
    SchemaError
        Not HDF5, not a knntools file, wrong kind, newer format version, or per-sample datasets
        of different lengths.
    """

    def __init__(self, path: str | os.PathLike, kind: str | Sequence[str] | None = None):
        self.path = Path(path)
        self._layers: list[str] | None = None
        self._resolved: dict[tuple, list[str]] = {}
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a directory; expected a knntools HDF5 file")
        if self.path.name.endswith(".partial"):
            raise SchemaError(f"{self.path}: an unfinished temporary output (a run writing it stopped or is still running); expected a finished knntools file")
        try:
            self.f = h5py.File(self.path, "r")
        except OSError as exc:
            raise SchemaError(f"{self.path}: not a readable HDF5 file ({_short(exc)}); expected a knntools HDF5 file") from None
        try:
            with self._guard("file structure"):
                self._validate(kind)
        except BaseException:
            self.f.close()
            raise

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn HDF5 read failures (damaged or truncated file, checksum mismatch) into a
        :class:`SchemaError` naming the file and ``what`` was being read."""
        try:
            yield
        except (OSError, RuntimeError, KeyError) as exc:
            raise SchemaError(f"{self.path}: {what}: cannot be read ({_short(exc)}); the file is damaged or truncated; "
                              "expected a complete knntools file (copy or re-create it)") from None

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> "KFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying HDF5 file."""
        self.f.close()

    def __repr__(self) -> str:
        return f"KFile({str(self.path)!r}, kind={self.kind!r}, n_samples={self.n_samples})"

    # -- validation -----------------------------------------------------------------------
    def _validate(self, kind: str | Sequence[str] | None) -> None:
        self.attrs = read_attrs(self.f)
        if self.attrs.get("format") != FORMAT:
            raise SchemaError(f"{self.path}: not a knntools file (root attribute 'format' is {self.attrs.get('format')!r}; expected 'knntools')")
        version = self.attrs.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise SchemaError(f"{self.path}: attribute 'format_version' is {version!r}; expected a positive integer")
        if version > FORMAT_VERSION:
            raise SchemaError(f"{self.path}: format_version {version} is newer than this knntools ({__version__}) reads (<= {FORMAT_VERSION}); upgrade knntools")
        self.kind = self.attrs.get("kind")
        if self.kind not in KINDS:
            raise SchemaError(f"{self.path}: attribute 'kind' is {self.kind!r}; expected one of {', '.join(KINDS)}")
        if kind is not None:
            accepted = (kind,) if isinstance(kind, str) else tuple(kind)
            if self.kind not in accepted:
                want = " or ".join(f"'{k}'" for k in accepted)
                hint = "; ".join(f"{k} files come from `{PRODUCERS[k]}`" for k in accepted)
                raise SchemaError(f"{self.path}: file kind is '{self.kind}'; expected {want} ({hint})")
        self.uuid = str(self.attrs.get("uuid", ""))
        classes = self.attrs.get("classes")
        self.classes = [str(c) for c in classes] if isinstance(classes, list) else []
        lengths: dict[str, int] = {}

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and obj.attrs.get("axis0") == "samples":
                lengths[name] = obj.shape[0]

        self.f.visititems(visit)
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{k}: {v}" for k, v in sorted(lengths.items()))
            raise SchemaError(f"{self.path}: per-sample datasets disagree on their length ({detail}); expected one length")
        self.n_samples = next(iter(lengths.values()), 0)
        from knntools.io.shards import check_set_parts, parts_from_attrs

        self.parts = sorted(parts_from_attrs(self.path, self.attrs), key=lambda s: s.row_start)
        if self.parts:
            check_set_parts(self.path, self.parts)
            covered = sum(p.n_rows for p in self.parts)
            if covered != self.n_samples:
                raise SchemaError(f"{self.path}: its parts hold {covered} rows but its datasets have {self.n_samples}; expected the same")

    # -- access ---------------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def is_set(self) -> bool:
        """True for a sharded set (virtual datasets over part files)."""
        return bool(self.parts)

    @property
    def parents(self) -> list[str]:
        """UUIDs of the files this one was made from."""
        p = self.attrs.get("parents") or []
        return [str(x) for x in p]

    def has(self, name: str) -> bool:
        """Whether dataset ``name`` exists."""
        return name in self.f and isinstance(self.f[name], h5py.Dataset)

    def dataset(self, name: str) -> h5py.Dataset:
        """Return the (lazy) dataset ``name``.

        Raises
        ------
        SchemaError
            If it is missing (the message names the file, the field and the producing command).
        """
        if not self.has(name):
            raise SchemaError(f"{self.path}: dataset '{name}' not found in this {self.kind} file (written by `{PRODUCERS[self.kind]}`)")
        return self.f[name]

    def read(self, name: str, rows: Any = None, *, dtype: Any = None, finite: bool = True) -> np.ndarray:
        """Read dataset ``name`` (optionally only ``rows``: slice or sorted index array) into memory.

        Float data is checked to be finite (``finite=True``); ``dtype`` converts on the way.
        """
        ds = self.dataset(name)
        with self._guard(name):
            if rows is None:
                arr = ds[()]
            elif isinstance(rows, slice):
                arr = ds[rows]
            else:
                rows = np.asarray(rows)
                order = np.argsort(rows, kind="stable")
                sorted_rows = rows[order]
                uniq, inverse = np.unique(sorted_rows, return_inverse=True)
                block = ds[uniq]
                arr = np.empty((len(rows), *block.shape[1:]), dtype=block.dtype)
                arr[order] = block[inverse]
        arr = np.asarray(arr)
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
        if finite:
            check_finite(arr, f"{self.path}: {name}")
        return arr

    def iter_rows(self, name: str, chunk_rows: int = 8192, *, dtype: Any = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` row blocks of dataset ``name`` (finite-checked), never the whole array."""
        ds = self.dataset(name)
        for start in range(0, ds.shape[0], chunk_rows):
            with self._guard(name):
                block = np.asarray(ds[start : start + chunk_rows])
            if dtype is not None:
                block = block.astype(dtype, copy=False)
            check_finite(block, f"{self.path}: {name}")
            yield start, block

    def read_labels(self, name: str = "labels") -> np.ndarray:
        """Read an int label dataset, validated to lie in ``[0, n_classes)``.

        Returns
        -------
        ndarray of shape (n_samples,), int64

        Raises
        ------
        SchemaError
            Non-integer dtype or labels out of range.
        """
        ds = self.dataset(name)
        if ds.dtype.kind not in "iu":
            raise SchemaError(f"{self.path}: {name}: dtype {ds.dtype}; expected integer labels")
        with self._guard(name):
            y = np.asarray(ds[()], dtype=np.int64)
        c = self.n_classes
        if y.size and (y.min() < 0 or (c and y.max() >= c)):
            raise SchemaError(f"{self.path}: {name}: labels span [{y.min()}, {y.max()}]; expected integers in [0, {c})")
        return y

    # -- ids and ground truth ---------------------------------------------------------------
    def ids(self) -> np.ndarray:
        """Sample ids: the ``ids`` dataset when stored, else ``arange(n_samples)``.

        Returns
        -------
        ndarray of shape (n_samples,), int64
        """
        if self.has("ids"):
            return self.read("ids", dtype=np.int64)
        return np.arange(self.n_samples, dtype=np.int64)

    @property
    def truth_name(self) -> str:
        """Dataset holding the ground-truth labels: ``labels_clean`` when stored, else ``labels``."""
        return "labels_clean" if self.has("labels_clean") else "labels"

    def truth_labels(self, rows: Any = None) -> np.ndarray:
        """Ground-truth labels (:attr:`truth_name`), validated like :meth:`read_labels`.

        Parameters
        ----------
        rows : index array or slice, optional
            Only these rows (default all).

        Returns
        -------
        ndarray of shape (n_samples,) or (len(rows),), int64

        Raises
        ------
        SchemaError
            Neither ``labels_clean`` nor ``labels`` stored, non-integer dtype or labels out of range.
        """
        y = self.read_labels(self.truth_name)
        return y if rows is None else y[rows]

    # -- activations / features layers ----------------------------------------------------
    @property
    def layers(self) -> list[str]:
        """Searchable layers in network order.

        ``activations``: the hidden layers (``layer_order``) then ``"logits"`` if stored;
        ``features``: ``["features"]``.
        """
        if self._layers is None:
            if self.kind == "features":
                self._layers = ["features"]
            else:
                names = [str(n) for n in (self.attrs.get("layer_order") or []) if f"layers/{n}" in self.f]
                if self.has("logits"):
                    names.append("logits")
                self._layers = names
        return list(self._layers)

    @property
    def penultimate(self) -> str:
        """Name of the penultimate layer (the input of the final classifier layer)."""
        if self.kind == "features":
            return "features"
        name = self.attrs.get("penultimate")
        hidden = [n for n in self.layers if n != "logits"]
        if isinstance(name, str) and name in hidden:
            return name
        if not hidden:
            raise SchemaError(f"{self.path}: no hidden layers stored; expected at least one dataset under layers/ (embed at least the penultimate layer)")
        return hidden[-1]

    def layer_path(self, name: str) -> str:
        """HDF5 dataset path of layer ``name`` (``logits``, ``features`` or ``layers/<name>``)."""
        if name == "penultimate":
            name = self.penultimate
        if self.kind == "features" and name == "features":
            return "features"
        if name == "logits" and self.has("logits"):
            return "logits"
        if f"layers/{name}" in self.f:
            return f"layers/{name}"
        raise unknown_layer(str(self.path), name, self.layers)

    def resolve_layers(self, spec: str | Sequence[str], *, single: bool = False, extra: Sequence[str] = ()) -> list[str]:
        """Turn a layer spec into concrete layer names (:func:`knntools.layerspec.resolve_layer_spec`).

        ``spec`` is ``"all"`` (every hidden layer then logits), ``"hidden"`` (hidden layers only),
        ``"penultimate"``, or a comma-separated list / sequence of names (``penultimate`` and
        ``logits`` allowed among them). ``single=True`` requires exactly one layer (``--layer``);
        ``extra`` names are passed through unchecked. Each spec is resolved once per file.

        Raises
        ------
        InputError
            An unknown layer (the message names the file and lists the available ones).
        """
        key = (tuple(split_spec(spec)), single, tuple(extra))
        if key not in self._resolved:
            stored = [n for n in (self.f["layers"] if isinstance(self.f.get("layers"), h5py.Group) else ()) if n not in self.layers]
            self._resolved[key] = resolve_layer_spec(spec, self.layers, penultimate=lambda: self.penultimate, logits="logits",
                                                     source=str(self.path), single=single, extra=[*extra, *stored])
        return list(self._resolved[key])

    def layer(self, name: str) -> h5py.Dataset:
        """Lazy dataset of layer ``name`` (shape [n_samples, n_features])."""
        return self.f[self.layer_path(name)]

    def layer_dim(self, name: str) -> int:
        """Number of features of layer ``name``."""
        ds = self.layer(name)
        return int(np.prod(ds.shape[1:], dtype=np.int64))

    def read_layer(self, name: str, rows: Any = None, *, dtype: Any = np.float32) -> np.ndarray:
        """Read layer ``name`` as a finite float32 array of shape (n_rows, n_features)."""
        arr = self.read(self.layer_path(name), rows, dtype=dtype)
        return arr.reshape(len(arr), -1)

    def read_layer_rows(self, name: str, rows: Any) -> np.ndarray:
        """Rows ``rows`` (sorted int array) of layer ``name`` as finite float32 [len(rows), d], read in row blocks.

        Streams the layer in blocks of about 64 MiB and keeps only the wanted rows (h5py fancy
        indexing with thousands of indices is slow, and reading the whole layer first would double
        the memory); contiguous rows are one slice.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):  # contiguous: one slice
            return self.read_layer(name, slice(int(rows[0]), int(rows[-1]) + 1))
        d = self.layer_dim(name)
        out = np.empty((len(rows), d), np.float32)
        step = max(256, (64 << 20) // (4 * max(1, d)))
        pos = 0
        for start, block in self.iter_rows(self.layer_path(name), step, dtype=np.float32):
            sel = rows[(rows >= start) & (rows < start + len(block))]
            out[pos : pos + len(sel)] = block.reshape(len(block), -1)[sel - start]
            pos += len(sel)
        return out


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


def open_file(path: str | os.PathLike, kind: str | Sequence[str] | None = None) -> KFile:
    """Open and validate a knntools file; see :class:`KFile`."""
    return KFile(path, kind)


def check_same_source(a: KFile, b: KFile, layers: Sequence[str]) -> None:
    """Check that two activation files come from the same model and agree on classes and layer widths.

    Raises
    ------
    InputError
        Different ``model_uuid``, different class lists, or a layer whose width differs.
    """
    ma, mb = a.attrs.get("model_uuid"), b.attrs.get("model_uuid")
    if ma and mb and ma != mb:
        raise InputError(f"{b.path}: model_uuid {mb} differs from {a.path}'s {ma}; expected activations of the same model")
    if a.classes and b.classes and a.classes != b.classes:
        raise InputError(f"{b.path}: classes {b.classes} differ from {a.path}'s {a.classes}; expected the same classes")
    for name in layers:
        da, db = a.layer_dim(name), b.layer_dim(name)
        if da != db:
            raise InputError(f"{b.path}: layer '{name}' has {db} features but {a.path} has {da}; expected the same width")
