"""The held-out validation split of the training rows, shared by every method that chooses a setting.

LaSeNN's ``(k, w_q)`` (:func:`knntools.methods.lasenn.select_w_q`) and kNet's k
(:func:`knntools.methods.knet.select_k`) are chosen on the same kind of split (issue 17): a seeded,
class-stratified share of the TRAINING rows, never the test labels. Both call
:func:`validation_split`; it is re-exported as :func:`knntools.methods.validation_split`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from knntools.errors import InputError

#: Share of the training rows held out for validation (``--val-fraction``).
DEFAULT_VAL_FRACTION = 0.1


def validation_split(labels: np.ndarray, val_fraction: float = DEFAULT_VAL_FRACTION, *, seed: Any = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split training rows into fitting rows and a class-stratified, seeded validation share.

    The validation rows are ``round(val_fraction · n)`` rows (at least 1, at most ``n - 1``) drawn
    by :func:`knntools.methods.dknn.select_calibration` in its ``"stratified"`` mode: class counts
    proportional to the class frequencies (largest remainders), rows drawn with ``seed``. Same
    labels, fraction and seed, same split.

    Parameters
    ----------
    labels : ndarray of shape (n,), int
        Labels of the training rows (the strata).
    val_fraction : float in (0, 1), default 0.1
        Share of the rows held out.
    seed : int or numpy Generator, default 0
        Seed of the draw.

    Returns
    -------
    fit_rows : ndarray (n - n_val,), int64, sorted
        Rows that stay in the training set (index / fitting rows).
    val_rows : ndarray (n_val,), int64, sorted
        Held-out rows; disjoint from ``fit_rows``, together all of ``0 .. n-1``.

    Raises
    ------
    InputError
        ``val_fraction`` not a number in (0, 1), or fewer than 2 rows.

    Examples
    --------
    >>> import numpy as np
    >>> fit, val = validation_split(np.repeat([0, 1, 2], [50, 30, 20]), 0.1, seed=1)
    >>> len(fit), np.bincount(np.repeat([0, 1, 2], [50, 30, 20])[val]).tolist()
    (90, [5, 3, 2])
    """
    from knntools.methods.dknn import select_calibration

    try:
        f = float(val_fraction)
    except (TypeError, ValueError):
        raise InputError(f"validation fraction {val_fraction!r}: expected a number in (0, 1)") from None
    if not (0.0 < f < 1.0):
        raise InputError(f"validation fraction {val_fraction}: expected a number in (0, 1), e.g. 0.1")
    y = np.asarray(labels, dtype=np.int64)
    n = len(y)
    if n < 2:
        raise InputError(f"{n} training rows; expected at least 2 to hold some out for validation")
    val = select_calibration(y, min(n - 1, max(1, int(round(f * n)))), "stratified", random_state=seed)
    keep = np.ones(n, dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep).astype(np.int64), val
