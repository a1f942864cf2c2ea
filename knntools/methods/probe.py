"""Probe a network's layers with k-NN, linear SVM and logistic regression (Cohen, Giryes & Sapiro).

*DNN or k-NN: That is the Generalize vs. Memorize Question*. On the activations of a layer, fit
classical classifiers ``M`` on the training set (with the labels the network was trained on) and
compare them with the network (DNN) on the training and test sets:

* accuracy of ``M``;
* ``P_SAME(M) = p(f_M(s) = f_DNN(s))`` (Eq. 2), agreement with the DNN's arg-max;
* ``D_KL(p_M || q_DNN) = sum_i p_i log(p_i / q_i)`` averaged over the samples (Eq. 1), ``p`` the
  class probabilities of ``M``, ``q`` the DNN softmax;
* the mutual agreement counts: both right, only ``M`` right, only the DNN right, both wrong.

Classifiers (§3: ``k = 30`` for all experiments)

``knn``  majority vote of the ``k`` nearest training samples (search layer, any backend/metric);
         ``p_M`` = vote fractions (sklearn's ``KNeighborsClassifier.predict_proba`` with uniform
         weights); ties go to the smallest class index. On the **training** set the default is the
         paper's plain k-NN: the classifier fitted on the training set is applied to the training
         samples, each sample among its own k neighbours (``loo=False``; the paper calls k-NN "the
         ideal estimator that perfectly memorizes the data" and reports train D_KL(k-NN‖DNN) → 0
         after memorisation; it never mentions leaving samples out). ``loo=True`` (a deviation)
         excludes each sample's own row (``kneighbors(None, k)``): a leave-one-out vote.
``svm``  linear SVM (liblinear ``LinearSVC``, one-vs-rest, ``C = 1``) with Platt-sigmoid
         probabilities from ``CalibratedClassifierCV(cv=3, ensemble=False)``.
``lr``   multinomial logistic regression (lbfgs, ``C = 1``).

Scaling (documented choices, not silent hours). k-NN always uses the full layer and every training
row given. SVM and LR are fitted on at most ``fit_samples`` training rows (a seeded, class-
stratified subsample; default 10 000), after standardisation and — for layers wider than
``pca_dim`` (default 256) — a seeded randomized PCA to ``pca_dim`` components fitted on those rows.
Prediction is done in row chunks. The D_KL uses ``q`` clipped below at ``eps = 1e-12`` (``0 log 0 =
0`` for ``p``).

Everything here works on arrays; no files, no printing.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from knntools.errors import InputError
from knntools.search.base import check_k
from knntools.utils import as_generator

CLASSIFIERS = ("knn", "svm", "lr")
DEFAULT_K = 30
DEFAULT_PCA_DIM = 256
DEFAULT_FIT_SAMPLES = 10_000
KL_EPS = 1e-12


def parse_classifiers(spec: str | Sequence[str]) -> list[str]:
    """``"knn,svm,lr"`` → ``["knn", "svm", "lr"]``.

    Raises
    ------
    InputError
        An unknown or empty classifier list.
    """
    items = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    bad = [s for s in items if s not in CLASSIFIERS]
    if bad or not items:
        raise InputError(f"classifiers {spec!r}: unknown classifier {', '.join(bad) or '(none)'}; expected a comma list of {', '.join(CLASSIFIERS)}", param="classifiers")
    return list(dict.fromkeys(items))


def vote_proba(neighbor_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Vote fractions of the neighbours' labels: (n, k) int → (n, C) float64, rows sum to 1."""
    lab = np.asarray(neighbor_labels, dtype=np.int64)
    n, k = lab.shape
    counts = np.zeros((n, n_classes), np.float64)
    np.add.at(counts, (np.repeat(np.arange(n), k), lab.ravel()), 1.0)
    return counts / k


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = KL_EPS) -> np.ndarray:
    """Per-sample ``D_KL(p || q) = sum_i p_i log(p_i / q_i)`` (Eq. 1), float64 (n,).

    ``0 log 0 = 0``; ``q`` is clipped below at ``eps`` so a confident DNN never gives ``inf``.
    """
    p = np.asarray(p, np.float64)
    q = np.clip(np.asarray(q, np.float64), eps, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(q)), 0.0)
    return terms.sum(axis=1)


