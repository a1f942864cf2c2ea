"""Oversampling imbalanced training sets with a kNN-mimicking model's predicted neighbour vectors
(Xu & Klabjan §4 "Oversampling"), with SMOTE and ADASYN (imbalanced-learn) for comparison, and a
downstream evaluation of classifiers trained on the original vs the oversampled data.

Model oversampling (the paper's procedure): a trained V2VSLS (or MNkNN_VEC) predicts K out-of-sample
feature vectors ``X_1^P … X_K^P`` and their labels ``Y_1^P … Y_K^P`` for every training sample;
in random order of the samples, a synthetic pair ``(X_t^P, argmax Y_t^P)`` is added when its label
is a minority class still short of the majority count, until the classes are balanced or no
training sample is left. The paper stops there, and so does this module by default
(``max_rounds=1``: at most K synthetic rows per real training row, never a class above the
majority count); ``max_rounds > 1`` or ``None`` (a documented deviation) lets the synthetic rows of
the previous round become sources themselves, which can flood a tiny class with descendants of its
few real rows. ``label_from="source"`` is a variant: only
minority samples are sources and their vectors take the source's class.
The paper recommends training the model for oversampling with lam = 1.3 and alpha = 3.

Everything here works on arrays: no files, no printing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from knntools.errors import InputError, KnnToolsError

METHODS = ("v2vsls", "mnknn-vec", "smote", "adasyn")
CLASSIFIERS = ("rf", "ffn", "gb", "logreg", "knn")
CLASSIFIER_NAMES = {
    "rf": "random forest (200 trees)",
    "ffn": "feed-forward net (MLP 64-64, Adam)",
    "gb": "histogram gradient boosting",
    "logreg": "logistic regression",
    "knn": "5-NN on standardised features",
}


@dataclass
class OversampleResult:
    """Result of an oversampler.

    Attributes
    ----------
    X : float32 [N + S, D]   original rows first, then the S synthetic rows
    y : int64 [N + S]
    synthetic : bool [N + S]
    source : int64 [N + S]   for synthetic rows the original row they were generated from (−1 for
        originals and for SMOTE/ADASYN rows, whose parents imbalanced-learn does not report)
    counts_before, counts_after : int64 [C]
    """

    X: np.ndarray
    y: np.ndarray
    synthetic: np.ndarray
    source: np.ndarray
    counts_before: np.ndarray
    counts_after: np.ndarray


def class_counts(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Samples per class, int64 [n_classes]."""
    return np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.int64)


