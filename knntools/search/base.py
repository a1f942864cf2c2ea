"""The search contract every backend follows, and the validation shared by all of them.

Contract
--------
``index = make_index(backend, metric="l2" | "cosine" | "ip", **params)``

``index.fit(X)`` -> ``index``
    ``X`` is an array of shape ``(n_samples, n_features)``, float32 or float16 (other real dtypes
    are converted to float32; trailing axes beyond the second are flattened), or an h5py dataset,
    which backends read in row blocks instead of loading it whole. Every row must be finite.
    ``X`` is referenced, not copied, where the backend can avoid a copy: do not modify it after
    ``fit``.

``distances, indices = index.kneighbors(Q, k)``
    ``Q`` of shape ``(n_queries, n_features)``; ``distances`` float32 ``(n_queries, k)`` sorted
    ascending in the metric's own units; ``indices`` int64 ``(n_queries, k)``, rows of ``X``.

``index.kneighbors(None, k)``
    The fitted base queried against itself; each row's *own* row is excluded by identity (an
    exact duplicate of a row elsewhere in ``X`` is still returned, at distance 0).

``index.save(path, metadata=...)`` / ``load_index(path)``
    The backend's payload at ``path`` plus a JSON sidecar ``<path>.json`` (see :func:`header_path`)
    recording backend, metric, parameters, ``n_samples``, ``n_features`` and caller metadata such
    as the source file's uuid and layer.

Units
-----
``l2``: Euclidean distance ``||q - x||`` (not squared). ``cosine``: ``1 - cos(q, x)`` in
``[0, 2]`` (a zero vector has cosine 0 with everything). ``ip``: ``-<q, x>``, the negative inner
product, so that ascending order still lists the most similar first; it can be negative.

Errors
------
Bad input raises :class:`knntools.errors.InputError` (CLI exit 2) with a one-line message: ``k``
larger than the number of indexed rows (``n_samples - 1`` when the base is queried against itself),
a query dimension that differs from the index's, non-finite rows, an unknown metric or parameter.
"""

from __future__ import annotations

import abc
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from knntools.errors import InputError, KnnToolsError
from knntools.search.names import BACKEND_NAMES, DISTANCE_UNITS, METRICS

#: Identifies an index sidecar file.
INDEX_FORMAT = "knntools-index"
INDEX_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def check_metric(metric: str, supported: tuple[str, ...] = METRICS) -> str:
    """Return ``metric`` if supported.

    Raises
    ------
    InputError
        Unknown metric (the message lists the supported ones).
    """
    if metric not in supported:
        raise InputError(f"unknown metric {metric!r}; expected one of {', '.join(supported)}")
    return metric


def check_k(k: Any, n_candidates: int, *, exclude_self: bool = False, source: str | None = None, param: str | None = None) -> int:
    """THE bound rule for a number of neighbours k, used by every method and command (issue 18).

    Rule: ``1 <= k <= m`` where ``m`` is the number of candidate rows: ``n_candidates``, or
    ``n_candidates - 1`` when each query is a row of the base and its own row is excluded
    (``exclude_self``). Every bound failure gives the same one-line message::

        [SOURCE: ]k=K exceeds the M candidate rows (N rows[, each row's own row excluded]); expected 1 <= k <= M

    Parameters
    ----------
    k : int
        Requested neighbours, ``>= 1``.
    n_candidates : int
        Rows that can be neighbours (the indexed / training rows).
    exclude_self : bool, default False
        The base is queried against itself, so only ``n_candidates - 1`` rows are candidates.
    source : str, optional
        What the rows are (e.g. the training file), put in front of the message.

    Returns
    -------
    int
        ``k`` as a Python int.

    Raises
    ------
    InputError
        ``k`` not a positive integer, or more neighbours than candidate rows.
    """
    prefix = f"{source}: " if source else ""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"{prefix}k must be a positive integer (got {k!r})", param=param)
    k, n = int(k), int(n_candidates)
    m = n - 1 if exclude_self else n
    if k > m:
        why = ", each row's own row excluded" if exclude_self else ""
        raise InputError(f"{prefix}k={k} exceeds the {max(m, 0)} candidate rows ({n} rows{why}); expected 1 <= k <= {max(m, 0)}", param=param)
    return k