def compare(proba: np.ndarray, dnn_proba: np.ndarray, y: np.ndarray | None, *, pred: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics of one classifier on one split against the DNN.

    Parameters
    ----------
    proba : (n, C) class probabilities of the classifier ``M``
    dnn_proba : (n, C) DNN softmax
    y : (n,) labels to score accuracy against, or None
    pred : (n,) predictions of ``M`` (default ``proba.argmax(1)``)

    Returns
    -------
    dict
        ``n``, ``accuracy``, ``p_same``, ``kl``, ``n_same``, ``n_different``, and with ``y``:
        ``n_both_correct``, ``n_model_only_correct``, ``n_dnn_only_correct``, ``n_both_wrong``.
    """
    pm = np.asarray(proba).argmax(1) if pred is None else np.asarray(pred)
    pd = np.asarray(dnn_proba).argmax(1)
    same = pm == pd
    res: dict[str, Any] = {
        "n": int(len(pm)),
        "accuracy": float("nan"),
        "p_same": float(same.mean()),
        "kl": float(kl_divergence(proba, dnn_proba).mean()),
        "n_same": int(same.sum()),
        "n_different": int((~same).sum()),
    }
    if y is not None:
        y = np.asarray(y)
        cm, cd = pm == y, pd == y
        res.update({
            "accuracy": float(cm.mean()),
            "n_both_correct": int((cm & cd).sum()),
            "n_model_only_correct": int((cm & ~cd).sum()),
            "n_dnn_only_correct": int((~cm & cd).sum()),
            "n_both_wrong": int((~cm & ~cd).sum()),
        })
    return res


def stratified_subsample(y: np.ndarray, n: int | None, random_state: Any = 0) -> np.ndarray:
    """Sorted row indices of a seeded class-stratified subsample of size ``n`` (all rows if ``n`` is None or ≥ len(y))."""
    y = np.asarray(y)
    if n is None or n >= len(y):
        return np.arange(len(y))
    rng = as_generator(random_state)
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts / len(y) * n).astype(int)
    rem = n - quota.sum()
    if rem > 0:
        frac = counts / len(y) * n - quota
        quota[np.argsort(-frac, kind="stable")[:rem]] += 1
    picked = [rng.choice(np.flatnonzero(y == c), size=min(q, cnt), replace=False) for c, q, cnt in zip(classes, quota, counts)]
    return np.sort(np.concatenate(picked)) if picked else np.arange(0)


@dataclass
class ProbeConfig:
    """Settings of :class:`LayerProbe` (see the module docstring for their meaning)."""

    k: int = DEFAULT_K
    metric: str = "l2"
    backend: str = "exact"
    search_params: dict[str, Any] = field(default_factory=dict)
    pca_dim: int | None = DEFAULT_PCA_DIM
    fit_samples: int | None = DEFAULT_FIT_SAMPLES
    C: float = 1.0
    max_iter: int = 1000
    chunk_rows: int = 8192
    random_state: int = 0
    loo: bool = False


class LayerProbe:
    """k-NN / SVM / LR fitted on one layer's training activations.

    Parameters
    ----------
    classifiers : sequence of {"knn", "svm", "lr"}
    n_classes : int
    config : ProbeConfig, optional

    Attributes
    ----------
    models_ : dict name -> fitted sklearn Pipeline (svm, lr)
    index_ : NeighborIndex (knn)
    fit_rows_ : ndarray   training rows used to fit SVM / LR
    pca_ : bool           whether PCA was applied before SVM / LR
    converged_ : dict name -> bool (lr: lbfgs converged within ``max_iter``; svm: liblinear converged)
    """

    def __init__(self, classifiers: Sequence[str], n_classes: int, config: ProbeConfig | None = None):
        self.classifiers = parse_classifiers(list(classifiers))
        self.n_classes = int(n_classes)
        self.config = config or ProbeConfig()

    def fit(self, X: Any, y: np.ndarray) -> "LayerProbe":
        """Fit on training activations ``X`` (n, d) float32 and labels ``y`` (n,) int64.

        Raises
        ------
        InputError
            ``k`` above the candidate rows for knn (:func:`knntools.search.base.check_k`: ``k <= n``,
            ``k <= n - 1`` with ``loo``); fewer than 2 classes in ``y`` for svm / lr.
        """
        from sklearn.exceptions import ConvergenceWarning

        cfg = self.config
        y = np.asarray(y, dtype=np.int64)
        n, d = X.shape
        self.n_train_ = n
        self.y_train_ = y
        self.models_: dict[str, Any] = {}
        self.converged_: dict[str, bool] = {}
        self.fit_time_s_: dict[str, float] = {}
        if "knn" in self.classifiers:
            check_k(cfg.k, n, exclude_self=cfg.loo, source="training rows")
            from knntools.search import fit_index

            t0 = time.perf_counter()
            self.index_ = fit_index(cfg.backend, X, metric=cfg.metric, **cfg.search_params)  # sharded input: one index per shard
            self.fit_time_s_["knn"] = time.perf_counter() - t0
        lin = [c for c in self.classifiers if c in ("svm", "lr")]
        self.pca_ = False
        if lin:
            if len(np.unique(y)) < 2:
                raise InputError("svm/lr need at least 2 classes among the training labels")
            t0 = time.perf_counter()
            self.fit_rows_ = stratified_subsample(y, cfg.fit_samples, cfg.random_state)
            Xf = np.asarray(X if len(self.fit_rows_) == n else X[self.fit_rows_], dtype=np.float32)
            yf = y[self.fit_rows_]
            pre = self._preprocessor(d, len(yf)).fit(Xf)
            Z = pre.transform(Xf)
            self.fit_time_s_["preprocess"] = time.perf_counter() - t0
            for name in lin:
                t0 = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ConvergenceWarning)
                    clf = self._classifier(name).fit(Z, yf)
                self.fit_time_s_[name] = time.perf_counter() - t0
                self.converged_[name] = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
                self.models_[name] = (pre, clf)
        return self

    def _preprocessor(self, d: int, n_fit: int) -> Any:
        from sklearn.decomposition import PCA
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        cfg = self.config
        steps: list[Any] = [StandardScaler()]
        if cfg.pca_dim is not None and d > cfg.pca_dim and n_fit > cfg.pca_dim:
            steps.append(PCA(n_components=cfg.pca_dim, svd_solver="randomized", random_state=cfg.random_state))
            self.pca_ = True
        return make_pipeline(*steps)

    def _classifier(self, name: str) -> Any:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold
        from sklearn.svm import LinearSVC

        cfg = self.config
        if name == "lr":
            return LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, random_state=cfg.random_state)
        svc = LinearSVC(C=cfg.C, dual="auto", max_iter=cfg.max_iter, random_state=cfg.random_state)
        cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=cfg.random_state)
        return CalibratedClassifierCV(svc, method="sigmoid", cv=cv, ensemble=False)

    def knn_neighbors(self, X: Any = None, *, train: bool = False) -> np.ndarray:
        """Row indices (n, k) int64 of the ``k`` nearest training rows, from the one fitted index.

        ``train=True`` with ``config.loo`` (or ``X`` None) searches the fitted rows against
        themselves with each own row excluded (``kneighbors(None, k)``: leave-one-out); otherwise
        ``X`` is searched as queries (the training rows themselves with ``train=True`` and
        ``loo=False``: each row among its own neighbours, the paper's k-NN). The search is the search
        layer's (``config.backend``; ``exact`` is its GEMM engine with grouped top-k).
        """
        cfg = self.config
        if train and (cfg.loo or X is None):
            _, idx = self.index_.kneighbors(None, cfg.k)
        else:
            _, idx = self.index_.kneighbors(X, cfg.k)
        return idx

    def predict_proba(self, name: str, X: Any = None, *, train: bool = False) -> np.ndarray:
        """Class probabilities (n, C) float64 of classifier ``name``.

        Parameters
        ----------
        X : (n, d) array, or None with ``train=True`` for the training rows
        train : bool
            Evaluate the fitted training rows themselves (``X`` = those rows); for ``knn`` each row is
            one of its own k neighbours unless ``config.loo`` (then ``X`` is not needed).
        """
        cfg = self.config
        if name == "knn":
            return vote_proba(self.y_train_[self.knn_neighbors(X, train=train)], self.n_classes)
        pre, clf = self.models_[name]
        out = np.zeros((X.shape[0], self.n_classes), np.float64)
        cols = np.asarray(clf.classes_, dtype=np.int64)
        for s in range(0, X.shape[0], cfg.chunk_rows):
            block = np.asarray(X[s : s + cfg.chunk_rows], dtype=np.float32)
            out[s : s + len(block), cols] = clf.predict_proba(pre.transform(block))
        return out


def probe_layer(
    X_train: Any,
    y_train: np.ndarray,
    dnn_train: np.ndarray,
    X_test: Any | None,
    dnn_test: np.ndarray | None,
    y_test: np.ndarray | None,
    classifiers: Sequence[str],
    n_classes: int,
    config: ProbeConfig | None = None,
    *,
    y_train_clean: np.ndarray | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Fit the probes on one layer and compare them with the DNN on train (and test).

    Parameters
    ----------
    X_train : (n_train, d) float32 training activations
    y_train : (n_train,) int64 — the labels the network was trained on (fit targets; train
        ``accuracy`` is measured against them, i.e. memorisation for random labels)
    dnn_train : (n_train, C) DNN softmax on the training rows
    X_test, dnn_test, y_test : test activations, DNN softmax, ground truth (or None)
    y_train_clean : (n_train,) ground truth of the training rows, optional (adds
        ``accuracy_clean`` to train rows)

    Returns
    -------
    rows : list of dict
        One per (classifier incl. ``"dnn"``, split): ``classifier``, ``split`` plus
        :func:`compare` metrics (and ``accuracy_clean``, ``converged`` where relevant).
    info : dict
        ``pca`` (bool), ``fit_samples`` (rows used for svm/lr), ``converged`` per classifier, and
        ``timing_s``: wall seconds ``knn_train_s`` (index fit + the training split's search),
        ``knn_test_s`` (the test split's search), ``svm_fit_s`` / ``lr_fit_s`` (fit incl. an even share
        of the standardisation / PCA), ``metrics_s`` (SVM/LR prediction, votes and :func:`compare`).

    Notes
    -----
    One index per layer (``config.backend``, default ``exact``: the search layer's measured GEMM
    engine) serves both splits; each split is searched once.
    """
    cfg = config or ProbeConfig()
    probe = LayerProbe(classifiers, n_classes, cfg).fit(X_train, y_train)
    rows: list[dict[str, Any]] = []
    splits: list[tuple[str, Any, np.ndarray, np.ndarray | None]] = [("train", X_train, dnn_train, y_train)]
    if X_test is not None:
        splits.append(("test", X_test, dnn_test, y_test))
    timing = {"knn_train_s": 0.0, "knn_test_s": 0.0, "svm_fit_s": 0.0, "lr_fit_s": 0.0, "metrics_s": 0.0}
    ft = probe.fit_time_s_
    timing["knn_train_s"] += ft.get("knn", 0.0)  # index fit (exact: norms / storage) counted with the train search
    lin = [c for c in probe.classifiers if c in ("svm", "lr")]
    for name in lin:  # the shared standardisation / PCA split evenly between the linear probes
        timing[f"{name}_fit_s"] = ft[name] + ft.get("preprocess", 0.0) / len(lin)
    for split, X, dnn, y in splits:
        t_metrics = time.perf_counter()
        dnn_row = {"classifier": "dnn", "split": split, **compare(dnn, dnn, y), "kl": 0.0}
        if split == "train" and y_train_clean is not None:
            dnn_row["accuracy_clean"] = float((np.asarray(dnn).argmax(1) == y_train_clean).mean())
        rows.append(dnn_row)
        for name in probe.classifiers:
            if name == "knn":  # one search per split on the layer's one index, timed apart from the metrics
                t_s = time.perf_counter()
                idx = probe.knn_neighbors(X, train=(split == "train"))
                dt = time.perf_counter() - t_s
                timing[f"knn_{split}_s"] += dt
                t_metrics += dt
                proba = vote_proba(probe.y_train_[idx], probe.n_classes)
            else:
                proba = probe.predict_proba(name, X, train=(split == "train"))
            row = {"classifier": name, "split": split, **compare(proba, dnn, y)}
            if split == "train" and y_train_clean is not None:
                row["accuracy_clean"] = float((proba.argmax(1) == y_train_clean).mean())
            if name in probe.converged_:
                row["converged"] = bool(probe.converged_[name])
            rows.append(row)
        timing["metrics_s"] += time.perf_counter() - t_metrics
    info = {"pca": bool(probe.pca_), "fit_samples": int(len(getattr(probe, "fit_rows_", []))), "converged": dict(probe.converged_),
            "timing_s": timing}
    return rows, info


def memorization_step(steps: Sequence[float], train_accuracy: Sequence[float], threshold: float = 1.0) -> float | None:
    """First step at which the DNN's train accuracy reaches ``threshold`` (Figures 6–7 dashed lines), else None."""
    for s, a in zip(steps, train_accuracy):
        if a >= threshold - 1e-12:
            return float(s)
    return None


def _take(a: Any, rows: np.ndarray | None) -> Any:
    """Rows ``rows`` of an array-like (all of it when None); array-likes read lazily by rows work too."""
    return a[:] if rows is None else a[rows]


@dataclass
class ProbeSplit:
    """One split (train or test) of one network for :func:`run_probe`.

    Array-likes are read only for the rows used (a numpy array, or any object answering
    ``a[rows]`` for a sorted int64 row array and ``a[:]`` for all rows, e.g. a lazy file reader).

    Attributes
    ----------
    layers : mapping name -> array-like (n, d), float
        The activations of each layer to probe.
    logits : array-like (n, C), float
        The network's logits (the DNN's ``q`` is their softmax).
    labels : ndarray (n,), int
        Train: the labels the network was trained on (fit targets; train accuracy is measured
        against them). Test: the ground truth.
    labels_clean : ndarray (n,), int, optional
        Train only: the ground truth, when it differs from ``labels`` (adds ``accuracy_clean``).
    rows : ndarray of int, optional
        Train only: use only these rows (e.g. those the network was trained on, ``--trained-rows``).
    n_classes : int, optional
        Classes (default: the logits' width; the larger of the two is used).
    """

    layers: Mapping[str, Any]
    logits: Any
    labels: np.ndarray
    labels_clean: np.ndarray | None = None
    rows: np.ndarray | None = None
    n_classes: int | None = None


@dataclass
class ProbeResult:
    """What :func:`run_probe` returns.

    Attributes
    ----------
    rows : list of dict
        One per (step when given, layer, classifier incl. ``dnn``, split): ``layer``, ``dim`` plus
        :func:`probe_layer`'s metrics (and ``step`` for checkpoints).
    layers_info : list of dict
        One per (step, layer): ``step``, ``layer``, ``dim``, ``n_train``, ``n_test``, ``time_s``,
        ``pca``, ``fit_samples``, ``converged``, ``timing_s`` (``read_s`` then probe_layer's stages).
    memorization_step : dict layer -> step or None, or None
        With checkpoints: the first step at which the DNN's train accuracy reaches 100 %.
    setup_s : float
        Wall seconds before the first layer: loading the exact search's engine (the torch import,
        about 1-2 s in a fresh process; 0 when already loaded), kept out of the layers' stages.
    """

    rows: list[dict[str, Any]]
    layers_info: list[dict[str, Any]]
    memorization_step: dict[str, float | None] | None = None
    setup_s: float = 0.0


def run_probe(
    runs: Sequence[tuple[float | None, ProbeSplit, ProbeSplit | None]],
    layers: Sequence[str],
    classifiers: Sequence[str] = CLASSIFIERS,
    config: ProbeConfig | None = None,
    *,
    max_train: int | None = None,
    max_test: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> ProbeResult:
    """Probe every layer of one network, or of several checkpoints of one training run (§3, Figures 1–5).

    For each run ``(step, train, test)``: a seeded class-stratified subsample of at most
    ``max_train`` training rows (of ``train.rows`` when given) and ``max_test`` test rows
    (``config.random_state``), then per layer :func:`probe_layer` on those rows; each layer is read
    once per split. ``step`` is None for a single network; with steps the rows carry ``step`` and
    the result the memorisation step (:func:`memorization_step`, Figures 6–7).

    Parameters
    ----------
    runs : sequence of (step or None, ProbeSplit, ProbeSplit or None)
    layers : layer names (keys of each split's ``layers``)
    classifiers : subset of {"knn", "svm", "lr"}
    config : ProbeConfig (k = 30, exact search, pca_dim 256, fit_samples 10 000, C = 1, seed 0)
    max_train, max_test : int, optional   row caps (None or 0: all rows)
    progress : callable(str), optional     told ``"[step S ]LAYER: SECONDSs"`` after each layer

    Returns
    -------
    ProbeResult

    Raises
    ------
    InputError
        Unknown classifiers, ``k`` above the training rows (checked by :class:`LayerProbe`), fewer
        than 2 classes for svm / lr.
    """
    from knntools.utils import softmax

    cfg = config or ProbeConfig()
    clf = parse_classifiers(list(classifiers))
    with_steps = any(step is not None for step, _, _ in runs)
    rows: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    t_setup = time.perf_counter()
    if "knn" in clf and cfg.backend == "exact":
        import torch  # noqa: F401  the exact search's top-k engine, loaded once here, outside the layers' timings
    setup_s = time.perf_counter() - t_setup
    for step, tr, te in runs:
        y_all = np.asarray(tr.labels)
        base = np.arange(len(y_all)) if tr.rows is None else np.asarray(tr.rows, dtype=np.int64)
        r_tr = base[stratified_subsample(y_all[base], max_train or None, cfg.random_state)]
        full_tr = len(r_tr) == len(y_all)
        y_tr = y_all[r_tr]
        y_clean = None if tr.labels_clean is None else np.asarray(tr.labels_clean)[r_tr]
        if y_clean is not None and np.array_equal(y_clean, y_tr):
            y_clean = None
        q_tr = softmax(_take(tr.logits, None if full_tr else r_tr), axis=1)
        n_classes = max(tr.n_classes or 0, q_tr.shape[1])
        if te is not None:
            y_te_all = np.asarray(te.labels)
            r_te = stratified_subsample(y_te_all, max_test or None, cfg.random_state)
            full_te = len(r_te) == len(y_te_all)
            y_te = y_te_all[r_te]
            q_te = softmax(_take(te.logits, None if full_te else r_te), axis=1)
        for name in layers:
            t1 = time.perf_counter()
            X_tr = _take(tr.layers[name], None if full_tr else r_tr)  # each layer read once, both splits
            X_te = _take(te.layers[name], None if full_te else r_te) if te is not None else None
            read_s = time.perf_counter() - t1
            lrows, info = probe_layer(X_tr, y_tr, q_tr, X_te, q_te if te is not None else None,
                                      y_te if te is not None else None, clf, n_classes, cfg, y_train_clean=y_clean)
            dt = time.perf_counter() - t1
            for r in lrows:
                rows.append({**({"step": step} if with_steps else {}), "layer": name, "dim": int(X_tr.shape[1]), **r})
            info["timing_s"] = {"read_s": read_s, **info["timing_s"]}
            infos.append({"step": step, "layer": name, "dim": int(X_tr.shape[1]), "n_train": int(len(X_tr)),
                          "n_test": int(len(X_te)) if X_te is not None else 0, "time_s": dt, **info})
            if progress is not None:
                progress(f"{'step ' + format(step, 'g') + ' ' if with_steps else ''}{name}: {dt:.1f}s")
            del X_tr, X_te
    memo = None
    if with_steps:
        memo = {}
        for name in layers:
            sel = [r for r in rows if r["layer"] == name and r["classifier"] == "dnn" and r["split"] == "train"]
            memo[name] = memorization_step([r["step"] for r in sel], [r["accuracy"] for r in sel])
    return ProbeResult(rows=rows, layers_info=infos, memorization_step=memo, setup_s=setup_s)