def model_oversample(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    generate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    *,
    label_from: str = "predicted",
    max_rounds: int | None = 1,
    chunk_rows: int = 256,
    random_state: Any = 0,
) -> OversampleResult:
    """Balance classes with vectors predicted by a model (paper §4 "Oversampling").

    ``label_from="predicted"`` (the paper's procedure): every training sample, in random order,
    yields K synthetic samples ``(X_t^P, argmax Y_t^P)`` — the predicted neighbour vectors with the
    model's predicted neighbour labels — and a synthetic sample is kept when its label is a class
    still short of the majority count, until every class is balanced or the sources run out.
    ``label_from="source"``: only the minority samples are sources and their vectors take the
    source's class.

    Parameters
    ----------
    X : float32 [N, D]   training rows (in the space ``generate`` works in)
    y : int64 [N]
    n_classes : int
    generate : callable ``rows [m, D] -> (vectors [m, K, D], labels int64 [m, K])``
        The model's predicted neighbour vectors ``X_t^P`` and labels ``argmax Y_t^P``.
    label_from : {"predicted", "source"}, default "predicted"
    max_rounds : int or None, default 1
        1 = one pass over the original training samples (the paper: each yields at most K synthetic
        rows); n > 1 = up to n passes, each with the previous pass's synthetic rows as sources;
        ``None`` = such passes until balanced (at most 50). Values below 1 raise.
    chunk_rows : int, default 256   sources generated per call
    random_state : int, Generator or None

    Returns
    -------
    OversampleResult (``source`` = the original row each synthetic row descends from)

    Raises
    ------
    InputError
        Labels out of range, unknown ``label_from``, or ``generate`` returning wrong shapes.
    """
    from knntools.methods import check_labels
    from knntools.utils import as_generator

    if label_from not in ("predicted", "source"):
        raise InputError(f"label_from {label_from!r}: expected predicted or source")
    rng = as_generator(random_state)
    X = np.asarray(X, dtype=np.float32)
    y = check_labels(y, n_classes)
    counts = class_counts(y, n_classes)
    deficit = counts.max() - counts
    deficit[counts == 0] = 0  # nothing to imitate for an absent class
    new_X: list[np.ndarray] = []
    new_y: list[np.ndarray] = []
    new_src: list[np.ndarray] = []
    if label_from == "source":
        src_rows = np.flatnonzero(deficit[y] > 0)
    else:
        src_rows = np.arange(len(y))
    src_X, src_y, src_ids = X[src_rows], y[src_rows], src_rows.astype(np.int64)
    if max_rounds is not None and int(max_rounds) < 1:
        raise InputError(f"max_rounds={max_rounds}: expected at least 1 pass (None = until balanced)")
    rounds = 50 if max_rounds is None else int(max_rounds)
    for _ in range(rounds):
        if deficit.sum() <= 0 or len(src_X) == 0:
            break
        order = rng.permutation(len(src_X))
        got_X: list[np.ndarray] = []
        got_y: list[np.ndarray] = []
        got_src: list[np.ndarray] = []
        for s in range(0, len(order), chunk_rows):
            if deficit.sum() <= 0:
                break
            take = order[s : s + chunk_rows]
            if label_from == "source":
                take = take[deficit[src_y[take]] > 0]
                if len(take) == 0:
                    continue
            V, L = generate(src_X[take])
            V, L = np.asarray(V, dtype=np.float32), np.asarray(L, dtype=np.int64)
            if V.ndim != 3 or V.shape[0] != len(take) or V.shape[2] != X.shape[1] or L.shape != V.shape[:2]:
                raise InputError(f"generator returned vectors {V.shape} and labels {L.shape}; expected ({len(take)}, K, {X.shape[1]}) and ({len(take)}, K)")
            K = V.shape[1]
            flat = V.reshape(-1, X.shape[1])
            lab = np.repeat(src_y[take], K) if label_from == "source" else L.reshape(-1)
            ids = np.repeat(src_ids[take], K)
            ok = (lab >= 0) & (lab < n_classes)
            keep = np.zeros(len(lab), dtype=bool)
            for c in np.unique(lab[ok]):
                pos = np.flatnonzero(lab == c)[: int(max(0, deficit[c]))]
                keep[pos] = True
                deficit[c] -= len(pos)
            got_X.append(flat[keep])
            got_y.append(lab[keep])
            got_src.append(ids[keep])
        if not got_X or sum(len(a) for a in got_X) == 0:
            break
        new_X += got_X
        new_y += got_y
        new_src += got_src
        src_X, src_y, src_ids = np.concatenate(got_X), np.concatenate(got_y), np.concatenate(got_src)
    S = sum(len(a) for a in new_X)
    X_out = np.concatenate([X, *new_X]) if S else X.copy()
    y_out = np.concatenate([y, *new_y]) if S else y.copy()
    syn = np.zeros(len(y_out), dtype=bool)
    syn[len(y):] = True
    src = np.concatenate([np.full(len(y), -1, dtype=np.int64), *new_src]) if S else np.full(len(y), -1, dtype=np.int64)
    return OversampleResult(X_out, y_out, syn, src, counts, class_counts(y_out, n_classes))


def check_smote_neighbors(y: np.ndarray, n_classes: int, k_neighbors: int, where: str = "labels") -> None:
    """Raise :class:`InputError` if a minority class has too few samples for SMOTE/ADASYN's k neighbours.

    SMOTE needs ``k_neighbors + 1`` samples in every class it oversamples (the sample itself plus
    its k neighbours within the class).
    """
    counts = class_counts(y, n_classes)
    top = counts.max()
    for c, n in enumerate(counts):
        if 0 < n < top and n < k_neighbors + 1:
            raise InputError(f"{where}: class {c} has {n} samples, fewer than SMOTE's k_neighbors + 1 = {k_neighbors + 1}; "
                             f"expected at least {k_neighbors + 1} (lower --k-neighbors)")