def check_positive_int(name: str, value: Any, *, minimum: int = 1, optional: bool = False) -> int | None:
    """Validate an integer parameter ``>= minimum`` (``None`` allowed when ``optional``).

    Raises
    ------
    InputError
        Not an integer or too small.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum} (got {value!r})")
    return int(value)


def source_name(X: Any, default: str) -> str:
    """A name for ``X`` in messages: ``file.h5: layers/fc1`` for an h5py dataset, else ``default``."""
    file = getattr(X, "file", None)
    name = getattr(X, "name", None)
    if file is not None and isinstance(name, str):
        return f"{getattr(file, 'filename', '?')}: {name.lstrip('/')}"
    return default


def _damaged(name: str, exc: OSError) -> InputError:
    """The one-line error for an HDF5 dataset that cannot be read (exit 2, names file and dataset)."""
    from knntools.errors import SchemaError

    first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
    return SchemaError(f"{name}: cannot be read ({first}); the file is damaged or truncated; expected a complete knntools file (copy or re-create it)")


def check_finite_rows(block: np.ndarray, start: int, name: str) -> None:
    """Raise :class:`InputError` naming the first row of ``block`` (offset ``start``) with NaN/Inf.

    ``block`` is a 2-D float array; the row number reported is ``start`` plus the row in ``block``.
    """
    finite = np.isfinite(block)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise InputError(f"{name}: non-finite value (NaN or Inf) at row {start + row}; expected finite values")


def is_h5_dataset(X: Any) -> bool:
    """Whether ``X`` is an h5py dataset (without importing h5py when it is not loaded)."""
    return type(X).__module__.startswith("h5py") and hasattr(X, "read_direct")


def as_2d_array(X: Any, name: str, *, allow_float16: bool = True) -> np.ndarray:
    """Return ``X`` as a 2-D float32 (or float16) array, flattening trailing axes.

    Arrays that already are float32 (or float16) are returned without a copy; other real dtypes
    are converted to float32. h5py datasets are read into memory.

    Raises
    ------
    InputError
        Fewer than 2 dimensions, or a non-real dtype (complex, object, strings).
    """
    try:
        arr = np.asarray(X[()] if is_h5_dataset(X) else X)
    except OSError as exc:  # damaged chunk (Fletcher-32 mismatch) or truncated file
        raise _damaged(source_name(X, name), exc) from None
    if arr.ndim < 2:
        raise InputError(f"{name}: expected a 2-D array (n_samples, n_features); got shape {arr.shape}")
    if arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.dtype == np.float32 or (allow_float16 and arr.dtype == np.float16):
        return arr
    if arr.dtype.kind not in "fiub":
        raise InputError(f"{name}: dtype {arr.dtype}; expected real numbers (float32 or float16)")
    return arr.astype(np.float32)


class RowSource:
    """Uniform row-block access to an in-memory array or an h5py dataset.

    Parameters
    ----------
    X : ndarray or h5py.Dataset
        Shape ``(n_samples, ...)``; trailing axes are flattened to ``n_features``.
    name : str
        Used in error messages.

    Attributes
    ----------
    n_samples, n_features : int
    dtype : numpy dtype of the stored values
    in_memory : bool
        True when blocks of a float32 array are returned as views (no copy).
    """

    def __init__(self, X: Any, name: str):
        self.name = source_name(X, name)
        if is_h5_dataset(X):
            if len(X.shape) < 2:
                raise InputError(f"{self.name}: expected a 2-D dataset (n_samples, n_features); got shape {X.shape}")
            if X.dtype.kind not in "fiub":
                raise InputError(f"{self.name}: dtype {X.dtype}; expected real numbers (float32 or float16)")
            self.data = X
            self.n_samples = int(X.shape[0])
            self.n_features = int(np.prod(X.shape[1:], dtype=np.int64))
            self.dtype = np.dtype(X.dtype)
            self.in_memory = False
        else:
            self.data = as_2d_array(X, self.name)
            self.n_samples, self.n_features = (int(s) for s in self.data.shape)
            self.dtype = self.data.dtype
            self.in_memory = True
        if self.n_samples == 0 or self.n_features == 0:
            raise InputError(f"{self.name}: empty array of shape {tuple(getattr(X, 'shape', ()))}; expected at least one row and one feature")

    def block(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start:stop`` as a C-contiguous float32 array ``(stop - start, n_features)``.

        A view when the source is an in-memory C-contiguous float32 array; otherwise the rows are
        converted into ``out`` (a float32 buffer with at least ``stop - start`` rows) when given.
        """
        m = stop - start
        if self.in_memory:
            rows = self.data[start:stop]
            if rows.dtype == np.float32 and rows.flags.c_contiguous:
                return rows
            dest = out[:m] if out is not None else np.empty((m, self.n_features), np.float32)
            np.copyto(dest, rows, casting="unsafe")
            return dest
        if not self.data.id.valid:
            raise KnnToolsError(f"{self.name}: the HDF5 file was closed; keep it open while an index fitted on it is searched")
        try:
            if out is not None and self.dtype == np.float32 and len(self.data.shape) == 2:
                # straight into the caller's buffer: no fresh 100s-of-MB array to fault in, no second copy
                dest = out[:m]
                self.data.read_direct(dest, source_sel=np.s_[start:stop])
                return dest
            rows = np.asarray(self.data[start:stop]).reshape(m, self.n_features)
        except OSError as exc:  # damaged chunk (Fletcher-32 mismatch) or truncated file
            raise _damaged(self.name, exc) from None
        if out is None:
            return rows.astype(np.float32, copy=False)
        dest = out[:m]
        np.copyto(dest, rows, casting="unsafe")
        return dest

    def blocks(self, rows_per_block: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` float32 row blocks covering all rows, finite-checked."""
        for start in range(0, self.n_samples, rows_per_block):
            block = self.block(start, min(start + rows_per_block, self.n_samples))
            check_finite_rows(block, start, self.name)
            yield start, block


def rows_per_block(n_features: int, budget_bytes: int, *, minimum: int = 256, maximum: int = 1 << 20) -> int:
    """Rows of ``n_features`` float32 values that fit ``budget_bytes`` (clipped to ``[minimum, maximum]``)."""
    return int(min(maximum, max(minimum, budget_bytes // (4 * max(1, n_features)))))


def recall_at_k(indices: np.ndarray, reference: np.ndarray) -> float:
    """Mean fraction of the reference neighbours found, per query (recall@k).

    Parameters
    ----------
    indices : ndarray of shape (n_queries, k), int
        Neighbours to score (e.g. from hnsw).
    reference : ndarray of shape (n_queries, k_ref), int
        True neighbours (e.g. from exact search); ``k = k_ref`` for the usual recall@k.

    Returns
    -------
    float in [0, 1]
    """
    indices = np.asarray(indices)
    reference = np.asarray(reference)
    if len(indices) != len(reference):
        raise ValueError(f"indices has {len(indices)} rows but reference has {len(reference)}")
    if reference.size == 0:
        return 1.0
    hits = sum(np.intersect1d(a, b, assume_unique=True).size for a, b in zip(indices, reference))
    return float(hits) / reference.size


def drop_own_rows(indices: np.ndarray, distances: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From ``k + 1`` results per query drop the query's own row, or the last result when it is absent.

    Parameters
    ----------
    indices : ndarray of shape (n_queries, k + 1), int
    distances : ndarray of shape (n_queries, k + 1)
    own : ndarray of shape (n_queries,), int
        Row of the base that each query is.

    Returns
    -------
    indices, distances : ndarrays of shape (n_queries, k), order kept
    """
    drop = indices == np.asarray(own)[:, None]
    drop[~drop.any(axis=1), -1] = True
    keep = ~drop
    k = indices.shape[1] - 1
    return indices[keep].reshape(-1, k), distances[keep].reshape(-1, k)


def header_path(path: str | os.PathLike) -> Path:
    """Path of the JSON sidecar of the index saved at ``path`` (``<path>.json``)."""
    p = Path(path)
    return p.with_name(p.name + ".json")


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------


class NeighborIndex(abc.ABC):
    """Base class of every search backend (see the module docstring for the contract).

    Subclasses set :attr:`backend`, implement :meth:`_fit`, :meth:`_search`, :meth:`_save_payload`
    and :meth:`_load_payload`, and take their parameters as keyword-only constructor arguments
    (returned by :meth:`get_params`).

    Attributes
    ----------
    metric : str
        ``"l2"``, ``"cosine"`` or ``"ip"``.
    metadata : dict
        Caller-supplied, JSON-serialisable facts saved with the index (e.g. ``source_uuid``,
        ``layer``). Set it directly or pass ``metadata=`` to :meth:`save`.
    n_samples_ : int
        Rows indexed (set by :meth:`fit`).
    n_features_ : int
        Dimension of the rows (set by :meth:`fit`).
    """

    #: Registry name of the backend.
    backend: ClassVar[str] = ""
    #: Metrics the backend supports.
    metrics: ClassVar[tuple[str, ...]] = METRICS

    def __init__(self, *, metric: str = "l2"):
        self.metric = check_metric(metric, self.metrics)
        self.metadata: dict[str, Any] = {}
        self.n_samples_: int | None = None
        self.n_features_: int | None = None

    # -- parameters ---------------------------------------------------------------------------
    @abc.abstractmethod
    def get_params(self) -> dict[str, Any]:
        """The backend's constructor parameters (JSON-serialisable), without ``metric``."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        fitted = f", n_samples_={self.n_samples_}, n_features_={self.n_features_}" if self.is_fitted else ""
        return f"{type(self).__name__}(metric={self.metric!r}, {params}{fitted})"

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :func:`load_index`) has been called."""
        return self.n_samples_ is not None

    @property
    def distance_units(self) -> str:
        """Units of the returned distances (the ``distance_units`` attribute written to files)."""
        return DISTANCE_UNITS[self.metric]

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, X: Any) -> "NeighborIndex":
        """Index the rows of ``X``.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features) or h5py.Dataset
            float32 or float16 (other real dtypes are converted to float32); all values finite.
            h5py datasets are read in row blocks.

        Returns
        -------
        self

        Raises
        ------
        InputError
            Empty, not 2-D, non-real dtype, or a row with NaN/Inf (the first bad row is named).
        """
        source = RowSource(X, "X")
        self._fit(source)
        self.n_samples_ = source.n_samples
        self.n_features_ = source.n_features
        return self

    @abc.abstractmethod
    def _fit(self, source: RowSource) -> None:
        """Build the index from ``source`` (finite-check the rows while reading them)."""

    # -- search -------------------------------------------------------------------------------
    def kneighbors(self, Q: Any = None, k: int = 1, **query_params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Find the ``k`` nearest indexed rows of each query.

        Parameters
        ----------
        Q : ndarray of shape (n_queries, n_features) or None
            Queries, float32/float16 (other real dtypes converted); finite. ``None`` queries the
            fitted base against itself and excludes each row's own row (by identity).
        k : int
            Neighbours per query; ``1 <= k <= n_samples_`` (``n_samples_ - 1`` when ``Q`` is None).
        **query_params
            Backend-specific per-call settings (hnsw: ``ef``, ``num_threads``).

        Returns
        -------
        distances : ndarray of shape (n_queries, k), float32
            Ascending, in the metric's units (see :attr:`distance_units`).
        indices : ndarray of shape (n_queries, k), int64
            Rows of the fitted ``X``.

        Raises
        ------
        InputError
            ``k`` out of range, query dimension different from the index's, non-finite query rows.
        KnnToolsError
            The index is not fitted.
        """
        if not self.is_fitted:
            raise KnnToolsError(f"{type(self).__name__} is not fitted; call fit(X) or load_index(path) first")
        k = check_k(k, self.n_samples_, exclude_self=Q is None)
        queries = None
        if Q is not None:
            queries = as_2d_array(Q, source_name(Q, "queries"))
            if queries.shape[1] != self.n_features_:
                raise InputError(f"{source_name(Q, 'queries')}: query dimension {queries.shape[1]} does not match the index dimension {self.n_features_}")
            for start in range(0, len(queries), 65536):
                check_finite_rows(queries[start : start + 65536], start, source_name(Q, "queries"))
            if len(queries) == 0:
                return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        distances, indices = self._search(queries, k, **query_params)
        return np.ascontiguousarray(distances, dtype=np.float32), np.ascontiguousarray(indices, dtype=np.int64)

    @abc.abstractmethod
    def _search(self, Q: np.ndarray | None, k: int, **query_params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Search validated queries (``None``: the base itself, own row excluded)."""

    # -- persistence --------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """The sidecar content describing this fitted index (see :func:`header_path`)."""
        from knntools import __version__
        from knntools.io.h5 import utc_now

        return {
            "format": INDEX_FORMAT,
            "format_version": INDEX_FORMAT_VERSION,
            "backend": self.backend,
            "metric": self.metric,
            "distance_units": self.distance_units,
            "params": self.get_params(),
            "n_samples": self.n_samples_,
            "n_features": self.n_features_,
            "metadata": dict(self.metadata),
            "knntools_version": __version__,
            "created": utc_now(),
        }

    def save(self, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None, force: bool = False) -> Path:
        """Save the index to ``path`` and its JSON sidecar to ``<path>.json``, atomically.

        Parameters
        ----------
        path : path-like
            Payload file (hnswlib graph for ``hnsw``, ``.npy`` rows for ``exact``).
        metadata : dict, optional
            Merged into :attr:`metadata` before saving (e.g. ``{"source_uuid": ..., "layer": ...}``).
        force : bool, default False
            Replace existing files.

        Returns
        -------
        Path
            ``path``.

        Raises
        ------
        InputError
            ``path`` or its sidecar exists without ``force``, or the folder is missing.
        KnnToolsError
            The index is not fitted.
        """
        from knntools.io.h5 import atomic_path

        if not self.is_fitted:
            raise KnnToolsError(f"{type(self).__name__} is not fitted; nothing to save")
        if metadata:
            self.metadata.update(metadata)
        path = Path(path)
        # The payload is renamed into place first, the sidecar last: a sidecar means a complete index.
        with atomic_path(header_path(path), force=force) as tmp_header, atomic_path(path, force=force) as tmp_payload:
            self.write_files(tmp_payload, tmp_header)
        return path

    def write_files(self, payload_path: str | os.PathLike, header_file: str | os.PathLike) -> None:
        """Write the payload and the JSON header to the given paths, non-atomically.

        For callers that manage atomic renames themselves (e.g. several indexes committed
        together); everyone else calls :meth:`save`. The header must end up at
        ``header_path(final_payload_path)``.

        Raises
        ------
        InputError
            :attr:`metadata` is not JSON-serialisable.
        """
        head = self.header()
        try:
            json.dumps(head)
        except TypeError as exc:
            raise InputError(f"index metadata is not JSON-serialisable ({exc})") from None
        self._save_payload(Path(payload_path))
        head["payload_bytes"] = Path(payload_path).stat().st_size
        Path(header_file).write_text(json.dumps(head, indent=2) + "\n")

    @abc.abstractmethod
    def _save_payload(self, path: Path) -> None:
        """Write the backend's data to ``path``."""

    @classmethod
    def load(cls, path: str | os.PathLike, header: dict[str, Any] | None = None) -> "NeighborIndex":
        """Load an index saved by :meth:`save` (use :func:`knntools.search.load_index` to dispatch).

        Raises
        ------
        InputError
            Missing or invalid files, a sidecar of another backend, or a payload whose size differs
            from the sidecar's record (a half-replaced index).
        """
        path = Path(path)
        head = header if header is not None else read_header(path)
        if head["backend"] != cls.backend:
            raise InputError(f"{path}: index backend is {head['backend']!r}; expected {cls.backend!r}")
        size = path.stat().st_size
        if head.get("payload_bytes") not in (None, size):
            raise InputError(f"{path}: file size {size} differs from the {head['payload_bytes']} bytes recorded in {header_path(path).name}; the index is damaged, rebuild it")
        params = dict(head.get("params") or {})
        try:
            index = cls(metric=head["metric"], **params)
        except TypeError as exc:
            raise InputError(f"{header_path(path)}: parameters {params} not understood by backend {cls.backend!r} ({exc})") from None
        index.metadata = dict(head.get("metadata") or {})
        index._load_payload(path, head)
        index.n_samples_ = int(head["n_samples"])
        index.n_features_ = int(head["n_features"])
        return index

    @abc.abstractmethod
    def _load_payload(self, path: Path, header: dict[str, Any]) -> None:
        """Read the backend's data from ``path``."""


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate the JSON sidecar of the index at ``path`` without loading the index.

    Returns
    -------
    dict
        Keys ``format``, ``format_version``, ``backend``, ``metric``, ``distance_units``, ``params``,
        ``n_samples``, ``n_features``, ``metadata``, ``payload_bytes``, ``knntools_version``, ``created``.

    Raises
    ------
    InputError
        The index or its sidecar is missing, the sidecar is not a knntools index header, or it is
        of a newer format version.
    """
    path = Path(path)
    hpath = header_path(path)
    if not path.exists():
        raise InputError(f"{path}: no such index file")
    if not hpath.exists():
        raise InputError(f"{path}: index metadata {hpath.name} not found beside it; rebuild the index with `knntools index`")
    try:
        head = json.loads(hpath.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{hpath}: not readable as JSON ({exc})") from None
    if not isinstance(head, dict) or head.get("format") != INDEX_FORMAT:
        raise InputError(f"{hpath}: not a knntools index header (format {head.get('format') if isinstance(head, dict) else None!r}; expected {INDEX_FORMAT!r})")
    version = head.get("format_version")
    if not isinstance(version, int) or version > INDEX_FORMAT_VERSION:
        raise InputError(f"{hpath}: index format_version {version!r} is not readable by this knntools (<= {INDEX_FORMAT_VERSION}); rebuild the index")
    missing = [key for key in ("backend", "metric", "n_samples", "n_features") if key not in head]
    if missing:
        raise InputError(f"{hpath}: missing field(s) {', '.join(missing)}; rebuild the index")
    if head["backend"] not in BACKEND_NAMES:
        raise InputError(f"{hpath}: unknown backend {head['backend']!r}; expected one of {', '.join(BACKEND_NAMES)}")
    return head
