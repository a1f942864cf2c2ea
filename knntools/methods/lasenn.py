"""LaSeNN: blend a network's output with the outputs of its nearest training neighbours.

Schneider, *Improving classifier decision boundaries using nearest neighbors* (Algorithm 1,
"LAtent-SElf-kNN"). For a query :math:`x_q` with network output :math:`C(x_q)` and its ``k``
nearest training samples :math:`NN_k` in the activation space of layer ``i`` (default: the
penultimate layer, squared L2 — the same neighbours as plain L2 — or cosine, §3.3):

.. math::

    X_w = w_q \\cdot C(x_q) + (1 - w_q) \\cdot \\frac{1}{k} \\sum_{x \\in NN_k} C(x),
    \\qquad \\hat y = \\arg\\max_j X_{w,j}

Defaults follow Algorithm 1: ``k = 3``, ``w_q = 0.88``. ``C`` is the network's output, i.e. the
softmax of the stored logits (``output="softmax"``) or, optionally, the raw logits
(``output="logits"``). The neighbours' outputs are the network's outputs on the *training*
samples, not their labels.

§3.6 (ImageNet): neighbours are also searched for the horizontally flipped query; the two
neighbour lists are merged (union, duplicates removed) and the ``k`` closest kept
(:func:`merge_neighbors`). The query's own output is not flipped.

§3.2 / Table 2 statistics (:func:`analyze`): pureness ``P`` (number of the ``k`` neighbours whose
training label equals the query's class), ``avgL2`` (mean Euclidean distance of the neighbours to
the query, always Euclidean whatever metric found them), the Pearson correlation
``corr(P, avgL2)`` with its p-value, ``samePred`` (fraction of unchanged predictions) and
``avgL2`` over correctly / wrongly classified (by the network) and changed samples.

Choosing ``k`` and ``w_q`` (issue 17). The paper fixes ``k = 3, w_q = 0.88`` (Algorithm 1,
lines 3–4; ``w_q = 0.94`` on ImageNet, §3.6) and reports the sensitivity to ``w_q`` and ``k``
(Tables 5–6) on the test set; it gives no procedure for choosing them. The defaults here are the
paper's fixed values. When they are to be chosen from data, :func:`select_w_q` picks the pair with
the best accuracy on a seeded, class-stratified validation split held out from the *training*
rows (those rows are removed from the neighbour index while choosing); test labels are never
read. :func:`run_lasenn` is the whole method as one call (search once, blend, sweep, select,
analyse).

Everything here works on arrays; no files, no printing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from knntools.errors import InputError
from knntools.methods._splits import DEFAULT_VAL_FRACTION, validation_split
from knntools.search.base import check_k
from knntools.utils import softmax

#: Network outputs C(x) that can be blended.
OUTPUTS = ("softmax", "logits")

#: Algorithm 1 defaults.
DEFAULT_K = 3
DEFAULT_W_Q = 0.88
#: The w_q values of the paper's Table 5 (the candidates :func:`run_lasenn` selects among when only
#: one ``w_q`` is given).
W_Q_GRID = (0.0, 0.52, 0.76, 0.88, 0.94, 0.97)
#: Where ``select_on`` may choose (k, w_q): nowhere (the given values) or a held-out validation split.
SELECT_ON = ("none", "validation")
#: The paper's default neighbour layer per architecture (Schneider §4: "For VGG-13, we use as
#: default, the third last convolutional layer for layer i, while for ResNet-10, we use the output of
#: the second last 'BasicBlock'"), as named by :mod:`knntools.models.architectures`.
PAPER_LAYERS = {"vgg13": "conv8", "resnet10": "layer3"}


def paper_layer(model_arch: Any) -> str:
    """The neighbour layer LaSeNN uses by default for a network architecture.

    Parameters
    ----------
    model_arch : str or None
        The activation file's ``model_arch`` attribute (``knntools embed`` writes it).

    Returns
    -------
    str
        ``conv8`` for ``vgg13`` (third-last conv), ``layer3`` for ``resnet10`` (second-last
        BasicBlock) — the paper's settings — and ``penultimate`` for any other architecture (the
        paper gives no layer for them; the last hidden layer is this tool's choice).
    """
    return PAPER_LAYERS.get(str(model_arch or "").lower(), "penultimate")


def check_w_q(w_q: float, name: str = "w_q") -> float:
    """Return ``w_q`` as float if ``0 <= w_q <= 1``.

    Raises
    ------
    InputError
        ``w_q`` outside [0, 1] or not a number.
    """
    try:
        v = float(w_q)
    except (TypeError, ValueError):
        raise InputError(f"{name} {w_q!r}: expected a number in [0, 1]") from None
    if not (0.0 <= v <= 1.0) or not np.isfinite(v):
        raise InputError(f"{name} {w_q}: expected a weight in [0, 1]")
    return v


def check_output(output: str) -> str:
    """Validate the network-output choice (one of :data:`OUTPUTS`)."""
    if output not in OUTPUTS:
        raise InputError(f"network output {output!r}: expected one of {', '.join(OUTPUTS)}")
    return output


def network_outputs(logits: np.ndarray, output: str = "softmax") -> np.ndarray:
    """The network output ``C(x)`` from stored logits.

    Parameters
    ----------
    logits : ndarray of shape (n, C), float
    output : {"softmax", "logits"}, default "softmax"

    Returns
    -------
    ndarray of shape (n, C), float64
        Softmax probabilities, or the logits themselves.
    """
    check_output(output)
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise InputError(f"logits: expected a 2-D array (n, n_classes), got shape {z.shape}")
    return softmax(z, axis=1) if output == "softmax" else z


def merge_neighbors(
    d1: np.ndarray, i1: np.ndarray, d2: np.ndarray, i2: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge the neighbours of a query and of its flipped version (§3.6): union, closest ``k``.

    A training row found by both keeps its smaller distance (and counts once).

    Parameters
    ----------
    d1, i1 : ndarray of shape (n, k1)
        Distances (ascending) and training rows for the original queries.
    d2, i2 : ndarray of shape (n, k2)
        The same for the flipped queries (same metric).
    k : int
        Neighbours to keep, ``k <= k1 + k2`` and at most the number of distinct rows found.

    Returns
    -------
    distances : ndarray (n, k), float32, ascending
    indices : ndarray (n, k), int64
    from_flipped : ndarray (n, k), bool
        True where the kept neighbour (at its kept distance) came from the flipped query.
    """
    d = np.concatenate([d1, d2], axis=1).astype(np.float64)
    idx = np.concatenate([i1, i2], axis=1).astype(np.int64)
    flip = np.concatenate([np.zeros(i1.shape, bool), np.ones(i2.shape, bool)], axis=1)
    n = len(d)
    out_d = np.empty((n, k), np.float32)
    out_i = np.empty((n, k), np.int64)
    out_f = np.empty((n, k), bool)
    # Per query: sort by (distance, original before flipped); drop repeats of a row after its first.
    for r in range(n):
        o = np.lexsort((flip[r], d[r]))
        rows = idx[r, o]
        _, first = np.unique(rows, return_index=True)
        keep = np.sort(first)[:k]
        if len(keep) < k:
            raise InputError(f"only {len(keep)} distinct neighbours found for query {r}; expected at least k={k}")
        sel = o[keep]
        out_d[r] = d[r, sel]
        out_i[r] = idx[r, sel]
        out_f[r] = flip[r, sel]
    return out_d, out_i, out_f


