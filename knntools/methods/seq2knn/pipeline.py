"""One call for a whole seq2knn run (what ``knntools seq2knn`` does): validation split, standardiser,
kNN targets (full or out-of-core), training, test scores beside the benchmarks, checkpoint rows.

:func:`fit_seq2knn` takes arrays or h5py datasets and returns a :class:`Seq2KNNRun`; the CLI only
opens the files, calls it and writes :meth:`Seq2KNNRun.checkpoint` and the predictions.
:func:`split_validation` is the stratified hold-out it uses (paper §4: the best epoch is chosen on
validation macro F1).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from knntools.errors import InputError
from knntools.methods import check_labels
from knntools.methods.seq2knn.data import RowView, Standardizer, stream_moments, take_rows
from knntools.methods.seq2knn.models import check_model_name
from knntools.methods.seq2knn.targets import full_neighbors, knn_predict, knn_predict_batch, out_of_core_neighbors
from knntools.methods.seq2knn.training import ModelSettings, TrainResult, macro_f1, predict, train_model


def split_validation(y: np.ndarray, n_classes: int, val_size: float = 0.1, *, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hold out a fraction of the rows for model selection, stratified when every class has >= 2 rows.

    Parameters
    ----------
    y : int64 [N] labels
    n_classes : int
    val_size : float in [0, 1), default 0.1
        Fraction held out (at least one row when > 0); 0 = no validation rows.
    random_state : int, default 0   (scikit-learn's ``train_test_split``)

    Returns
    -------
    train_rows, val_rows : sorted int64 arrays of row numbers

    Raises
    ------
    InputError
        ``val_size`` outside [0, 1), or leaving fewer than two training rows.
    """
    y = np.asarray(y, dtype=np.int64)
    N = len(y)
    rows = np.arange(N, dtype=np.int64)
    if not 0.0 <= float(val_size) < 1.0:
        raise InputError(f"val_size={val_size}: expected a fraction in [0, 1)", param="val_size")
    if val_size <= 0:
        return rows, rows[:0]
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y, minlength=n_classes)
    strat = y if counts[counts > 0].min() >= 2 else None
    n_val = max(1, int(round(val_size * N)))
    if n_val >= N - 1:
        raise InputError(f"val_size={val_size} leaves {N - n_val} of {N} samples for training; expected at least 2", param="val_size")
    tr, va = train_test_split(rows, test_size=n_val, stratify=strat, random_state=random_state)
    return np.sort(tr), np.sort(va)


@dataclass
class Seq2KNNRun:
    """What :func:`fit_seq2knn` returns.

    Attributes
    ----------
    name : str   the model (one of :data:`MODELS`)
    result : :class:`TrainResult`   trained model (best epoch), history, inference bank/reference
    scaler : :class:`Standardizer`   fitted on the training rows (identity without standardising)
    train_rows, val_rows : int64 arrays   rows of ``X`` trained on / held out
    neighbors : int64 [len(train_rows), K]   the kNN-target rows of ``X`` of each training row
    hyper : dict   every hyper-parameter (stored in the checkpoint)
    knn_seconds : float   time to compute the kNN targets
    neighbor_label_agreement : float   fraction of kNN targets sharing their row's label
    test : dict   method -> {"macro_f1", "accuracy"} on the test rows (empty without a test set):
        the model, and with ``baselines`` ``knn`` + ``ffn`` (full) or ``knn-batch`` (out-of-core)
    test_output : dict   :func:`predict`'s output for the test rows (empty without a test set)
    memory : (float32 [m, D], int64 [m])   standardised training rows for the checkpoint (the
        MNkNN memory / V2VS 1-NN pool): the inference bank, at most :data:`CHECKPOINT_BANK_ROWS`
        random ones out-of-core
    """

    name: str
    result: TrainResult
    scaler: Standardizer
    train_rows: np.ndarray
    val_rows: np.ndarray
    neighbors: np.ndarray
    hyper: dict[str, Any]
    knn_seconds: float
    neighbor_label_agreement: float
    memory: tuple[np.ndarray, np.ndarray]
    test: dict[str, dict[str, float]] = field(default_factory=dict)
    test_output: dict[str, np.ndarray] = field(default_factory=dict)

    def checkpoint(self, *, classes: Sequence[str], provenance: dict[str, Any] | None = None) -> dict[str, Any]:
        """The checkpoint dict (:func:`checkpoint_dict`) of this run; ``provenance`` gets the best epoch,
        validation F1 and history added."""
        from knntools.methods.seq2knn.checkpoint import checkpoint_dict

        prov = {**(provenance or {}), "best_epoch": self.result.best_epoch, "val_f1": self.result.best_val_f1, "history": self.result.history}
        model = self.result.model
        return checkpoint_dict(model, name=self.name, n_features=int(self.scaler.mean.shape[0]), n_classes=int(model.C), classes=classes,
                               hyper=self.hyper, scaler=self.scaler, memory=self.memory, provenance=prov)


