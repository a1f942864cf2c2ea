"""The methods: each module computes on arrays (no files opened, nothing printed) and is usable from Python.

This package's own namespace holds the array checks and the validation split shared by the methods:

* :func:`check_labels` — THE check of an in-memory label array (integer dtype, values in
  ``[0, n_classes)``). Methods call it on arrays handed to them; labels read from a file are checked
  by :meth:`knntools.io.h5.KFile.read_labels` (the file format's own check, naming the file).
* :func:`validation_split` — THE held-out, class-stratified share of the training rows on which
  LaSeNN's ``(k, w_q)`` and kNet's k are chosen (``--select-on validation``).

Importing this package is cheap (numpy only); each method module imports torch / scikit-learn
lazily.
"""

from __future__ import annotations

import numpy as np

from knntools.errors import InputError
from knntools.methods._splits import DEFAULT_VAL_FRACTION, validation_split

__all__ = ["DEFAULT_VAL_FRACTION", "check_labels", "validation_split"]


def check_labels(y: np.ndarray, n_classes: int, where: str = "labels") -> np.ndarray:
    """Return ``y`` as int64 after checking it holds integer class indices in ``[0, n_classes)``.

    Parameters
    ----------
    y : array-like of shape (n_samples,), integer dtype
    n_classes : int
    where : str, default "labels"
        What ``y`` is, put in front of the message (e.g. ``"train.h5: labels"``).

    Returns
    -------
    ndarray of shape (n_samples,), int64

    Raises
    ------
    InputError
        Labels out of range or not integers.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise InputError(f"{where}: dtype {y.dtype}; expected integer labels")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise InputError(f"{where}: labels span [{y.min()}, {y.max()}]; expected integers in [0, {n_classes})")
    return y