def blend(query_outputs: np.ndarray, neighbor_mean: np.ndarray, w_q: float) -> np.ndarray:
    """Algorithm 1, line 9: ``w_q * C(x_q) + (1 - w_q) * mean_{NN} C(x)`` (float64 [n, C])."""
    w = check_w_q(w_q)
    return w * np.asarray(query_outputs, np.float64) + (1.0 - w) * np.asarray(neighbor_mean, np.float64)


def neighbor_mean(train_outputs: np.ndarray, indices: np.ndarray, k: int | None = None) -> np.ndarray:
    """Mean network output of the first ``k`` neighbours of each query.

    Parameters
    ----------
    train_outputs : ndarray (n_train, C)
    indices : ndarray (n, >= k), int rows of ``train_outputs`` (nearest first)
    k : int, optional
        Use the first ``k`` columns of ``indices`` (default: all).

    Returns
    -------
    ndarray (n, C), float64
    """
    ind = np.asarray(indices)
    if k is not None:
        if k > ind.shape[1]:
            raise InputError(f"k={k} but only {ind.shape[1]} neighbours were searched")
        ind = ind[:, :k]
    return np.asarray(train_outputs, np.float64)[ind].mean(axis=1)


def lasenn_scores(query_outputs: np.ndarray, train_outputs: np.ndarray, indices: np.ndarray, k: int, w_q: float) -> np.ndarray:
    """Blended scores ``X_w`` (Algorithm 1, line 9) for every query; float64 (n, C)."""
    return blend(query_outputs, neighbor_mean(train_outputs, indices, k), w_q)