def _scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    return {"macro_f1": macro_f1(y_true, y_pred, n_classes), "accuracy": float((y_pred == y_true).mean())}


def fit_seq2knn(
    X: Any,
    y: np.ndarray,
    n_classes: int,
    *,
    model: str = "v2vsls",
    K: int = 5,
    epochs: int = 30,
    train_batch_size: int = 64,
    val_size: float = 0.1,
    standardize: bool = True,
    out_of_core: bool = False,
    batches: int = 50,
    batch_size: int = 64,
    include_query: bool = True,
    backend: str = "exact",
    metric: str = "l2",
    search_params: dict[str, Any] | None = None,
    X_test: Any = None,
    y_test: np.ndarray | None = None,
    baselines: bool = True,
    device: Any = "cpu",
    seed: int = 0,
    callback: Callable[[dict[str, float]], None] | None = None,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> Seq2KNNRun:
    """Train a kNN-mimicking model end to end (Xu & Klabjan §3, §4) and score it on a test set.

    Steps: :func:`split_validation` (``val_size``, seeded); :func:`stream_moments` over the
    training rows (``standardize``); kNN targets of the training rows — :func:`full_neighbors`
    over all of them, or with ``out_of_core`` :func:`out_of_core_neighbors` (Algorithm 1: R =
    ``batches`` batches of B = ``batch_size`` rows, read from ``X`` as needed);
    :func:`train_model`; with ``X_test``: :func:`predict` and, with ``baselines``, plain kNN and
    the feed-forward net (full) or kNN on one B-row batch (out-of-core, Table 3).

    Parameters
    ----------
    X : ndarray or h5py.Dataset of shape (N, ...) — features (rows flattened to D). Out-of-core,
        rows are read per batch and never held whole.
    y : int64 [N] labels in [0, n_classes)
    n_classes : int
    model, K : see :func:`train_model` (paper defaults)
    epochs, train_batch_size : int   optimiser epochs / mini-batch size
    val_size : float, default 0.1   see :func:`split_validation`
    standardize : bool, default True
    out_of_core, batches, batch_size, include_query : see :func:`out_of_core_neighbors`
    backend, metric, search_params : the search of the full kNN targets, the kNN benchmark and
        V2VS labelling (:func:`knntools.search.make_index`)
    X_test : ndarray or h5py.Dataset [M, D], optional;  y_test : int64 [M]
    baselines : bool, default True
    device : torch device;  seed : int (split, targets, training, checkpoint rows)
    callback : called with each epoch's history row
    log : called once, before the kNN targets, with a line describing the run (sizes, split, targets)
    **settings : the model's settings, :class:`~knntools.methods.seq2knn.training.ModelSettings`
        (``hidden``, ``tau``, ``lam``, ``alpha``, ``lr``, ``dropout``, ``memory_size``,
        ``memory_labels``, ``attention_scale``, ``memory_draws``, ``label_bank``; paper defaults)

    Returns
    -------
    Seq2KNNRun

    Raises
    ------
    InputError
        Unknown model, ``K`` out of range for the training rows
        (:func:`knntools.search.base.check_k`), ``batch_size <= K`` out-of-core, bad ``val_size``,
        labels out of range, a test set of another width, non-finite rows.
    """
    from knntools.methods.seq2knn.checkpoint import CHECKPOINT_BANK_ROWS
    from knntools.search.base import check_k

    name = check_model_name(model)
    st = ModelSettings(**settings)
    y = check_labels(y, n_classes)
    N, D = int(X.shape[0]), int(np.prod(X.shape[1:], dtype=np.int64))
    if len(y) != N:
        raise InputError(f"labels: {len(y)} values for {N} rows; expected one label per row")
    if N < 3:
        raise InputError(f"{N} samples; expected at least 3")
    if X_test is not None:
        Dt = int(np.prod(X_test.shape[1:], dtype=np.int64))
        if Dt != D:
            raise InputError(f"test rows have {Dt} features but the training rows have {D}; expected the same width")
        if y_test is None or len(y_test) != int(X_test.shape[0]):
            raise InputError(f"test labels: expected one label per test row ({int(X_test.shape[0])})")
        y_test = check_labels(y_test, n_classes, where="test labels")
    rng = np.random.default_rng(seed)
    tr_rows, va_rows = split_validation(y, n_classes, val_size, random_state=seed)
    check_k(K, len(tr_rows), exclude_self=not (out_of_core and include_query), param="k")
    if out_of_core and batch_size <= K:
        raise InputError(f"batch_size={batch_size}: the out-of-core batch B must exceed K={K}", param="batch_size")
    params = dict(search_params or {})
    scaler = Standardizer(*stream_moments(X, tr_rows)) if standardize else Standardizer.identity(D)
    Xv: Any = RowView(X, scaler) if out_of_core else scaler(take_rows(X, np.arange(N)))
    if log is not None:
        log(f"{N} rows × {D}, {n_classes} classes; {len(tr_rows)} train / {len(va_rows)} val; kNN targets: "
            + (f"out-of-core R={batches} × B={batch_size}" if out_of_core else f"full {backend}/{metric}"))
    t_nb = time.perf_counter()
    if out_of_core:
        _, nb_rows = out_of_core_neighbors(X, K, batches=batches, batch_size=batch_size, metric=metric, pool=tr_rows,
                                           transform=scaler, random_state=rng, include_query=include_query)
    else:
        nb_rows = tr_rows[full_neighbors(Xv[tr_rows], K, backend=backend, metric=metric, **params)[1]]
    knn_seconds = time.perf_counter() - t_nb
    agree = float((y[nb_rows] == y[tr_rows][:, None]).mean())
    val = (np.asarray(Xv[va_rows]), y[va_rows]) if len(va_rows) else None
    hyper = {"K": K, "hidden": st.hidden, "tau": st.tau, "lam": st.lam, "alpha": st.alpha, "lr": st.lr, "dropout": st.dropout, "epochs": epochs,
             "train_batch_size": train_batch_size, "memory_size": st.memory_size, "val_size": val_size, "out_of_core": out_of_core,
             "batches": batches, "batch_size": batch_size, "backend": backend, "metric": metric, "standardize": standardize,
             "label_bank": st.label_bank, "memory_labels": st.memory_labels, "attention_scale": st.attention_scale,
             "memory_draws": st.memory_draws, "include_query": include_query}
    res = train_model(name, Xv, y, n_classes, neighbors=nb_rows, train_rows=tr_rows, val=val, K=K, epochs=epochs, batch_size=train_batch_size,
                      backend=backend, metric=metric, search_params=params, device=device, random_state=rng, callback=callback, **asdict(st))
    run = Seq2KNNRun(name, res, scaler, tr_rows, va_rows, nb_rows, hyper, knn_seconds, agree, memory=res.bank)  # type: ignore[arg-type]
    if X_test is not None and y_test is not None:
        Xt = scaler(take_rows(X_test, np.arange(len(y_test))))
        run.test_output = predict(res.model, Xt, name=name, memory=res.bank, memory_size=st.memory_size, memory_draws=st.memory_draws,
                                  reference=res.reference, device=device, random_state=seed)
        run.test[name] = _scores(y_test, run.test_output["predictions"], n_classes)
        if baselines and out_of_core:
            pk = knn_predict_batch(Xv, y, tr_rows, Xt, n_classes, K, batch_size=batch_size, metric=metric, random_state=seed)
            run.test["knn-batch"] = _scores(y_test, pk, n_classes)
        elif baselines:
            run.test["knn"] = _scores(y_test, knn_predict(Xv[tr_rows], y[tr_rows], Xt, n_classes, K, backend=backend, metric=metric, **params), n_classes)
            ff = train_model("ffn", Xv, y, n_classes, train_rows=tr_rows, val=val, hidden=st.hidden, lr=st.lr, dropout=st.dropout, epochs=epochs,
                             batch_size=train_batch_size, device=device, random_state=seed)
            run.test["ffn"] = _scores(y_test, predict(ff.model, Xt, name="ffn", device=device)["predictions"], n_classes)
    bank_X, bank_y = res.bank  # type: ignore[misc]
    if not isinstance(bank_X, np.ndarray):  # out-of-core: the checkpoint keeps at most CHECKPOINT_BANK_ROWS of them
        keep = np.arange(len(bank_y)) if len(bank_y) <= CHECKPOINT_BANK_ROWS else np.sort(rng.choice(len(bank_y), CHECKPOINT_BANK_ROWS, replace=False))
        bank_X, bank_y = bank_X[keep], bank_y[keep]
    run.memory = (np.asarray(bank_X, dtype=np.float32), np.asarray(bank_y, dtype=np.int64))
    return run
