"""Label-noise models used by the kNN papers (kNet, LaSeNN, Cohen et al.).

Convention
----------
A transition matrix is **row-stochastic**: ``transition_matrix[i, j] = P(noisy = j | clean = i)``,
shape ``(n_classes, n_classes)``, float64, rows sum to 1. (cleanlab's ``noise_matrix`` is the
transpose.) The realised matrix of a draw, ``noise_matrix``, uses the same convention with
empirical frequencies.

Kinds (``rate`` = r, ``n_classes`` = C)
--------------------------------------
``uniform``            kNet §4: with probability r the label is redrawn uniformly from all C
                       classes, *including the true one* (``include_true=True``, the kNet paper's
                       definition: realised flip rate r·(C−1)/C); with ``include_true=False`` it is
                       redrawn from the C−1 other classes (flip rate r).
                       T = (1−r)·I + r/C·11ᵀ   or   (1−r)·I + r/(C−1)·(11ᵀ − I).
``asymmetric-random``  kNet §4: each class i gets two distinct random other classes a_i, b_i
                       (drawn with the seed); T[i,i] = 1−r, T[i,a_i] = 2r/3, T[i,b_i] = r/3.
``semantic``           kNet §4 after Patrini et al.: class i flips with probability r to a
                       semantically similar class ``class_map[i]``; classes not in the map keep
                       their label. Built-in maps (:data:`SEMANTIC_MAPS`): cifar10 and mnist/digits
                       from Patrini et al.; svhn and fashion-mnist are this tool's invention (no
                       paper gives one; kNet's SVHN map is unpublished); or a user map.
``pair``               flip to the next class: T[i,i] = 1−r, T[i,(i+1) mod C] = r.
``permute``            LaSeNN §3.4: a random fraction r of the samples is chosen and their labels
                       are permuted among themselves (a random permutation of that subset). The
                       stored transition matrix is the expected one, (1−r)·I + r·1·πᵀ with π the
                       class prior of the labels.
``random``             Cohen et al. §4 (after Zhang et al. 2017): every label replaced by a uniform
                       draw over C classes (r = 1 by default; r < 1 replaces a fraction r).
``matrix``             a user-supplied row-stochastic T (CSV or NPY).

Sampling
--------
``exact`` (default): for every clean class i with n_i samples, exactly round(n_i·T[i, j]) samples
(largest-remainder rounding, so counts add up to n_i) get noisy label j, on a random permutation of
that class's samples — the realised matrix equals T up to rounding. ``stochastic``: each label is
drawn independently from Categorical(T[clean]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from knntools.errors import InputError
from knntools.utils import as_generator

KINDS = ("uniform", "asymmetric-random", "semantic", "pair", "permute", "random", "matrix")
SAMPLING = ("exact", "stochastic")

_DIGIT_MAP = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}
#: Built-in semantic flip maps (clean class name -> noisy class name). Sources: CIFAR-10 and MNIST
#: follow Patrini et al. (2017) (truck→automobile, bird→airplane, deer→horse, cat↔dog; digits
#: 2→7, 3→8, 5↔6, 7→1); ``digits`` reuses the MNIST map. **Not from any paper**: ``svhn`` — kNet
#: (Mizrahi & Avidan, Table 5) reports semantic noise on SVHN but publishes no map, so this is the
#: MNIST digit map reused as a guess, and SVHN results with it are not comparable with kNet's
#: table — and ``fashion-mnist`` (this tool's pairing of visually similar garments). Pass
#: ``class_map`` (``--class-map``) to use another map.
SEMANTIC_MAPS: dict[str, dict[str, str]] = {
    "cifar10": {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"},
    "mnist": {str(a): str(b) for a, b in _DIGIT_MAP.items()},
    "digits": {str(a): str(b) for a, b in _DIGIT_MAP.items()},
    "svhn": {str(a): str(b) for a, b in _DIGIT_MAP.items()},
    "fashion-mnist": {
        "T-shirt/top": "Shirt",
        "Shirt": "T-shirt/top",
        "Pullover": "Coat",
        "Coat": "Pullover",
        "Sandal": "Sneaker",
        "Sneaker": "Sandal",
        "Ankle boot": "Sneaker",
    },
}


@dataclass
class NoiseResult:
    """Outcome of :func:`add_label_noise`.

    Attributes
    ----------
    labels : ndarray (n_samples,), int64       noisy labels
    labels_clean : ndarray (n_samples,), int64  the input labels
    transition_matrix : ndarray (C, C), float64  requested/expected T, rows sum to 1
    noise_matrix : ndarray (C, C), float64       realised frequencies P̂(noisy = j | clean = i)
    actual_rate : float                          fraction of labels that changed
    """

    labels: np.ndarray
    labels_clean: np.ndarray
    transition_matrix: np.ndarray
    noise_matrix: np.ndarray
    actual_rate: float

    @property
    def is_noisy(self) -> np.ndarray:
        """Bool mask (n_samples,) of changed labels."""
        return self.labels != self.labels_clean


def check_rate(rate: float) -> float:
    """Raise InputError unless ``0 <= rate <= 1``."""
    if not np.isfinite(rate) or not (0.0 <= rate <= 1.0):
        raise InputError(f"noise rate {rate}: expected a number in [0, 1]", param="rate")
    return float(rate)


def check_transition_matrix(T: Any, n_classes: int, where: str = "transition matrix") -> np.ndarray:
    """Validate a transition matrix: square (C, C), finite, non-negative, rows summing to 1 (±1e-6).

    Raises
    ------
    InputError
        With the offending shape/row named.
    """
    T = np.asarray(T, dtype=np.float64)
    if T.ndim != 2 or T.shape[0] != T.shape[1]:
        raise InputError(f"{where}: shape {T.shape}; expected a square ({n_classes}, {n_classes}) matrix")
    if T.shape[0] != n_classes:
        raise InputError(f"{where}: shape {T.shape}; expected ({n_classes}, {n_classes}) for {n_classes} classes")
    if not np.isfinite(T).all() or (T < 0).any():
        raise InputError(f"{where}: expected finite non-negative probabilities")
    sums = T.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if bad.size:
        raise InputError(f"{where}: row {int(bad[0])} sums to {sums[bad[0]]:.6g}; expected a row-stochastic matrix (rows sum to 1, T[i, j] = P(noisy=j | clean=i))")
    return T / sums[:, None]


def resolve_class_map(class_map: Mapping[Any, Any], classes: Sequence[str]) -> dict[int, int]:
    """Turn a map of class names or indices into ``{clean_index: noisy_index}``.

    Raises
    ------
    InputError
        Unknown class name/index.
    """
    names = [str(c) for c in classes]

    def idx(key: Any) -> int:
        s = str(key).strip()
        if s in names:
            return names.index(s)
        if s.lstrip("-").isdigit() and 0 <= int(s) < len(names):
            return int(s)
        raise InputError(f"class map: class '{s}' unknown; expected one of {', '.join(names)}", param="class_map")

    out = {idx(a): idx(b) for a, b in class_map.items()}
    for a, b in out.items():
        if a == b:
            raise InputError(f"class map: class '{names[a]}' maps to itself; expected a different class", param="class_map")
    return out


def parse_class_map(text: str) -> dict[str, str]:
    """Parse ``"cat:dog,dog:cat"`` (names or indices) into a dict. Raises InputError when malformed."""
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        if ":" not in item:
            raise InputError(f"class map {text!r}: expected comma-separated CLEAN:NOISY pairs, e.g. cat:dog,truck:automobile", param="class_map")
        a, b = item.rsplit(":", 1)
        out[a.strip()] = b.strip()
    if not out:
        raise InputError(f"class map {text!r}: expected at least one CLEAN:NOISY pair", param="class_map")
    return out


def make_transition_matrix(
    kind: str,
    n_classes: int,
    rate: float,
    *,
    include_true: bool = True,
    class_map: Mapping[int, int] | None = None,
    class_prior: np.ndarray | None = None,
    random_state: Any = None,
) -> np.ndarray:
    """Build the row-stochastic transition matrix of a noise kind (see the module docstring).

    Parameters
    ----------
    kind : str           one of :data:`KINDS` except ``matrix``
    n_classes : int      C >= 2
    rate : float         r in [0, 1]
    include_true : bool  ``uniform`` only: redraw among all C classes (kNet) or the C−1 others
    class_map : dict     ``semantic`` only: clean index -> noisy index
    class_prior : ndarray (C,)  ``permute`` only: label frequencies
    random_state : int | Generator | None   ``asymmetric-random``: draws the two target classes

    Returns
    -------
    ndarray (C, C), float64, T[i, j] = P(noisy = j | clean = i)

    Raises
    ------
    InputError
        Bad rate, unknown kind, too few classes, or a missing class map.
    """
    rate = check_rate(rate)
    C = int(n_classes)
    if C < 2:
        raise InputError(f"noise needs at least 2 classes; found {C}")
    I = np.eye(C)
    if kind in ("uniform", "random"):
        if include_true or kind == "random":
            return (1 - rate) * I + rate / C * np.ones((C, C))
        return (1 - rate) * I + rate / (C - 1) * (np.ones((C, C)) - I)
    if kind == "pair":
        return (1 - rate) * I + rate * np.roll(I, 1, axis=1)
    if kind == "asymmetric-random":
        if C < 3:
            raise InputError(f"noise kind 'asymmetric-random' needs at least 3 classes; found {C}", param="kind")
        rng = as_generator(random_state)
        T = (1 - rate) * I
        for i in range(C):
            others = np.array([j for j in range(C) if j != i])
            a, b = rng.choice(others, size=2, replace=False)
            T[i, a] += 2 * rate / 3
            T[i, b] += rate / 3
        return T
    if kind == "semantic":
        if not class_map:
            raise InputError("noise kind 'semantic': no class map for this dataset; expected a class map of CLEAN:NOISY pairs", param="class_map")
        T = I.copy()
        for a, b in class_map.items():
            T[a, a] = 1 - rate
            T[a, b] = rate
        return T
    if kind == "permute":
        prior = np.full(C, 1.0 / C) if class_prior is None else np.asarray(class_prior, dtype=np.float64)
        return (1 - rate) * I + rate * np.outer(np.ones(C), prior / prior.sum())
    raise InputError(f"noise kind {kind!r}: unknown; expected one of {', '.join(KINDS)}", param="kind")


def _largest_remainder(n: int, probs: np.ndarray) -> np.ndarray:
    raw = probs * n
    counts = np.floor(raw).astype(np.int64)
    short = n - counts.sum()
    if short > 0:
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def sample_noisy_labels(y: np.ndarray, transition_matrix: np.ndarray, *, sampling: str = "exact", random_state: Any = None) -> np.ndarray:
    """Draw noisy labels for clean labels ``y`` (int64 [N]) from a row-stochastic matrix.

    ``sampling="exact"`` assigns exactly round(n_i · T[i, j]) labels per class pair
    (largest remainder); ``"stochastic"`` draws each label independently.

    Returns
    -------
    ndarray (N,), int64
    """
    if sampling not in SAMPLING:
        raise InputError(f"sampling {sampling!r}: expected one of {', '.join(SAMPLING)}", param="sampling")
    rng = as_generator(random_state)
    y = np.asarray(y, dtype=np.int64)
    T = np.asarray(transition_matrix, dtype=np.float64)
    C = T.shape[0]
    noisy = y.copy()
    for i in range(C):
        rows = np.flatnonzero(y == i)
        if rows.size == 0:
            continue
        if sampling == "exact":
            counts = _largest_remainder(rows.size, T[i])
            targets = np.repeat(np.arange(C, dtype=np.int64), counts)
            noisy[rng.permutation(rows)] = targets
        else:
            noisy[rows] = rng.choice(C, size=rows.size, p=T[i])
    return noisy


def permute_labels(y: np.ndarray, rate: float, *, random_state: Any = None) -> np.ndarray:
    """LaSeNN's permuted-label noise: permute the labels of a random fraction ``rate`` of samples.

    Exactly ``round(rate · N)`` samples are chosen; their labels are shuffled among themselves
    (so the class histogram is unchanged; some chosen samples may keep their label by chance).
    """
    rate = check_rate(rate)
    rng = as_generator(random_state)
    y = np.asarray(y, dtype=np.int64)
    n = int(round(rate * len(y)))
    chosen = rng.choice(len(y), size=n, replace=False)
    noisy = y.copy()
    noisy[chosen] = y[rng.permutation(chosen)]
    return noisy


def realised_matrix(labels_clean: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Empirical ``P̂(noisy = j | clean = i)`` (C, C) float64; rows of absent classes are identity."""
    C = int(n_classes)
    counts = np.zeros((C, C), dtype=np.float64)
    np.add.at(counts, (labels_clean, labels), 1.0)
    sums = counts.sum(axis=1, keepdims=True)
    M = np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)
    M[sums[:, 0] == 0] = np.eye(C)[sums[:, 0] == 0]
    return M


