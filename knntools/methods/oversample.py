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

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from knntools.errors import InputError, KnnToolsError

METHODS = ("v2vsls", "mnknn-vec", "smote", "adasyn")
#: Methods that generate with a seq2knn model (need a checkpoint).
MODEL_METHODS = ("v2vsls", "mnknn-vec")
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
    info : dict   what made the rows (:func:`oversample`: the checkpoint's model, K, lam, alpha,
        max_rounds, label_from; or SMOTE/ADASYN's n_neighbors)
    """

    X: np.ndarray
    y: np.ndarray
    synthetic: np.ndarray
    source: np.ndarray
    counts_before: np.ndarray
    counts_after: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


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
    """Raise :class:`InputError` if a class SMOTE/ADASYN oversamples has too few samples for k neighbours.

    SMOTE needs ``k_neighbors + 1`` samples in every class it oversamples (the sample itself plus
    its k neighbours within the class): the bound of :func:`knntools.search.base.check_k` with the
    class's rows as candidates, each row's own row excluded.

    Raises
    ------
    InputError
        ``k_neighbors`` < 1, or a minority class with ``k_neighbors`` or fewer samples (the message
        names the class: ``"<where>: class C: k=K exceeds the M candidate rows ..."``).
    """
    from knntools.search.base import check_k

    counts = class_counts(y, n_classes)
    top = counts.max()
    for c, n in enumerate(counts):
        if 0 < n < top:
            check_k(k_neighbors, int(n), exclude_self=True, source=f"{where}: class {c}", param="k")


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


def check_method(method: str) -> str:
    """Return ``method`` normalised (``mnknn_vec`` → ``mnknn-vec``) if it is one of :data:`METHODS`.

    Raises
    ------
    InputError
        Unknown method.
    """
    m = str(method).lower().replace("_", "-")
    if m not in METHODS:
        raise InputError(f"method={method!r}: expected one of {', '.join(METHODS)}", param="method")
    return m


def check_classifiers(names: str | Sequence[str]) -> list[str]:
    """Parse ``"rf,ffn,gb"`` (or a sequence) into classifier names from :data:`CLASSIFIERS`.

    Raises
    ------
    InputError
        An unknown name, or none.
    """
    given = [c.strip() for c in (names.split(",") if isinstance(names, str) else names) if str(c).strip()]
    bad = [c for c in given if c not in CLASSIFIERS]
    if bad or not given:
        raise InputError(f"classifiers={','.join(given)!r}: unknown {', '.join(bad) or '(empty)'}; expected names from {', '.join(CLASSIFIERS)}", param="classifiers")
    return given


def model_generator(net: Any, ckpt: dict[str, Any], *, random_state: Any = 0) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The ``generate`` callable of :func:`model_oversample` for a loaded seq2knn vector model.

    Parameters
    ----------
    net, ckpt : the model and the checkpoint dict from :func:`knntools.methods.seq2knn.load_checkpoint`
        (memory rows, memory size and draws, metric are read from the checkpoint)
    random_state : int, Generator or None   MNkNN memory draws

    Returns
    -------
    callable ``rows [m, D] (standardised) -> (vectors float32 [m, K, D], labels int64 [m, K])``:
    the predicted neighbour vectors ``X_t^P`` and labels (paper §4 "Oversampling").
    """
    from knntools.methods import seq2knn as s2k
    from knntools.utils import as_generator

    rng = as_generator(random_state)
    mem = (ckpt["memory_x"].numpy(), ckpt["memory_y"].numpy()) if "memory_x" in ckpt else None
    h = ckpt["hyper"]
    labeler = s2k.ReferenceLabeler(mem[0], mem[1], metric=str(h.get("metric", "l2"))) if mem is not None and ckpt["model"] == "v2vs" else mem

    def generate(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = s2k.predict(net, rows, name=ckpt["model"], memory=mem, memory_size=int(h.get("memory_size", 64)), reference=labeler,
                        memory_draws=int(h.get("memory_draws", 5)), random_state=int(rng.integers(0, 2**31 - 1)))
        return p["step_vectors"], p["step_labels"]

    return generate


def oversample(X: np.ndarray, y: np.ndarray, n_classes: int, method: str = "v2vsls", *, model: Any = None, n_neighbors: int = 5,
               label_from: str = "predicted", max_rounds: int | None = 1, random_state: int = 0, where: str = "labels") -> OversampleResult:
    """Balance a training set with one of :data:`METHODS`; rows in and out are in the original units.

    ``v2vsls`` / ``mnknn-vec`` (Xu & Klabjan §4 "Oversampling"): the seq2knn checkpoint ``model``
    predicts K neighbour vectors and labels for the training rows in its standardised space
    (:func:`model_oversample` with :func:`model_generator`); ``smote`` / ``adasyn``
    (:func:`imblearn_oversample`) run on the rows standardised with their own mean and std. The
    synthetic rows are mapped back to the original units.

    Parameters
    ----------
    X : float32 [N, D];  y : int64 [N];  n_classes : int
    method : str, default "v2vsls"   one of :data:`METHODS`
    model : path of a seq2knn checkpoint, or the ``(net, ckpt, scaler)`` of
        :func:`knntools.methods.seq2knn.load_checkpoint` — required by the model methods; a v2vsls,
        v2vs or mnknn-vec model for ``D`` features and ``n_classes`` classes
    n_neighbors : int, default 5   SMOTE's ``k_neighbors`` / ADASYN's ``n_neighbors``
    label_from : {"predicted", "source"}   see :func:`model_oversample`
    max_rounds : int or None, default 1   see :func:`model_oversample`; 0 = None (until balanced)
    random_state : int, default 0
    where : str, default "labels"   what ``y`` is, in error messages (e.g. ``"train.h5: labels"``)

    Returns
    -------
    OversampleResult   with ``X`` in the original units and ``info`` describing the method

    Raises
    ------
    InputError
        Unknown method, a model method without ``model`` (or SMOTE/ADASYN with one), a checkpoint
        for other features/classes or without a vector head, too few samples for ``n_neighbors``,
        a single class, labels out of range.
    """
    from knntools.methods import check_labels
    from knntools.methods import seq2knn as s2k

    method = check_method(method)
    if label_from not in ("predicted", "source"):
        raise InputError(f"label_from={label_from!r}: expected predicted or source", param="label_from")
    X = np.asarray(X, dtype=np.float32)
    y = check_labels(y, n_classes, where=where)
    if len(np.unique(y)) < 2:
        raise InputError(f"{where}: a single class present; expected at least two classes to balance")
    if method not in MODEL_METHODS:
        if model is not None:
            raise InputError(f"model={model}: only used with method v2vsls or mnknn-vec (got method {method})", param="model")
        scaler = s2k.Standardizer(*s2k.stream_moments(X))
        check_smote_neighbors(y, n_classes, n_neighbors, where=where)
        res = imblearn_oversample(scaler(X), y, n_classes, method, k_neighbors=n_neighbors, random_state=random_state)
        res.info = {"n_neighbors": n_neighbors}
    else:
        if model is None:
            raise InputError(f"method={method}: expected model=CHECKPOINT.pt (a {method} checkpoint written by `knntools seq2knn`)", param="model")
        net, ck, scaler = s2k.load_checkpoint(model) if not isinstance(model, tuple) else model
        where = str(model) if not isinstance(model, tuple) else "checkpoint"
        if ck["n_features"] != X.shape[1]:
            raise InputError(f"{where}: checkpoint was trained on {ck['n_features']} features but the rows have {X.shape[1]}; expected a model for this feature dimension")
        if ck["n_classes"] != n_classes:
            raise InputError(f"{where}: checkpoint has {ck['n_classes']} classes but the labels have {n_classes}; expected the same classes")
        if ck["model"] not in s2k.VECTOR_MODELS:
            raise InputError(f"{where}: model {ck['model']} predicts no feature vectors; expected a v2vsls, v2vs or mnknn-vec checkpoint")
        generate = model_generator(net, ck, random_state=np.random.default_rng(random_state))
        res = model_oversample(scaler(X), y, n_classes, generate, label_from=label_from, max_rounds=max_rounds or None, random_state=random_state)
        h = ck["hyper"]
        res.info = {"checkpoint": where, "checkpoint_model": ck["model"], "K": int(h["K"]), "lam": h.get("lam"), "alpha": h.get("alpha"),
                    "max_rounds": max_rounds, "label_from": label_from}
    res.X = np.concatenate([X, scaler.inverse(res.X[len(y):])]) if len(res.X) > len(y) else X
    return res


def evaluate_oversampling(X: np.ndarray, y: np.ndarray, result: OversampleResult, X_test: np.ndarray, y_test: np.ndarray, n_classes: int,
                          classifiers: Sequence[str] = ("rf", "ffn", "gb"), *, name: str = "oversampled",
                          random_state: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """Downstream comparison (paper §4, Figure 4): classifiers trained on the original rows and on the
    oversampled rows, scored on the test rows; everything standardised with the original rows' mean/std.

    Parameters
    ----------
    X, y : the original training rows (float32 [N, D]) and labels;  result : from :func:`oversample`
    X_test, y_test : test rows [M, D] and labels;  n_classes : int
    classifiers : names from :data:`CLASSIFIERS`;  name : key of the oversampled set
    random_state : int

    Returns
    -------
    ``{"original": {...}, name: {...}}`` as :func:`evaluate_downstream`

    Raises
    ------
    InputError
        Test rows of another width, test labels out of range, unknown classifier.
    """
    from knntools.methods import check_labels
    from knntools.methods import seq2knn as s2k

    y_test = check_labels(y_test, n_classes, where="test labels")
    if np.asarray(X_test).shape[1] != np.asarray(X).shape[1]:
        raise InputError(f"test rows have {np.asarray(X_test).shape[1]} features but the training rows have {np.asarray(X).shape[1]}; expected the same width")
    sc = s2k.Standardizer(*s2k.stream_moments(X))
    return evaluate_downstream({"original": (sc(X), y), name: (sc(result.X), result.y)}, sc(X_test), y_test, n_classes,
                               check_classifiers(classifiers), random_state=random_state)
