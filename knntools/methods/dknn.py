"""Deep k-Nearest Neighbors (DkNN) with conformal prediction, on per-layer activations.

Papernot & McDaniel, "Deep k-Nearest Neighbors: Towards Confident, Interpretable and Robust Deep
Learning" (arXiv:1803.04765), as summarised in Liu's report (``/work/shared/papers/004_*``,
Algorithm 1). For a test input ``z`` and every selected layer ``λ`` the ``k`` nearest training
representations are found; their labels form the multiset ``Ω_λ``. Then (Algorithm 1, lines 7-14)

* nonconformity of label ``j``:   ``α(z, j) = Σ_λ |{i ∈ Ω_λ : i ≠ j}|``  (an integer in ``[0, k·L]``);
* calibration scores:             ``A = {α(x, y) : (x, y) ∈ calibration set}`` (true labels);
* empirical p-value of label ``j``: ``p_j(z) = |{α ∈ A : α ≥ α(z, j)}| / |A|``          (``"plain"``)
  or the smoothed conformal p-value ``(|{α ∈ A : α ≥ α(z, j)}| + 1) / (|A| + 1)``       (``"smoothed"``);
* prediction ``= argmax_j p_j``, confidence ``= 1 − (second largest p)``, credibility ``= max_j p_j``.

Defaults chosen here, and why
-----------------------------
``p_value="smoothed"``
    The textbook conformal p-value (Vovk, Gammerman & Shafer, *Algorithmic Learning in a Random
    World*, 2005; Shafer & Vovk 2008): it counts the test point itself among the calibration
    scores, so ``P(p_y(z) ≤ ε) ≤ ε`` holds exactly for exchangeable data and a p-value is never 0.
    Algorithm 1 as printed and the reference implementation (cleverhans
    ``model_zoo/deep_k_nearest_neighbors``) use the ``"plain"`` ratio; pass ``p_value="plain"``
    to reproduce them. The two differ by less than ``1 / (|A| + 1)`` (0.0013 for |A| = 750) and
    never change the ranking of the labels, hence never the prediction.
``drop_zero_calibration=False``
    The reference implementation sorts the calibration scores and removes the zeros
    (``np.trim_zeros(..., 'f')``), i.e. every calibration point whose ``k·L`` neighbours all carry
    its label. That shrinks ``|A|`` without changing the count of scores ``≥ α`` for any ``α > 0``,
    so it *raises* every p-value (and the credibility) of test points with ``α > 0`` by the factor
    ``|A| / |A without zeros|`` (``α = 0`` keeps p = 1): the credibility is no longer the
    calibrated rank among held-out points. It is not part of Algorithm 1, so it is an option here.
``normalize=True, center=False``
    The reference implementation L2-normalises each activation vector and subtracts the training
    mean of the normalised vectors before its LSH (cosine) search. Normalising changes which
    neighbours are found, so it is on by default, as in the reference. Centring is a translation
    of both the training rows and the queries: it changes no Euclidean distance, so with
    ``metric="l2"`` it is a no-op (it matters for ``"cosine"`` and ``"ip"`` only, where it is
    applied by materialising the transformed training rows in memory).

How the transforms are searched (never more in memory than needed)
-------------------------------------------------------------------
With ``metric="l2"`` and ``normalize=True`` the neighbours of ``q/‖q‖`` among ``x/‖x‖`` are
exactly the cosine neighbours of the raw vectors (``‖q̂ − x̂‖² = 2·(1 − cos(q, x))``), so the raw
activations are searched with the ``cosine`` metric and the distances are converted back to the
Euclidean distance between normalised vectors, ``sqrt(2·d_cos)``. The raw training layer can
therefore be an h5py dataset that the exact backend streams block by block (a 60k × 12,544
float32 layer is 3 GB; it is never loaded whole). Likewise ``metric="ip"`` with ``normalize=True``
(and no centring) is searched as ``cosine`` (``−⟨q̂, x̂⟩ = d_cos − 1``). Only centring under
``cosine``/``ip`` needs the transformed training rows in memory.

Ties: ``argmax`` of the p-values is broken by the smaller nonconformity, then the smaller class
index (p is non-increasing in α, so this is still an argmax of p; Algorithm 1 leaves ties open).

File-level runs: :func:`run_dknn` takes opened activation files (:class:`knntools.io.h5.KFile`),
validates them, holds out the calibration rows (:func:`split_calibration`), checks prebuilt
indexes (:func:`check_dknn_indexes`), searches layer by layer and returns a :class:`DkNNRun`
(results, neighbours, metrics, timings). It reads through the files' methods only and writes or
prints nothing; :mod:`knntools.cli.dknn` is the command around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from knntools.errors import InputError
from knntools.utils import as_generator

#: Accepted ``p_value`` definitions.
P_VALUES = ("smoothed", "plain")
#: Calibration row selections (:func:`select_calibration`).
CALIBRATION_MODES = ("first", "stratified")
#: Default number of neighbours per layer (the paper's k).
DEFAULT_K = 75
#: Default calibration size (the paper's |A|).
DEFAULT_CALIBRATION = 750


# --------------------------------------------------------------------------------------------
# Algorithm 1 on neighbour labels (pure functions)
# --------------------------------------------------------------------------------------------


def nonconformity(neighbor_labels: Sequence[np.ndarray] | Mapping[str, np.ndarray], n_classes: int) -> np.ndarray:
    """Nonconformity ``α(z, j) = Σ_λ |{i ∈ Ω_λ : i ≠ j}|`` for every sample and label (Algorithm 1, line 9).

    Parameters
    ----------
    neighbor_labels : sequence or mapping of ndarray, each of shape (n, k_λ), int
        Training labels of the nearest neighbours per layer (``Ω_λ``), values in ``[0, n_classes)``.
    n_classes : int
        Number of labels ``C``.

    Returns
    -------
    ndarray of shape (n, C), int64
        ``α[i, j]`` = number of neighbours, over all layers, whose label is not ``j``.

    Raises
    ------
    ValueError
        No layers, layers with different numbers of rows, or labels outside ``[0, n_classes)``.
    """
    blocks = list(neighbor_labels.values()) if isinstance(neighbor_labels, Mapping) else list(neighbor_labels)
    if not blocks:
        raise ValueError("nonconformity needs the neighbour labels of at least one layer")
    n = len(blocks[0])
    total = 0
    counts = np.zeros((n, n_classes), dtype=np.int64)
    for lab in blocks:
        lab = np.asarray(lab)
        if lab.ndim != 2 or len(lab) != n:
            raise ValueError(f"neighbour labels of shape {lab.shape}; expected ({n}, k)")
        if lab.size and (lab.min() < 0 or lab.max() >= n_classes):
            raise ValueError(f"neighbour labels span [{lab.min()}, {lab.max()}]; expected integers in [0, {n_classes})")
        rows = np.repeat(np.arange(n), lab.shape[1])
        np.add.at(counts, (rows, lab.reshape(-1).astype(np.int64)), 1)
        total += lab.shape[1]
    return total - counts


def calibration_scores(alpha: np.ndarray, labels: np.ndarray, *, drop_zero: bool = False) -> np.ndarray:
    """Calibration nonconformity scores ``A = {α(x, y)}`` at the true labels, sorted (Algorithm 1, line 7).

    Parameters
    ----------
    alpha : ndarray of shape (n_cal, C), int
        :func:`nonconformity` of the calibration samples.
    labels : ndarray of shape (n_cal,), int
        Their true labels.
    drop_zero : bool, default False
        Remove the zero scores, as the reference implementation does (``np.trim_zeros``).

    Returns
    -------
    ndarray of shape (|A|,), int64, ascending

    Raises
    ------
    InputError
        The set is empty (no calibration samples, or only zero scores with ``drop_zero``).
    """
    alpha = np.asarray(alpha)
    labels = np.asarray(labels, dtype=np.int64)
    if len(alpha) != len(labels):
        raise ValueError(f"alpha has {len(alpha)} rows but labels has {len(labels)}")
    scores = np.sort(alpha[np.arange(len(labels)), labels].astype(np.int64))
    if drop_zero:
        scores = scores[scores != 0]
    if scores.size == 0:
        why = " after dropping the zero scores (every calibration point's neighbours all share its label)" if drop_zero else ""
        raise InputError(f"calibration: no calibration scores{why}; expected a non-empty calibration set")
    return scores


def p_values(alpha: np.ndarray, scores: np.ndarray, *, smoothed: bool = True) -> np.ndarray:
    """Empirical conformal p-values ``p_j(z)`` (Algorithm 1, line 10).

    Parameters
    ----------
    alpha : ndarray of shape (n, C), int
        Nonconformity of each test sample for each label.
    scores : ndarray of shape (|A|,), int
        Calibration scores, sorted ascending (:func:`calibration_scores`).
    smoothed : bool, default True
        ``(|{a ≥ α}| + 1) / (|A| + 1)`` (textbook conformal p-value) if true, else
        ``|{a ≥ α}| / |A|`` (Algorithm 1 as printed, reference implementation).

    Returns
    -------
    ndarray of shape (n, C), float64, values in ``[0, 1]`` (``(0, 1]`` when smoothed)
    """
    scores = np.asarray(scores)
    m = len(scores)
    n_ge = m - np.searchsorted(scores, np.asarray(alpha), side="left")
    if smoothed:
        return (n_ge + 1.0) / (m + 1.0)
    return n_ge / float(m)


def predict_from_p_values(p: np.ndarray, alpha: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prediction, confidence and credibility from p-values (Algorithm 1, lines 12-14).

    Parameters
    ----------
    p : ndarray of shape (n, C), float
    alpha : ndarray of shape (n, C), optional
        Nonconformity, used to break ties between equal p-values (smaller α wins; then the
        smaller class index).

    Returns
    -------
    prediction : ndarray of shape (n,), int64    ``argmax_j p_j``
    confidence : ndarray of shape (n,), float64  ``1 − max_{j ≠ prediction} p_j`` (1 when C = 1)
    credibility : ndarray of shape (n,), float64 ``max_j p_j``
    """
    p = np.asarray(p, dtype=np.float64)
    n, c = p.shape
    if alpha is None:
        pred = np.argmax(p, axis=1)
    else:
        # lexsort: last key is primary -> highest p, then lowest alpha, then lowest index.
        keys = np.stack([np.broadcast_to(np.arange(c), (n, c)), np.asarray(alpha, dtype=np.float64), -p])
        pred = np.lexsort(keys, axis=-1)[:, 0] if n else np.zeros(0, dtype=np.int64)
    pred = pred.astype(np.int64)
    cred = p[np.arange(n), pred]
    if c > 1:
        others = p.copy()
        others[np.arange(n), pred] = -np.inf
        conf = 1.0 - others.max(axis=1)
    else:
        conf = np.ones(n)
    return pred, conf, cred