def add_label_noise(
    y: np.ndarray,
    n_classes: int,
    kind: str,
    rate: float,
    *,
    sampling: str = "exact",
    include_true: bool = True,
    class_map: Mapping[int, int] | None = None,
    transition_matrix: np.ndarray | None = None,
    random_state: Any = None,
) -> NoiseResult:
    """Corrupt clean labels with one of the noise models (see the module docstring).

    Parameters
    ----------
    y : ndarray (n_samples,), int
        Clean labels in [0, n_classes).
    n_classes : int
    kind : str
        One of :data:`KINDS`.
    rate : float
        Noise rate r in [0, 1] (ignored for ``matrix``).
    sampling : {"exact", "stochastic"}, default "exact"
    include_true : bool, default True
        ``uniform``: the kNet definition (the redrawn label may be the true one).
    class_map : dict, optional
        ``semantic``: clean index -> noisy index.
    transition_matrix : ndarray (C, C), optional
        ``matrix``: the user's row-stochastic T.
    random_state : int | Generator | None
        Same seed, same labels.

    Returns
    -------
    NoiseResult

    Raises
    ------
    InputError
        Bad rate, kind, matrix, class map, or labels outside [0, n_classes).
    """
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise InputError(f"labels: expected a 1-D integer array; got shape {y.shape}, dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise InputError(f"labels: values span [{y.min()}, {y.max()}]; expected integers in [0, {n_classes})")
    if kind not in KINDS:
        raise InputError(f"noise kind {kind!r}: unknown; expected one of {', '.join(KINDS)}", param="kind")
    rng = as_generator(random_state)
    if kind == "matrix":
        if transition_matrix is None:
            raise InputError("noise kind 'matrix': expected a transition matrix (row-stochastic, C×C)", param="transition_matrix")
        T = check_transition_matrix(transition_matrix, n_classes)
        noisy = sample_noisy_labels(y, T, sampling=sampling, random_state=rng)
    elif kind == "permute":
        prior = np.bincount(y, minlength=n_classes).astype(np.float64)
        T = make_transition_matrix(kind, n_classes, rate, class_prior=prior)
        noisy = permute_labels(y, rate, random_state=rng)
    else:
        T = make_transition_matrix(kind, n_classes, rate, include_true=include_true, class_map=class_map, random_state=rng)
        noisy = sample_noisy_labels(y, T, sampling=sampling, random_state=rng)
    M = realised_matrix(y, noisy, n_classes)
    actual = float(np.mean(noisy != y)) if y.size else 0.0
    return NoiseResult(noisy, y, T, M, actual)


def load_transition_matrix(path: str) -> np.ndarray:
    """Read a transition matrix from ``.npy`` or ``.csv`` (comma-separated rows, no header).

    Raises
    ------
    InputError
        Missing/unreadable file or unknown extension.
    """
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file; expected a transition matrix (.csv or .npy)")
    try:
        if p.suffix.lower() == ".npy":
            return np.load(p, allow_pickle=False)
        if p.suffix.lower() in (".csv", ".txt"):
            return np.loadtxt(p, delimiter=",", ndmin=2)
    except ValueError as exc:
        raise InputError(f"{p}: cannot parse transition matrix ({exc}); expected C rows of C comma-separated numbers") from None
    raise InputError(f"{p}: unknown extension '{p.suffix}'; expected .csv or .npy")