def change_summary(original: np.ndarray, new: np.ndarray, y_true: np.ndarray | None) -> dict[str, Any]:
    """Compare LaSeNN predictions with the network's.

    Returns
    -------
    dict
        ``n``, ``n_changed``, ``same_pred`` (fraction unchanged); with ``y_true``:
        ``accuracy_original``, ``accuracy``, ``delta``, ``n_changed_to_right`` (wrong → right),
        ``n_changed_to_wrong`` (right → wrong), ``n_changed_wrong_to_wrong``.
    """
    original = np.asarray(original)
    new = np.asarray(new)
    changed = original != new
    res: dict[str, Any] = {"n": int(len(new)), "n_changed": int(changed.sum()),
                           "same_pred": float(1.0 - changed.mean()) if len(new) else float("nan")}
    if y_true is not None:
        y = np.asarray(y_true)
        ok0, ok1 = original == y, new == y
        res.update({
            "accuracy_original": float(ok0.mean()),
            "accuracy": float(ok1.mean()),
            "delta": float(ok1.mean() - ok0.mean()),
            "n_changed_to_right": int((changed & ok1).sum()),
            "n_changed_to_wrong": int((changed & ok0).sum()),
            "n_changed_wrong_to_wrong": int((changed & ~ok0 & ~ok1).sum()),
        })
    return res


def sweep(
    query_outputs: np.ndarray,
    train_outputs: np.ndarray,
    indices: np.ndarray,
    ks: Sequence[int],
    w_qs: Sequence[float],
    y_true: np.ndarray | None,
) -> list[dict[str, Any]]:
    """Parameter sensitivity (Tables 5–6) from one neighbour search.

    ``indices`` must hold at least ``max(ks)`` neighbours per query, nearest first; each ``k`` uses
    the first ``k`` columns (identical to a fresh search with that ``k``, up to distance ties).

    Returns
    -------
    list of dict
        One row per ``(k, w_q)`` in the given order: ``k``, ``w_q`` plus :func:`change_summary`.
    """
    original = np.asarray(query_outputs).argmax(1)
    rows = []
    for k in ks:
        mean_k = neighbor_mean(train_outputs, indices, int(k))
        for w in w_qs:
            pred = blend(query_outputs, mean_k, w).argmax(1)
            rows.append({"k": int(k), "w_q": float(w), **change_summary(original, pred, y_true)})
    return rows


