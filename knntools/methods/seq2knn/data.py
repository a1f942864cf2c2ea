"""Row access for seq2knn: arrays or h5py datasets read row by row, the feature standardiser.

:func:`take_rows` reads any rows of an array or an h5py dataset (only those rows touch memory) and
checks they are finite; :func:`stream_moments` computes the training rows' mean and std in blocks;
:class:`Standardizer` applies ``(x − mean) / std``; :class:`RowView` and :class:`SubsetRows` are
lazy views (``view[rows]`` → standardised float32 rows) so an out-of-core training set is never
held whole. Label arrays are checked by :func:`knntools.methods.check_labels` (re-exported here).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from knntools.errors import InputError
from knntools.methods import check_labels  # noqa: F401  (re-exported: the one label check)

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
    elif len(rows) and rows[-1] - rows[0] + 1 == len(rows) and bool((np.diff(rows) == 1).all()):
        out = np.asarray(X[int(rows[0]) : int(rows[-1]) + 1])  # a run of rows: one slice read
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