def imblearn_oversample(X: np.ndarray, y: np.ndarray, n_classes: int, method: str = "smote", *, k_neighbors: int = 5,
                        random_state: Any = 0) -> OversampleResult:
    """Balance classes with imbalanced-learn's SMOTE (Chawla et al. 2002) or ADASYN (He et al. 2008).

    Parameters
    ----------
    X : float32 [N, D] (standardise first: both search neighbours in Euclidean distance)
    y : int64 [N]
    method : {"smote", "adasyn"}
    k_neighbors : int, default 5 (ADASYN's ``n_neighbors``)
    random_state : int

    Returns
    -------
    OversampleResult (imbalanced-learn appends the synthetic rows after the originals; ADASYN
    balances only approximately by design)

    Raises
    ------
    InputError
        Unknown method, or a class with fewer than ``k_neighbors + 1`` samples.
    KnnToolsError
        imbalanced-learn refused (e.g. ADASYN found no sample to generate from).
    """
    from imblearn.over_sampling import ADASYN, SMOTE

    from knntools.methods import check_labels

    y = check_labels(y, n_classes)
    if method not in ("smote", "adasyn"):
        raise InputError(f"method {method!r}: expected smote or adasyn")
    check_smote_neighbors(y, n_classes, k_neighbors)
    seed = int(random_state) if isinstance(random_state, (int, np.integer)) else 0
    sampler = SMOTE(k_neighbors=k_neighbors, random_state=seed) if method == "smote" else ADASYN(n_neighbors=k_neighbors, random_state=seed)
    try:
        Xo, yo = sampler.fit_resample(np.asarray(X, dtype=np.float64), y)
    except (ValueError, RuntimeError) as exc:
        raise KnnToolsError(f"{method}: imbalanced-learn failed: {str(exc).splitlines()[0][:200]}") from None
    n = len(y)
    syn = np.zeros(len(yo), dtype=bool)
    syn[n:] = True
    return OversampleResult(np.asarray(Xo, dtype=np.float32), np.asarray(yo, dtype=np.int64), syn,
                            np.full(len(yo), -1, dtype=np.int64), class_counts(y, n_classes), class_counts(yo, n_classes))


def make_classifier(name: str, random_state: int = 0) -> Any:
    """A scikit-learn classifier for the downstream comparison (see :data:`CLASSIFIER_NAMES`).

    Raises
    ------
    InputError
        Unknown name.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier

    if name == "rf":
        return RandomForestClassifier(n_estimators=200, n_jobs=2, random_state=random_state)
    if name == "ffn":
        return MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=300, early_stopping=True, random_state=random_state)
    if name == "gb":
        return HistGradientBoostingClassifier(random_state=random_state)
    if name == "logreg":
        return LogisticRegression(max_iter=2000)
    if name == "knn":
        return KNeighborsClassifier(n_neighbors=5)
    raise InputError(f"classifier {name!r} is unknown; expected one of {', '.join(CLASSIFIERS)}")


def evaluate_downstream(train_sets: dict[str, tuple[np.ndarray, np.ndarray]], X_test: np.ndarray, y_test: np.ndarray, n_classes: int,
                        classifiers: Sequence[str] = CLASSIFIERS, *, random_state: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """Train each classifier on each training set and score it on the test set.

    Parameters
    ----------
    train_sets : name → (X [n, D] standardised, y [n]), e.g. ``{"original": …, "oversampled": …}``
    X_test, y_test : standardised test rows and labels
    classifiers : names from :data:`CLASSIFIERS`

    Returns
    -------
    ``{train_set: {classifier: {"macro_f1", "minority_f1", "accuracy"}}}`` where ``minority_f1`` is
    the F1 of the smallest class of the first training set.
    """
    from sklearn.metrics import accuracy_score, f1_score

    first = next(iter(train_sets.values()))
    minority = int(np.argmin(np.where(class_counts(first[1], n_classes) > 0, class_counts(first[1], n_classes), np.iinfo(np.int64).max)))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, (Xs, ys) in train_sets.items():
        out[set_name] = {}
        for clf_name in classifiers:
            clf = make_classifier(clf_name, random_state)
            clf.fit(Xs, ys)
            p = clf.predict(X_test)
            out[set_name][clf_name] = {
                "macro_f1": float(f1_score(y_test, p, labels=list(range(n_classes)), average="macro", zero_division=0)),
                "minority_f1": float(f1_score(y_test, p, labels=[minority], average="macro", zero_division=0)),
                "accuracy": float(accuracy_score(y_test, p)),
            }
    return out