def euclidean_to_neighbors(Q: np.ndarray, X: Any, indices: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Euclidean distances from each query to its listed neighbours, float64 (n, k).

    ``X`` may be an array or anything indexable by an int array of rows. Computed in chunks of
    ``chunk`` queries (memory ``chunk * k * d`` floats).
    """
    Q = np.asarray(Q)
    ind = np.asarray(indices, dtype=np.int64)
    out = np.empty(ind.shape, np.float64)
    for s in range(0, len(Q), chunk):
        q = Q[s : s + chunk].astype(np.float64)
        nb = np.asarray(X[ind[s : s + chunk].ravel()], dtype=np.float64).reshape(len(q), ind.shape[1], -1)
        out[s : s + chunk] = np.sqrt(((nb - q[:, None, :]) ** 2).sum(-1))
    return out


def analyze(
    avg_l2: np.ndarray,
    neighbor_labels: np.ndarray,
    y_true: np.ndarray,
    original: np.ndarray,
    new: np.ndarray,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Table 2 statistics of §3.2.

    Parameters
    ----------
    avg_l2 : ndarray (n,)
        Mean Euclidean distance of each query's ``k`` neighbours (see
        :func:`euclidean_to_neighbors`).
    neighbor_labels : ndarray (n, k), int
        Training labels of the neighbours.
    y_true : ndarray (n,), int
        The queries' classes (ground truth).
    original, new : ndarray (n,), int
        Network and LaSeNN predictions.

    Returns
    -------
    summary : dict
        ``k``, ``pureness_mean`` (mean P), ``avg_l2`` (mean avgL2), ``corr_p_avg_l2`` and
        ``corr_p_value`` (Pearson, two-sided; NaN when P or avgL2 is constant), ``same_pred``,
        ``avg_l2_correct`` / ``avg_l2_wrong`` (network correct / wrong), ``avg_l2_changed``
        (NaN when nothing changed), ``n_correct``, ``n_wrong``, ``n_changed``.
    per_sample : dict
        ``pureness`` int64 (n,), ``avg_l2`` float32 (n,).
    """
    from scipy import stats

    avg = np.asarray(avg_l2, np.float64)
    y = np.asarray(y_true)
    P = (np.asarray(neighbor_labels) == y[:, None]).sum(1).astype(np.int64)
    correct = np.asarray(original) == y
    changed = np.asarray(original) != np.asarray(new)
    if len(P) > 2 and P.std() > 0 and avg.std() > 0:
        r, p = stats.pearsonr(P.astype(np.float64), avg)
        r, p = float(r), float(p)
    else:
        r, p = float("nan"), float("nan")

    def m(mask: np.ndarray) -> float:
        return float(avg[mask].mean()) if mask.any() else float("nan")

    summary = {
        "k": int(np.asarray(neighbor_labels).shape[1]),
        "pureness_mean": float(P.mean()),
        "avg_l2": float(avg.mean()),
        "corr_p_avg_l2": r,
        "corr_p_value": p,
        "same_pred": float(1.0 - changed.mean()),
        "avg_l2_correct": m(correct),
        "avg_l2_wrong": m(~correct),
        "avg_l2_changed": m(changed),
        "n_correct": int(correct.sum()),
        "n_wrong": int((~correct).sum()),
        "n_changed": int(changed.sum()),
    }
    return summary, {"pureness": P, "avg_l2": avg.astype(np.float32)}


class LaSeNN:
    """Algorithm 1 as an estimator: fit on training activations + logits, predict test queries.

    Parameters
    ----------
    k : int, default 3
        Neighbours per query (Algorithm 1, line 3).
    w_q : float in [0, 1], default 0.88
        Weight of the query's own output (line 4); ``0`` = neighbours only, ``1`` = the network.
    metric : {"l2", "cosine", "ip"}, default "l2"
        Neighbour metric (line 6; squared L2 ranks like L2). See :mod:`knntools.search`.
    backend : {"exact", "hnsw"}, default "exact"
    output : {"softmax", "logits"}, default "softmax"
        Network output C(x) that is blended.
    **search_params
        Passed to :func:`knntools.search.make_index` (``device``, ``num_threads``, ``M``, ``ef``…).

    Attributes
    ----------
    index_ : NeighborIndex   fitted on the training layer
    train_outputs_ : ndarray (n_train, C), float64   C(x) of every training sample
    n_train_ : int

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 4)).astype(np.float32); logits = rng.normal(size=(50, 3))
    >>> m = LaSeNN(k=3, w_q=0.88).fit(X, logits)
    >>> m.predict(X[:5], logits[:5]).shape
    (5,)
    """

    def __init__(self, k: int = DEFAULT_K, w_q: float = DEFAULT_W_Q, *, metric: str = "l2", backend: str = "exact",
                 output: str = "softmax", **search_params: Any):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k {k!r}: expected a positive integer")
        self.k = int(k)
        self.w_q = check_w_q(w_q)
        self.metric = metric
        self.backend = backend
        self.output = check_output(output)
        self.search_params = dict(search_params)

    def fit(self, X_train: Any, train_logits: np.ndarray) -> "LaSeNN":
        """Index the training activations ``X_train`` (n_train, d) and store ``C(x)`` of each row.

        Raises
        ------
        InputError
            Row counts differ, or ``k`` above the training rows (:func:`knntools.search.base.check_k`).
        """
        from knntools.search import fit_index

        n = X_train.shape[0]
        if len(train_logits) != n:
            raise InputError(f"train_logits has {len(train_logits)} rows but X_train has {n}; expected one row per training sample")
        check_k(self.k, n, source="training set")
        self.train_outputs_ = network_outputs(train_logits, self.output)
        self.index_ = fit_index(self.backend, X_train, metric=self.metric, **self.search_params)  # sharded input: one index per shard
        self.n_train_ = int(n)
        return self

    def kneighbors(self, Q: Any, Q_flipped: Any = None, k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Neighbours of the queries (and of their flipped versions, merged; §3.6).

        Returns
        -------
        distances (n, k) float32 ascending (metric units), indices (n, k) int64 training rows,
        from_flipped (n, k) bool.
        """
        k = self.k if k is None else int(k)
        d, i = self.index_.kneighbors(Q, k)
        if Q_flipped is None:
            return d, i, np.zeros(i.shape, bool)
        if len(Q_flipped) != len(Q):
            raise InputError(f"flipped queries: {len(Q_flipped)} rows but {len(Q)} queries; expected one flipped row per query")
        d2, i2 = self.index_.kneighbors(Q_flipped, k)
        return merge_neighbors(d, i, d2, i2, k)

    def scores_from_neighbors(self, query_logits: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Blended scores for queries whose neighbours are already known (float64 (n, C))."""
        return lasenn_scores(network_outputs(query_logits, self.output), self.train_outputs_, indices, self.k, self.w_q)

    def predict_scores(self, Q: Any, query_logits: np.ndarray, Q_flipped: Any = None) -> np.ndarray:
        """Blended scores ``X_w`` (n, C), float64."""
        _, i, _ = self.kneighbors(Q, Q_flipped)
        return self.scores_from_neighbors(query_logits, i)

    def predict(self, Q: Any, query_logits: np.ndarray, Q_flipped: Any = None) -> np.ndarray:
        """LaSeNN predictions ``argmax_j X_w,j`` (n,), int64."""
        return self.predict_scores(Q, query_logits, Q_flipped).argmax(1).astype(np.int64)


#: :func:`analyze` under a name that :func:`run_lasenn`'s ``analyze`` flag does not hide.
_table2 = analyze


def main_value(values: Sequence[Any], default: Any) -> Any:
    """The value whose predictions are kept when a list of values is swept.

    The paper's default when it is listed among several values, else the first value (so a single
    value is always itself).

    Parameters
    ----------
    values : non-empty sequence
    default : the paper's value (:data:`DEFAULT_K` or :data:`DEFAULT_W_Q`)

    Returns
    -------
    One element of ``values``.
    """
    values = list(values)
    return default if default in values and len(values) > 1 else values[0]


@dataclass
class Selection:
    """``(k, w_q)`` chosen by :func:`select_w_q` on a held-out validation split of the training rows.

    Attributes
    ----------
    k, w_q : the chosen pair
    accuracy : float
        Validation accuracy of the chosen pair.
    accuracy_original : float
        The network's own accuracy on the validation rows.
    table : list of dict
        One row per candidate in the given order: ``k``, ``w_q``, ``accuracy`` (validation).
    val_rows : ndarray (n_val,), int64
        Training rows held out (excluded from the neighbour index while choosing).
    n_index : int
        Training rows indexed while choosing.
    val_fraction : float
    seed : int or None
    """

    k: int
    w_q: float
    accuracy: float
    accuracy_original: float
    table: list[dict[str, Any]]
    val_rows: np.ndarray
    n_index: int
    val_fraction: float
    seed: Any = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (without the validation rows themselves)."""
        return {"on": "validation", "k": self.k, "w_q": self.w_q, "accuracy_val": self.accuracy,
                "accuracy_original_val": self.accuracy_original, "n_val": int(len(self.val_rows)),
                "n_index": self.n_index, "val_fraction": self.val_fraction, "seed": self.seed,
                "table": self.table}


def select_w_q(
    X_train: Any,
    train_logits: np.ndarray,
    y_train: np.ndarray,
    ks: Sequence[int] = (DEFAULT_K,),
    w_qs: Sequence[float] = W_Q_GRID,
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    val_seed: Any = 0,
    **options: Any,
) -> Selection:
    """Choose ``(k, w_q)`` by accuracy on a validation split held out from the training rows.

    The paper fixes ``k = 3, w_q = 0.88`` and shows the sensitivity on the test set (Tables 5–6);
    it has no selection procedure. This is the held-out one (issue 17): a seeded class-stratified
    ``val_fraction`` of the training rows (:func:`validation_split`) is removed from the neighbour
    index; each validation row is a query whose LaSeNN output (Algorithm 1, line 9) is computed
    from its neighbours among the remaining rows, for every candidate pair, from one search with
    ``max(ks)``. The pair with the highest validation accuracy against ``y_train`` wins; among tied
    pairs the one nearest the paper's values (closest ``w_q`` to 0.88, then closest ``k`` to 3, then
    the first listed), so that a validation split too small to tell them apart falls back towards
    Algorithm 1's defaults. No test data is involved.

    Note that the network was trained on the validation rows too (they are training rows), so its
    own output on them is as confident as on any training row; the split only keeps each row out of
    its own neighbour list.

    Parameters
    ----------
    X_train : array-like (n_train, d), float
        Training activations of the neighbour layer.
    train_logits : ndarray (n_train, C)
    y_train : ndarray (n_train,), int
        Training labels (those the network was trained on).
    ks : sequence of int, default (3,)
    w_qs : sequence of float in [0, 1], default :data:`W_Q_GRID` (the paper's Table 5 values)
    val_fraction : float in (0, 1), default 0.1
    val_seed : int, default 0
        Draws the validation split (an hnsw seed goes in ``options`` as ``seed``).
    **options
        :class:`LaSeNN`'s settings: ``metric``, ``backend``, ``output`` and search parameters.

    Returns
    -------
    Selection

    Raises
    ------
    InputError
        Bad fraction, a k above the indexed rows (:func:`knntools.search.base.check_k`), a w_q
        outside [0, 1], or mismatched row counts.
    """
    ks = [int(v) for v in ks]
    w_qs = [check_w_q(v) for v in w_qs]
    if not ks or not w_qs:
        raise InputError("select_w_q: expected at least one k and one w_q candidate")
    y = np.asarray(y_train, dtype=np.int64)
    n = len(y)
    if len(train_logits) != n or X_train.shape[0] != n:
        raise InputError(f"y_train has {n} rows, train_logits {len(train_logits)} and X_train {X_train.shape[0]}; expected one row per training sample")
    index_rows, val_rows = validation_split(y, val_fraction, seed=val_seed)
    k_max = max(ks)
    X = np.asarray(X_train)
    logits = np.asarray(train_logits, dtype=np.float64)
    model = LaSeNN(k=k_max, **options)
    model.fit(X[index_rows], logits[index_rows])  # k bound checked here, against the indexed rows
    _, idx, _ = model.kneighbors(X[val_rows], None, k_max)
    q_out = network_outputs(logits[val_rows], model.output)
    y_val = y[val_rows]
    table: list[dict[str, Any]] = []
    for k in ks:
        mean_k = neighbor_mean(model.train_outputs_, idx, k)
        for w in w_qs:
            acc = float((blend(q_out, mean_k, w).argmax(1) == y_val).mean())
            table.append({"k": int(k), "w_q": float(w), "accuracy": acc})
    # ties: the candidate nearest the paper's values (w_q first, then k), then the one listed first
    best = max(range(len(table)), key=lambda i: (table[i]["accuracy"], -abs(table[i]["w_q"] - DEFAULT_W_Q),
                                                 -abs(table[i]["k"] - DEFAULT_K), -i))
    return Selection(k=table[best]["k"], w_q=table[best]["w_q"], accuracy=table[best]["accuracy"],
                     accuracy_original=float((q_out.argmax(1) == y_val).mean()), table=table, val_rows=val_rows,
                     n_index=int(len(index_rows)), val_fraction=float(val_fraction),
                     seed=int(val_seed) if isinstance(val_seed, (int, np.integer)) else None)


@dataclass
class LaSeNNResult:
    """Everything :func:`run_lasenn` computes for a set of queries.

    Attributes
    ----------
    k, w_q : the pair the predictions use (given, or chosen on validation)
    predictions : ndarray (n,), int64        LaSeNN classes
    scores : ndarray (n, C), float64         blended outputs X_w
    dnn_predictions : ndarray (n,), int64    the network's own arg-max
    changed : ndarray (n,), bool
    distances, indices, from_flipped : ndarray (n, k)   the kept neighbours (metric units, training rows)
    summary : dict                           :func:`change_summary` (accuracies when labels are given)
    sweep : list of dict or None             :func:`sweep` rows (test metrics) when several values;
        with a selection each row has ``selected`` (bool) and ``accuracy_val``
    analysis : dict or None                  :func:`analyze` summary
    per_sample : dict                        ``pureness``, ``avg_l2`` with ``analyze``
    selection : Selection or None
    search_s : float                         seconds spent in the neighbour search (index fit included)
    """

    k: int
    w_q: float
    predictions: np.ndarray
    scores: np.ndarray
    dnn_predictions: np.ndarray
    changed: np.ndarray
    distances: np.ndarray
    indices: np.ndarray
    from_flipped: np.ndarray
    summary: dict[str, Any]
    sweep: list[dict[str, Any]] | None = None
    analysis: dict[str, Any] | None = None
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)
    selection: Selection | None = None
    search_s: float = 0.0


def run_lasenn(
    X_train: Any,
    train_logits: np.ndarray,
    Q: Any,
    query_logits: np.ndarray,
    *,
    k: int = DEFAULT_K,
    w_q: float = DEFAULT_W_Q,
    k_sweep: Sequence[int] | None = None,
    w_q_sweep: Sequence[float] | None = None,
    y_train: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    Q_flipped: Any = None,
    analyze: bool = False,
    select_on: str = "none",
    val_fraction: float = DEFAULT_VAL_FRACTION,
    val_seed: Any = 0,
    **options: Any,
) -> LaSeNNResult:
    """LaSeNN (Algorithm 1) on a set of queries, with the parameter sweep and the optional selection.

    One neighbour search with the largest k needed serves the predictions, the sweep (Tables 5–6)
    and the Table 2 analysis. ``select_on="validation"`` replaces ``(k, w_q)`` by
    :func:`select_w_q` on the training rows (candidates: ``k_sweep`` or ``[k]`` × ``w_q_sweep`` or,
    when none is given, :data:`W_Q_GRID`; the sweep table then covers the same candidates and
    marks the chosen row ``selected``); ``y_test`` is only used to report accuracies.

    Parameters
    ----------
    X_train : array-like (n_train, d) float        training activations of the neighbour layer
    train_logits : ndarray (n_train, C)
    Q : array-like (n, d) float                   query activations (same layer)
    query_logits : ndarray (n, C)
    k : int, default 3;  w_q : float, default 0.88   the pair used without selection
    k_sweep, w_q_sweep : sequences, optional      values of the sweep table (test metrics per pair)
    y_train : ndarray (n_train,) int, optional    needed by ``analyze`` and by the selection
    y_test : ndarray (n,) int, optional           ground truth of the queries (reporting only)
    Q_flipped : array-like (n, d), optional        flipped queries (§3.6; union of neighbours)
    analyze : bool                                add the Table 2 statistics (needs both labels)
    select_on : {"none", "validation"}, default "none"
    val_fraction : float, default 0.1;  val_seed : int, default 0   the validation split
    **options                                      :class:`LaSeNN`'s settings (``metric``, ``backend``,
                                                   ``output``, search parameters)

    Returns
    -------
    LaSeNNResult

    Raises
    ------
    InputError
        k above the training rows (:func:`knntools.search.base.check_k`), w_q outside [0, 1],
        unknown ``select_on`` / ``output``, or labels missing where needed.
    """
    import time

    if select_on not in SELECT_ON:
        raise InputError(f"select_on {select_on!r}: expected one of {', '.join(SELECT_ON)}")
    ks = list(dict.fromkeys(int(v) for v in (k_sweep if k_sweep else [k])))
    w_qs = list(dict.fromkeys(check_w_q(v) for v in (w_q_sweep if w_q_sweep else [w_q])))
    selection = None
    if select_on == "validation":
        if y_train is None:
            raise InputError("selection on validation needs the training labels; expected y_train")
        if len(w_qs) == 1:
            w_qs = list(W_Q_GRID)
        selection = select_w_q(X_train, train_logits, y_train, ks, w_qs, val_fraction=val_fraction, val_seed=val_seed, **options)
        k, w_q = selection.k, selection.w_q
    if analyze and (y_train is None or y_test is None):
        raise InputError("the Table 2 analysis needs the labels of the training rows and of the queries")
    k, w_q = int(k), check_w_q(w_q)
    k_max = max(ks + [k])
    t1 = time.perf_counter()
    model = LaSeNN(k=k_max, w_q=w_q, **options).fit(X_train, train_logits)
    dist, idx, from_fl = model.kneighbors(Q, Q_flipped, k_max)
    search_s = time.perf_counter() - t1
    q_out = network_outputs(query_logits, model.output)
    dnn_pred = np.asarray(query_logits).argmax(1).astype(np.int64)
    scores = lasenn_scores(q_out, model.train_outputs_, idx, k, w_q)
    pred = scores.argmax(1).astype(np.int64)
    rows = sweep(q_out, model.train_outputs_, idx, ks, w_qs, y_test) if (len(ks) > 1 or len(w_qs) > 1) else None
    if rows is not None and selection is not None:
        val_acc = {(r["k"], r["w_q"]): r["accuracy"] for r in selection.table}
        for r in rows:
            r["selected"] = r["k"] == k and r["w_q"] == w_q
            r["accuracy_val"] = val_acc.get((r["k"], r["w_q"]))
    analysis, per = None, {}
    if analyze:
        avg = euclidean_to_neighbors(Q, X_train, idx[:, :k]).mean(1)
        analysis, per = _table2(avg, np.asarray(y_train)[idx[:, :k]], y_test, dnn_pred, pred)
    return LaSeNNResult(k=k, w_q=w_q, predictions=pred, scores=scores, dnn_predictions=dnn_pred, changed=pred != dnn_pred,
                        distances=dist[:, :k].astype(np.float32), indices=idx[:, :k], from_flipped=from_fl[:, :k],
                        summary=change_summary(dnn_pred, pred, y_test), sweep=rows, analysis=analysis, per_sample=per,
                        selection=selection, search_s=search_s)