def select_calibration(labels: np.ndarray, size: int, mode: str = "first", *, n_classes: int | None = None, random_state: Any = None) -> np.ndarray:
    """Rows of an evaluation set held out for calibration.

    Parameters
    ----------
    labels : ndarray of shape (n,), int
        True labels of the rows (used by ``"stratified"``).
    size : int
        Number of calibration rows, ``1 <= size <= n``.
    mode : {"first", "stratified"}, default "first"
        ``"first"``: rows ``0 .. size-1`` (the paper's "subset of the test set", reproducible
        without a seed). ``"stratified"``: a random sample whose class counts are proportional
        to the classes' frequencies (largest remainders), drawn with ``random_state``.
    n_classes : int, optional
    random_state : int, Generator or None

    Returns
    -------
    ndarray of shape (size,), int64, sorted ascending

    Raises
    ------
    InputError
        ``size`` out of range or unknown ``mode``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if mode not in CALIBRATION_MODES:
        raise InputError(f"calibration mode {mode!r}; expected one of {', '.join(CALIBRATION_MODES)}")
    if not (1 <= int(size) <= n):
        raise InputError(f"calibration size {size}; expected 1 <= size <= {n} (rows available)")
    size = int(size)
    if mode == "first":
        return np.arange(size, dtype=np.int64)
    rng = as_generator(random_state)
    c = int(n_classes if n_classes is not None else (labels.max() + 1 if n else 0))
    counts = np.bincount(labels, minlength=c)
    exact = counts * size / n
    take = np.floor(exact).astype(np.int64)
    rest = size - int(take.sum())
    if rest > 0:
        order = np.lexsort((np.arange(c), -(exact - take)))
        order = [j for j in order if take[j] < counts[j]]
        for j in order[:rest]:
            take[j] += 1
    rows = [rng.choice(np.flatnonzero(labels == j), size=int(take[j]), replace=False) for j in range(c) if take[j] > 0]
    return np.sort(np.concatenate(rows)).astype(np.int64) if rows else np.zeros(0, np.int64)


@dataclass
class CalibrationSplit:
    """Which rows calibrate and which rows are evaluated (:func:`split_calibration`).

    Attributes
    ----------
    rows : ndarray (|A|,), int64      rows of the calibration source, ascending
    labels : ndarray (|A|,), int64    their true labels
    ids : ndarray (|A|,), int64       their sample ids
    eval_rows : ndarray (n,), int64   rows of the evaluated set that are evaluated, ascending
    n_excluded : int                  evaluated-set rows dropped because they are calibration
                                      samples of a separate calibration set (same ids, same split)
    from_eval : bool                  the calibration rows are rows of the evaluated set itself
    """

    rows: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    eval_rows: np.ndarray
    n_excluded: int
    from_eval: bool


def split_calibration(
    eval_labels: np.ndarray,
    eval_ids: np.ndarray,
    size: int,
    mode: str = "first",
    *,
    n_classes: int | None = None,
    random_state: Any = None,
    calibration_labels: np.ndarray | None = None,
    calibration_ids: np.ndarray | None = None,
    same_split: bool = False,
    source: str = "evaluated set",
    calibration_source: str = "calibration set",
) -> CalibrationSplit:
    """Hold out the calibration set ``A`` (Algorithm 1, line 7: "calibration data, held out").

    Without ``calibration_labels`` the calibration rows are ``size`` rows of the evaluated set
    (:func:`select_calibration`; the paper's first 750 test samples) and every other row is
    evaluated. With them, the rows are drawn from the separate calibration set; when it is the
    same dataset split as the evaluated one (``same_split``, e.g. clean ``test.h5`` calibrating an
    FGSM ``test_fgsm.h5``), evaluated rows whose id is a calibration id are not evaluated.

    Parameters
    ----------
    eval_labels : ndarray (n_eval,), int64     true labels of the evaluated set
    eval_ids : ndarray (n_eval,), int64        its sample ids
    size : int                                 |A|
    mode : {"first", "stratified"}, default "first"
    n_classes : int, optional
    random_state : int, Generator or None      for ``"stratified"``
    calibration_labels, calibration_ids : ndarray (n_cal,), int64, optional
        The separate calibration set.
    same_split : bool, default False
        The calibration set holds the same samples as the evaluated set (ids comparable).
    source, calibration_source : str
        Names of the two sets in error messages (e.g. their file paths).

    Returns
    -------
    CalibrationSplit

    Raises
    ------
    InputError
        ``size`` not below the evaluated rows (held out of the same set), above the calibration
        set's rows, no row left to evaluate, or an unknown ``mode``.
    """
    y_eval = np.asarray(eval_labels, dtype=np.int64)
    ids_eval = np.asarray(eval_ids, dtype=np.int64)
    n = len(y_eval)
    if calibration_labels is None:
        if size >= n:
            raise InputError(f"{source}: calibration size {size} is >= the {n} rows of the evaluated file; "
                             f"expected fewer (calibration rows are held out of the evaluation)")
        rows = select_calibration(y_eval, size, mode, n_classes=n_classes, random_state=random_state)
        mask = np.ones(n, bool)
        mask[rows] = False
        split = CalibrationSplit(rows, y_eval[rows], ids_eval[rows], np.flatnonzero(mask), 0, True)
    else:
        y_cal = np.asarray(calibration_labels, dtype=np.int64)
        if size > len(y_cal):
            raise InputError(f"{calibration_source}: calibration size {size} is larger than its {len(y_cal)} rows; expected at most {len(y_cal)}")
        rows = select_calibration(y_cal, size, mode, n_classes=n_classes, random_state=random_state)
        ids_cal = np.asarray(calibration_ids if calibration_ids is not None else np.arange(len(y_cal)), dtype=np.int64)[rows]
        mask = ~np.isin(ids_eval, ids_cal) if same_split else np.ones(n, bool)
        eval_rows = np.flatnonzero(mask)
        split = CalibrationSplit(rows, y_cal[rows], ids_cal, eval_rows, int(n - len(eval_rows)), False)
    if len(split.eval_rows) == 0:
        raise InputError(f"{source}: no rows left to evaluate after holding out the {size} calibration samples; "
                         f"expected a larger file or a smaller calibration set")
    return split


# --------------------------------------------------------------------------------------------
# The search plan: how normalisation / centring map onto the search layer
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchPlan:
    """How one layer is searched (see the module docstring).

    Attributes
    ----------
    metric : str            metric given to the search backend
    materialize : bool      the transformed training rows are built in memory
    distance : str          conversion of backend distances to the user's metric on the
                            transformed vectors: ``"same"``, ``"cos_to_l2"`` (sqrt(2 d)),
                            ``"cos_to_ip"`` (d − 1)
    """

    metric: str
    materialize: bool
    distance: str


def search_plan(metric: str, normalize: bool, center: bool) -> SearchPlan:
    """Map (user metric, normalize, center) to what the backend searches.

    ``l2``: centring is a no-op; normalising = cosine search on the raw rows.
    ``cosine``: normalising is a no-op; centring needs the transformed rows.
    ``ip``: normalising without centring = cosine search; centring needs the transformed rows.
    """
    if metric == "l2":
        return SearchPlan("cosine", False, "cos_to_l2") if normalize else SearchPlan("l2", False, "same")
    if metric == "cosine":
        return SearchPlan("cosine", bool(center), "same")
    if metric == "ip":
        if center:
            return SearchPlan("ip", True, "same")
        return SearchPlan("cosine", False, "cos_to_ip") if normalize else SearchPlan("ip", False, "same")
    raise InputError(f"unknown metric {metric!r}; expected l2, cosine or ip")


def _rows_per_block(d: int) -> int:
    return int(max(256, min(65536, (64 << 20) // (4 * max(1, d)))))


def _normalize_rows(block: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64)).astype(np.float32)
    norms[norms == 0] = 1.0
    return block / norms[:, None]


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------


@dataclass
class DkNNResult:
    """Output of :meth:`DkNN.predict`.

    Attributes
    ----------
    predictions : ndarray (n,), int64
    p_values : ndarray (n, C), float64
    confidence : ndarray (n,), float64
    credibility : ndarray (n,), float64
    nonconformity : ndarray (n, C), int64
    neighbors : dict layer -> dict with ``rows`` int64 (n, k) (rows of the training layer),
        ``labels`` int64 (n, k) (training labels), ``distances`` float32 (n, k) (ascending, the
        user's metric on the transformed vectors)
    """

    predictions: np.ndarray
    p_values: np.ndarray
    confidence: np.ndarray
    credibility: np.ndarray
    nonconformity: np.ndarray
    neighbors: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


class DkNN:
    """Deep k-Nearest Neighbors classifier with conformal credibility (Algorithm 1 of the report).

    Parameters
    ----------
    k : int, default 75
        Neighbours per layer (the paper's k = 75).
    backend : {"exact", "hnsw"}, default "exact"
        Search backend of :mod:`knntools.search`. ``exact`` is the default: one pass over a 10k
        test set is faster exact than building hnsw indexes (design.md §6), and it is exact.
    metric : {"l2", "cosine", "ip"}, default "l2"
        Distance between (transformed) activation vectors.
    normalize : bool, default True
        L2-normalise every activation vector before the search (reference implementation).
    center : bool, default False
        Subtract the mean of the (normalised) training vectors from training rows and queries
        (reference implementation; a no-op for ``l2``).
    p_value : {"smoothed", "plain"}, default "smoothed"
        ``(|{a ≥ α}| + 1)/(|A| + 1)`` or Algorithm 1's / the reference's ``|{a ≥ α}|/|A|``.
    drop_zero_calibration : bool, default False
        Drop zero calibration scores like the reference implementation.
    search_params : dict, optional
        Extra backend parameters for :func:`knntools.search.make_index` (exact: ``device``,
        ``num_threads``, ``batch_size``, ``base_batch_size``; hnsw: ``M``, ``ef_construction``,
        ``ef``, ``num_threads``, ``seed``).

    Attributes
    ----------
    layers_ : list of str           layers in the order given to :meth:`fit`
    n_classes_ : int
    train_labels_ : ndarray (n_train,), int64   labels the network was trained on
    indexes_ : dict layer -> fitted NeighborIndex
    plans_ : dict layer -> SearchPlan
    centers_ : dict layer -> ndarray (d,) float32   only for materialised centred layers
    calibration_scores_ : ndarray (|A|,), int64     after :meth:`calibrate`

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200)
    >>> layers = {"h": (y[:, None] * 3 + rng.normal(size=(200, 4))).astype(np.float32)}
    >>> model = DkNN(k=5, normalize=False).fit(layers, y, n_classes=2)
    >>> model = model.calibrate({"h": layers["h"][:50]}, y[:50])
    >>> res = model.predict({"h": layers["h"][50:60]})
    >>> res.p_values.shape, res.predictions.dtype
    ((10, 2), dtype('int64'))
    """

    def __init__(
        self,
        k: int = DEFAULT_K,
        *,
        backend: str = "exact",
        metric: str = "l2",
        normalize: bool = True,
        center: bool = False,
        p_value: str = "smoothed",
        drop_zero_calibration: bool = False,
        search_params: Mapping[str, Any] | None = None,
    ):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer (got {k!r})")
        if p_value not in P_VALUES:
            raise InputError(f"p_value {p_value!r}; expected one of {', '.join(P_VALUES)}")
        self.k = int(k)
        self.backend = backend
        self.metric = metric
        self.normalize = bool(normalize)
        self.center = bool(center)
        self.p_value = p_value
        self.drop_zero_calibration = bool(drop_zero_calibration)
        self.search_params = dict(search_params or {})
        search_plan(metric, self.normalize, self.center)  # validates the metric

    # -- fit --------------------------------------------------------------------------------
    def plan(self) -> SearchPlan:
        """The :class:`SearchPlan` every layer uses."""
        return search_plan(self.metric, self.normalize, self.center)

    def fit(
        self,
        layers: Mapping[str, Any],
        labels: np.ndarray,
        *,
        n_classes: int | None = None,
        indexes: Mapping[str, Any] | None = None,
        build: bool = True,
    ) -> "DkNN":
        """Index the training activations of every layer.

        Parameters
        ----------
        layers : mapping layer name -> ndarray (n_train, d_λ) or h5py.Dataset
            Training activations, float32/float16, finite. h5py datasets are streamed by the
            exact backend (keep the file open until the last :meth:`predict`).
        labels : ndarray of shape (n_train,), int
            Labels the network was trained on (neighbour labels ``Ω_λ``).
        n_classes : int, optional
            Number of classes; default ``labels.max() + 1``.
        indexes : mapping layer name -> fitted NeighborIndex, optional
            Prebuilt indexes (e.g. loaded with :func:`knntools.search.load_index`) used instead
            of building one. Each must be fitted on that layer's raw training rows with the
            plan's metric (:meth:`plan`), which requires a non-materialised plan.
        build : bool, default True
            Build every index now. ``False`` builds each layer's index on its first search, so
            that a caller going layer by layer can :meth:`release` it before the next one (peak
            memory = one layer's index, which matters for hnsw on 12,544-d layers).

        Returns
        -------
        self

        Raises
        ------
        InputError
            No layers, a layer whose row count differs from ``labels``, ``k`` larger than the
            training set, a reused index of the wrong metric / size, bad labels.
        """
        from knntools.search import make_index
        from knntools.search.base import check_k

        if not layers:
            raise InputError("DkNN.fit: no layers given; expected at least one layer of training activations")
        y = np.asarray(labels)
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise InputError(f"DkNN.fit: labels of shape {y.shape} and dtype {y.dtype}; expected a 1-D integer array")
        y = y.astype(np.int64)
        c = int(n_classes) if n_classes is not None else int(y.max()) + 1
        if y.size and (y.min() < 0 or y.max() >= c):
            raise InputError(f"DkNN.fit: labels span [{y.min()}, {y.max()}]; expected integers in [0, {c})")
        n = len(y)
        check_k(self.k, n, source="training set")
        plan = self.plan()
        indexes = dict(indexes or {})
        self.layers_ = list(layers)
        self.n_classes_ = c
        self.train_labels_ = y
        self.plans_: dict[str, SearchPlan] = {}
        self.indexes_: dict[str, Any] = {}
        self.centers_: dict[str, np.ndarray] = {}
        self._train_layers: dict[str, Any] = {}
        for name, X in layers.items():
            rows = int(X.shape[0])
            if rows != n:
                raise InputError(f"DkNN.fit: layer '{name}' has {rows} rows but there are {n} labels; expected one row per label")
            self.plans_[name] = plan
            if name in indexes:
                index = indexes[name]
                if plan.materialize:
                    raise InputError(f"layer '{name}': a prebuilt index cannot be used with centring under metric {self.metric}; expected no prebuilt index, or center=False", param="center")
                if index.metric != plan.metric:
                    raise InputError(f"layer '{name}': prebuilt index has metric {index.metric!r} but {plan.metric!r} is searched "
                                     f"(metric={self.metric}, normalize={self.normalize}); rebuild it with that metric")
                if index.n_samples_ != n or index.n_features_ != int(np.prod(X.shape[1:])):
                    raise InputError(f"layer '{name}': prebuilt index holds {index.n_samples_} x {index.n_features_} rows; expected {n} x {int(np.prod(X.shape[1:]))}")
                self.indexes_[name] = index
                continue
            make_index(self.backend, metric=plan.metric, **self.search_params)  # validates the parameters now
            self._train_layers[name] = X
            if build:
                self._build(name)
        self.calibration_scores_ = None
        return self

    def _build(self, name: str) -> Any:
        from knntools.search import fit_index

        if name not in self.indexes_:
            X = self._train_layers[name]
            plan = self.plans_[name]
            base = self._materialize(name, X) if plan.materialize else X
            self.indexes_[name] = fit_index(self.backend, base, metric=plan.metric, **self.search_params)  # one index per shard for a sharded set
        return self.indexes_[name]

    def release(self, name: str) -> None:
        """Free layer ``name``'s index (rebuilt on the next search of that layer)."""
        if name in self._train_layers:
            self.indexes_.pop(name, None)

    def _materialize(self, name: str, X: Any) -> np.ndarray:
        """Transformed training rows (normalise, centre) as one float32 array; records the centre."""
        n = int(X.shape[0])
        d = int(np.prod(X.shape[1:]))
        out = np.empty((n, d), np.float32)
        step = _rows_per_block(d)
        for s in range(0, n, step):
            block = np.asarray(X[s : s + step], dtype=np.float32).reshape(-1, d)
            if not np.isfinite(block).all():
                bad = s + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
                raise InputError(f"layer '{name}': non-finite value (NaN or Inf) at row {bad}; expected finite values")
            out[s : s + len(block)] = _normalize_rows(block) if self.normalize else block
        if self.center:
            mean = out.mean(axis=0, dtype=np.float64).astype(np.float32)
            out -= mean
            self.centers_[name] = mean
        return out

    def _transform_queries(self, name: str, Q: np.ndarray) -> np.ndarray:
        plan = self.plans_[name]
        Q = np.asarray(Q)
        Q = Q.reshape(len(Q), -1)
        if not plan.materialize:
            return Q
        Q = Q.astype(np.float32, copy=False)
        if not np.isfinite(Q).all():
            bad = int(np.flatnonzero(~np.isfinite(Q).all(axis=1))[0])
            raise InputError(f"layer '{name}': non-finite query value (NaN or Inf) at row {bad}; expected finite values")
        if self.normalize:
            Q = _normalize_rows(Q)
        if name in self.centers_:
            Q = Q - self.centers_[name]
        return Q

    def _check_fitted(self) -> None:
        if not hasattr(self, "indexes_"):
            from knntools.errors import KnnToolsError

            raise KnnToolsError("DkNN is not fitted; call fit(layers, labels) first")

    # -- search -----------------------------------------------------------------------------
    def kneighbors_layer(self, name: str, Q: Any) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest training rows of queries ``Q`` in layer ``name``.

        Parameters
        ----------
        name : str
            A layer given to :meth:`fit`.
        Q : ndarray of shape (n, d_λ)
            Raw query activations (the transforms are applied here).

        Returns
        -------
        distances : ndarray (n, k), float32, ascending, the user's metric on transformed vectors
        rows : ndarray (n, k), int64, rows of the training layer
        """
        self._check_fitted()
        if name not in self.plans_:
            raise InputError(f"layer '{name}' was not fitted (fitted: {', '.join(self.layers_)})")
        plan = self.plans_[name]
        index = self._build(name)
        dist, rows = index.kneighbors(self._transform_queries(name, Q), self.k)
        if plan.distance == "cos_to_l2":
            dist = np.sqrt(np.maximum(2.0 * dist, 0.0)).astype(np.float32)
        elif plan.distance == "cos_to_ip":
            dist = (dist - 1.0).astype(np.float32)
        return dist, rows

    def neighbor_labels(self, rows: np.ndarray) -> np.ndarray:
        """Training labels (``labels`` of the training file) of neighbour ``rows`` -> int64 (n, k)."""
        return self.train_labels_[np.asarray(rows)]

    def kneighbors(self, layers: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
        """Neighbours of the queries in every fitted layer.

        Parameters
        ----------
        layers : mapping layer name -> ndarray (n, d_λ)
            Must contain every fitted layer.

        Returns
        -------
        dict layer -> {"rows": int64 (n, k), "labels": int64 (n, k), "distances": float32 (n, k)}
        """
        self._check_fitted()
        missing = [name for name in self.layers_ if name not in layers]
        if missing:
            raise InputError(f"queries lack layer(s) {', '.join(missing)}; expected every fitted layer ({', '.join(self.layers_)})")
        out = {}
        for name in self.layers_:
            dist, rows = self.kneighbors_layer(name, layers[name])
            out[name] = {"rows": rows, "labels": self.neighbor_labels(rows), "distances": dist}
        return out

    # -- calibration / prediction --------------------------------------------------------------
    def calibrate_from_neighbors(self, neighbor_labels: Mapping[str, np.ndarray], labels: np.ndarray) -> "DkNN":
        """Set :attr:`calibration_scores_` from the calibration samples' neighbour labels.

        Parameters
        ----------
        neighbor_labels : mapping layer -> int64 (n_cal, k)
        labels : ndarray (n_cal,), int   true labels of the calibration samples
        """
        self._check_fitted()
        alpha = nonconformity([neighbor_labels[name] for name in self.layers_], self.n_classes_)
        self.calibration_scores_ = calibration_scores(alpha, labels, drop_zero=self.drop_zero_calibration)
        return self

    def calibrate(self, layers: Mapping[str, Any], labels: np.ndarray) -> "DkNN":
        """Search the calibration samples and compute the calibration scores ``A`` (Algorithm 1, line 7).

        Parameters
        ----------
        layers : mapping layer -> ndarray (n_cal, d_λ)   calibration activations (held out: not
            in the training set and not evaluated)
        labels : ndarray (n_cal,), int   their true labels

        Returns
        -------
        self
        """
        neigh = self.kneighbors(layers)
        return self.calibrate_from_neighbors({k: v["labels"] for k, v in neigh.items()}, labels)

    def calibrate_predict(self, calibration_layers: Mapping[str, Any], calibration_labels: np.ndarray, layers: Mapping[str, Any]) -> DkNNResult:
        """:meth:`calibrate` then :meth:`predict`, with one search per layer for both sets of queries.

        The calibration rows and the test rows of a layer are searched together, so the training
        layer is read (and its index queried) once per layer instead of twice: the cost of
        :meth:`calibrate` is folded into :meth:`predict`'s pass. Same results as the two calls.

        Parameters
        ----------
        calibration_layers : mapping layer -> ndarray (n_cal, d_λ)
        calibration_labels : ndarray (n_cal,), int
        layers : mapping layer -> ndarray (n, d_λ)

        Returns
        -------
        DkNNResult
            Of the rows of ``layers`` (``neighbors`` filled).
        """
        self._check_fitted()
        missing = [name for name in self.layers_ if name not in layers or name not in calibration_layers]
        if missing:
            raise InputError(f"queries lack layer(s) {', '.join(missing)}; expected every fitted layer ({', '.join(self.layers_)})")
        cal_neigh: dict[str, np.ndarray] = {}
        neigh: dict[str, dict[str, np.ndarray]] = {}
        for name in self.layers_:
            Qc, Qt = np.asarray(calibration_layers[name]), np.asarray(layers[name])
            nc = len(Qc)
            dist, rows = self.kneighbors_layer(name, np.concatenate([Qc.reshape(nc, -1), Qt.reshape(len(Qt), -1)]))
            cal_neigh[name] = self.neighbor_labels(rows[:nc])
            neigh[name] = {"rows": rows[nc:], "labels": self.neighbor_labels(rows[nc:]), "distances": dist[nc:]}
        self.calibrate_from_neighbors(cal_neigh, calibration_labels)
        res = self.predict_from_neighbors({k: v["labels"] for k, v in neigh.items()})
        res.neighbors = neigh
        return res

    def predict_from_neighbors(self, neighbor_labels: Mapping[str, np.ndarray]) -> DkNNResult:
        """Algorithm 1, lines 8-14, from precomputed neighbour labels (``neighbors`` left empty)."""
        self._check_fitted()
        if self.calibration_scores_ is None:
            from knntools.errors import KnnToolsError

            raise KnnToolsError("DkNN is not calibrated; call calibrate(layers, labels) first")
        alpha = nonconformity([neighbor_labels[name] for name in self.layers_], self.n_classes_)
        p = p_values(alpha, self.calibration_scores_, smoothed=self.p_value == "smoothed")
        pred, conf, cred = predict_from_p_values(p, alpha)
        return DkNNResult(pred, p, conf, cred, alpha)

    def predict(self, layers: Mapping[str, Any]) -> DkNNResult:
        """Prediction, p-values, confidence, credibility and neighbours of the queries.

        Parameters
        ----------
        layers : mapping layer -> ndarray (n, d_λ)

        Returns
        -------
        DkNNResult
        """
        neigh = self.kneighbors(layers)
        res = self.predict_from_neighbors({k: v["labels"] for k, v in neigh.items()})
        res.neighbors = neigh
        return res


# --------------------------------------------------------------------------------------------
# File-level run: validation, calibration split, prebuilt indexes, the layer-by-layer search
# --------------------------------------------------------------------------------------------


def parse_index_spec(spec: str) -> tuple[str, Path]:
    """``"LAYER=PATH"`` or ``"PATH"`` -> (layer or ``""``, path)."""
    layer, _, path = spec.partition("=") if "=" in spec else ("", "", spec)
    return layer, Path(path)


def check_dknn_indexes(
    specs: Sequence[str],
    layers: Sequence[str],
    plan: SearchPlan,
    *,
    source_uuid: str,
    n_samples: int,
    source: str = "the training file",
) -> dict[str, Path]:
    """Check prebuilt indexes (``knntools index``) against the layers and search plan of a DkNN run.

    Parameters
    ----------
    specs : sequence of str
        ``"LAYER=PATH"`` or ``"PATH"`` (the layer is then read from the index header).
    layers : sequence of str      the searched layers
    plan : SearchPlan             :func:`search_plan` of the run (the index must use ``plan.metric``)
    source_uuid : str             uuid of the training activations the index must be built from
    n_samples : int               training rows
    source : str                  the training file, named in the rebuild hint

    Returns
    -------
    dict layer -> Path
        Only the headers are read; load the indexes with :func:`knntools.search.load_index`.

    Raises
    ------
    InputError
        No layer recorded or given, a layer not searched, a materialised plan (centring under
        cosine/ip searches transformed rows), a different metric, file, layer or size.
    """
    from knntools.search import read_index_header
    from knntools.search.registry import check_index_matches

    out: dict[str, Path] = {}
    for spec in specs:
        layer_given, path = parse_index_spec(spec)
        head = read_index_header(path)
        name = layer_given or (head.get("metadata") or {}).get("layer")
        if not name:
            raise InputError(f"index {spec}: the index does not record its layer; expected LAYER=PATH")
        if name not in layers:
            raise InputError(f"index {spec}: layer '{name}' is not among the searched layers ({', '.join(layers)})")
        if plan.materialize:
            raise InputError(f"index {spec}: prebuilt indexes hold raw activations, but centring under metric {plan.metric} searches transformed ones; "
                             f"drop the index or the centring")
        if head.get("metric") != plan.metric:
            why = " (normalised activations under l2 are searched by cosine on the raw ones)" if plan.distance == "cos_to_l2" else ""
            raise InputError(f"{path}: index metric is {head.get('metric')!r} but dknn searches {name} with {plan.metric!r}{why}; "
                             f"expected an index of {source} layer {name} built with metric {plan.metric} (`knntools index`), or another normalisation/metric")
        check_index_matches(path, head, {"source_uuid": source_uuid, "layer": name, "metric": plan.metric, "n_samples": n_samples})
        out[name] = path
    return out


@dataclass
class DkNNRun:
    """Everything :func:`run_dknn` found, for writing and reporting.

    Attributes
    ----------
    layers : list of str                 searched layers, in order
    k, n_train, n_classes : int
    classes : list of str                class names (of the training file, else "0".."C-1")
    split : CalibrationSplit
    truth_name, calibration_truth_name : str   datasets holding the ground truth
    calibration_source : str             the file the calibration rows come from
    eval_labels, eval_ids : ndarray (n,), int64   truth and ids of the evaluated rows
    search_metric : str                  metric given to the backend (:class:`SearchPlan`)
    index_paths : dict layer -> Path     prebuilt indexes used
    model : DkNN                         fitted and calibrated (``calibration_scores_`` set)
    result : DkNNResult                  of the evaluated rows
    neighbors : dict layer -> {"ids", "labels", "distances"}, each (n, k)
        training ids (int64), training labels (int64), distances (float32, ascending)
    dnn_predictions : ndarray (n,), int64 or None      argmax of the logits (when stored)
    dnn_confidence : ndarray (n,), float64 or None     max softmax probability
    metrics : dict                       accuracy, credibility means, sizes (see :func:`dknn_metrics`)
    timing : dict layer -> {"read_s", "search_s"}
    load_index_s : float
    """

    layers: list[str]
    k: int
    n_train: int
    n_classes: int
    classes: list[str]
    split: CalibrationSplit
    truth_name: str
    calibration_truth_name: str
    calibration_source: str
    eval_labels: np.ndarray
    eval_ids: np.ndarray
    search_metric: str
    index_paths: dict[str, Path]
    model: "DkNN | None" = None
    result: DkNNResult | None = None
    neighbors: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    dnn_predictions: np.ndarray | None = None
    dnn_confidence: np.ndarray | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, dict[str, float]] = field(default_factory=dict)
    load_index_s: float = 0.0

    @property
    def correct(self) -> np.ndarray:
        """bool (n,): the DkNN prediction equals the ground truth."""
        return self.result.predictions == self.eval_labels

    @property
    def dnn_correct(self) -> np.ndarray | None:
        """bool (n,) for the network's own prediction, or None without logits."""
        return None if self.dnn_predictions is None else self.dnn_predictions == self.eval_labels


def dknn_metrics(run: DkNNRun) -> dict[str, Any]:
    """Summary figures of a finished :class:`DkNNRun` (the ``--json`` metrics of ``knntools dknn``).

    Returns
    -------
    dict
        ``accuracy``, ``dnn_accuracy`` (None without logits), ``mean_credibility`` (and over the
        correct / wrong predictions, None when empty), ``mean_confidence``,
        ``dnn_mean_softmax_confidence``, ``agreement_with_dnn``, ``n_evaluated``,
        ``calibration_size``, ``calibration_scores_kept`` (|A| after dropping zeros),
        ``calibration_excluded_from_eval``.
    """
    res, correct, dnn_correct = run.result, run.correct, run.dnn_correct

    def mean_or_none(a: np.ndarray) -> float | None:
        return float(a.mean()) if a.size else None

    return {
        "accuracy": float(correct.mean()),
        "dnn_accuracy": None if dnn_correct is None else float(dnn_correct.mean()),
        "mean_credibility": float(res.credibility.mean()),
        "mean_credibility_correct": mean_or_none(res.credibility[correct]),
        "mean_credibility_wrong": mean_or_none(res.credibility[~correct]),
        "mean_confidence": float(res.confidence.mean()),
        "dnn_mean_softmax_confidence": None if run.dnn_confidence is None else float(run.dnn_confidence.mean()),
        "agreement_with_dnn": None if run.dnn_predictions is None else float((run.dnn_predictions == res.predictions).mean()),
        "n_evaluated": int(len(run.split.eval_rows)),
        "calibration_size": int(len(run.split.rows)),
        "calibration_scores_kept": int(len(run.model.calibration_scores_)),
        "calibration_excluded_from_eval": int(run.split.n_excluded),
    }


def run_dknn(
    train: Any,
    evaluate: Any,
    *,
    calibration_file: Any = None,
    layers: str | Sequence[str] = "all",
    k: int = DEFAULT_K,
    calibration: int = DEFAULT_CALIBRATION,
    calibration_mode: str = "first",
    calibrate_on_attacked: bool = False,
    indexes: Sequence[str] = (),
    seed: int = 0,
    on_start: Callable[[DkNNRun], None] | None = None,
    on_layer: Callable[[str, dict[str, float]], None] | None = None,
    **options: Any,
) -> DkNNRun:
    """DkNN (Algorithm 1) on activation files: validate, calibrate, search every layer, predict.

    Parameters
    ----------
    train : KFile
        Training activations (``knntools embed --split train``), opened with
        :class:`knntools.io.h5.KFile`; its ``labels`` are the neighbour labels.
    evaluate : KFile
        Activations to classify (same model); truth ``labels_clean`` (else ``labels``).
    calibration_file : KFile, optional
        Take the calibration rows from this file instead of ``evaluate`` (:func:`split_calibration`).
    layers : str or sequence, default "all"
        Layer spec (:func:`knntools.layerspec.resolve_layer_spec`).
    k, calibration, calibration_mode : see :class:`DkNN` and :func:`select_calibration`
    calibrate_on_attacked : bool, default False
        Allow calibration rows of ``evaluate`` when its ``attack`` attribute records an attack
        (refused otherwise: the paper calibrates on clean held-out data).
    indexes : sequence of str
        Prebuilt indexes ``"[LAYER=]PATH"`` (:func:`check_dknn_indexes`).
    seed : int, default 0
        Draws the stratified calibration sample.
    on_start : callable(DkNNRun), optional
        Called once every input is validated, before the search (for progress reports).
    on_layer : callable(layer, {"read_s", "search_s"}), optional
        Called after each layer's search.
    **options
        The model's settings, passed to :class:`DkNN` with its defaults: ``backend``
        ("exact"), ``metric`` ("l2"), ``normalize`` (True), ``center`` (False), ``p_value``
        ("smoothed"), ``drop_zero_calibration`` (False), ``search_params``.

    Returns
    -------
    DkNNRun
        ``result`` holds predictions (int64 [n]), p-values (float64 [n, C]), confidence and
        credibility (float64 [n]) and nonconformity (int64 [n, C]) of the evaluated rows.

    Raises
    ------
    InputError
        Files of another model, other classes or layer widths, labels out of range, an unknown
        layer, ``k`` above the training rows (:func:`knntools.search.base.check_k`), a bad
        calibration size, calibration on attacked rows, a mismatched prebuilt index, NaN/Inf.
    """
    import time

    from knntools.io.h5 import check_same_source
    from knntools.search import load_index
    from knntools.search.base import check_k

    tr, ev, cf = train, evaluate, calibration_file
    model = DkNN(k, **options)  # validates the settings
    plan = model.plan()
    layer_names = tr.resolve_layers(layers)
    for other in (ev, cf):
        if other is not None:
            check_same_source(tr, other, layer_names)
            if tr.n_classes and other.n_classes and tr.n_classes != other.n_classes:
                raise InputError(f"{other.path}: {other.n_classes} classes but {tr.path} has {tr.n_classes}; expected the same classes")
    y_train = tr.read_labels("labels")
    n_train = len(y_train)
    n_classes = tr.n_classes or int(y_train.max()) + 1
    check_k(k, n_train, source=str(tr.path))
    y_eval_all, ids_eval_all = ev.truth_labels(), ev.ids()
    if y_eval_all.size and y_eval_all.max() >= n_classes:
        raise InputError(f"{ev.path}: {ev.truth_name} go up to {y_eval_all.max()}; expected labels in [0, {n_classes}) like {tr.path}")
    ev_attack = ev.attrs.get("attack")
    if cf is None and ev_attack not in (None, "", "none") and not calibrate_on_attacked:
        raise InputError(f"{ev.path}: attribute attack = {ev_attack!r}: calibrating on adversarial rows is refused (the paper holds out clean "
                         f"test data); expected a clean calibration file (or calibrate_on_attacked=True to force it)", param="calibration_file")
    same_split = cf is not None and (cf.uuid == ev.uuid or (
        cf.attrs.get("dataset") is not None and cf.attrs.get("dataset") == ev.attrs.get("dataset")
        and cf.attrs.get("split") is not None and cf.attrs.get("split") == ev.attrs.get("split")))
    split = split_calibration(y_eval_all, ids_eval_all, calibration, calibration_mode, n_classes=n_classes, random_state=seed,
                              calibration_labels=None if cf is None else cf.truth_labels(), calibration_ids=None if cf is None else cf.ids(),
                              same_split=same_split, source=str(ev.path), calibration_source=str(cf.path) if cf is not None else "")
    index_paths = check_dknn_indexes(indexes, layer_names, plan, source_uuid=tr.uuid, n_samples=n_train, source=str(tr.path)) if indexes else {}
    eval_rows = split.eval_rows
    run = DkNNRun(layers=layer_names, k=int(k), n_train=n_train, n_classes=n_classes, classes=tr.classes or [str(c) for c in range(n_classes)],
                  split=split, truth_name=ev.truth_name, calibration_truth_name=(cf or ev).truth_name,
                  calibration_source=str((cf or ev).path), eval_labels=y_eval_all[eval_rows], eval_ids=ids_eval_all[eval_rows],
                  search_metric=plan.metric, index_paths=index_paths)
    if on_start is not None:
        on_start(run)

    if model.backend == "exact":
        import torch  # noqa: F401  (imported here so its import time is not counted as search time)
    t0 = time.perf_counter()
    prebuilt = {name: load_index(p) for name, p in index_paths.items()}
    run.load_index_s = time.perf_counter() - t0
    model.fit({name: tr.layer(name) for name in layer_names}, y_train, n_classes=n_classes, indexes=prebuilt, build=False)
    train_ids = tr.ids()
    cal_labels: dict[str, np.ndarray] = {}
    whole_eval = cf is None  # calibration and evaluated rows together are the whole file: one search
    n_ev = len(eval_rows)
    for name in layer_names:
        t_read = time.perf_counter()
        Q = ev.read_layer(name) if whole_eval or n_ev == ev.n_samples else ev.read_layer_rows(name, eval_rows)
        if not whole_eval:  # calibration rows of the other file join the queries: the training layer is read once
            Qc = cf.read_layer_rows(name, split.rows)
            Q = np.concatenate([Q.reshape(len(Q), -1), Qc.reshape(len(Qc), -1)])
            del Qc
        read_s = time.perf_counter() - t_read
        t_s = time.perf_counter()
        dist, rows = model.kneighbors_layer(name, Q)
        search_s = time.perf_counter() - t_s
        del Q
        if whole_eval:
            cal_labels[name] = model.neighbor_labels(rows[split.rows])
            dist, rows = dist[eval_rows], rows[eval_rows]
        else:
            cal_labels[name] = model.neighbor_labels(rows[n_ev:])
            dist, rows = dist[:n_ev], rows[:n_ev]
        model.release(name)
        run.neighbors[name] = {"ids": train_ids[rows], "labels": model.neighbor_labels(rows), "distances": dist.astype(np.float32)}
        run.timing[name] = {"read_s": read_s, "search_s": search_s}
        if on_layer is not None:
            on_layer(name, run.timing[name])

    model.calibrate_from_neighbors(cal_labels, split.labels)
    run.model = model
    run.result = model.predict_from_neighbors({name: run.neighbors[name]["labels"] for name in layer_names})
    if ev.has("logits"):
        from knntools.utils import softmax

        logits = ev.read("logits", dtype=np.float32)[eval_rows]
        run.dnn_predictions = logits.argmax(axis=1).astype(np.int64)
        run.dnn_confidence = softmax(logits).max(axis=1)
    run.metrics = dknn_metrics(run)
    return run


__all__ = [
    "CALIBRATION_MODES",
    "CalibrationSplit",
    "DkNNRun",
    "check_dknn_indexes",
    "dknn_metrics",
    "parse_index_spec",
    "run_dknn",
    "split_calibration",
    "DEFAULT_CALIBRATION",
    "DEFAULT_K",
    "DkNN",
    "DkNNResult",
    "P_VALUES",
    "SearchPlan",
    "calibration_scores",
    "nonconformity",
    "p_values",
    "predict_from_p_values",
    "search_plan",
    "select_calibration",
]
