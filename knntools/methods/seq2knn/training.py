"""Training and inference of the seq2knn models (Xu & Klabjan §3–4).

:func:`train_model` trains one model (or the ``ffn`` benchmark) with Adam on precomputed kNN
targets and keeps the best validation macro-F1 epoch; :func:`predict` runs a trained model
(``argmax Y^P``; V2VS: vote of the 1-NN labels of its predicted vectors); :func:`macro_f1`
scores predictions.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from knntools.errors import InputError
from knntools.methods import check_labels
from knntools.methods.seq2knn.data import SubsetRows
from knntools.methods.seq2knn.losses import combined_loss
from knntools.methods.seq2knn.models import MEMORY_MODELS, VECTOR_MODELS, build_model, check_model_name
from knntools.methods.seq2knn.targets import ReferenceLabeler


@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes
    ----------
    model : torch.nn.Module (best validation epoch's weights, in eval mode)
    history : list of dicts (epoch, loss, val_f1, val_accuracy, seconds)
    best_epoch : int
    best_val_f1 : float
    seconds : float  training wall time
    bank : (standardised rows [m, D] — an array or a :class:`SubsetRows` view —, labels int64 [m]):
        the training rows (all, or ``label_bank`` random ones): the MNkNN memory pool at inference
    reference : :class:`ReferenceLabeler` over the same rows (V2VS labelling at inference)
    """

    model: Any
    bank: tuple[Any, np.ndarray] | None = None
    reference: Any = None
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_f1: float = float("nan")
    seconds: float = 0.0


@dataclass(frozen=True)
class ModelSettings:
    """The settings of one seq2knn model and its optimiser, with the paper's defaults (Xu & Klabjan §4).

    The one home of these defaults: :func:`train_model` and :func:`fit_seq2knn` take them as keyword
    arguments (``**settings``) and build this.

    Attributes
    ----------
    hidden : int, default 64            hidden units of the LSTM / memory embedding
    tau : float, default 0.85           softmax temperature of each predicted neighbour label
    lam : float, default 0.12           weight of the vector loss
    alpha : float, default 9.5          weight of KL(Y^GT || Y^P)
    lr : float, default 0.01            Adam learning rate
    dropout : float, default 0.2
    memory_size : int, default 64       MNkNN memory n (a new random memory per mini-batch)
    label_bank : int, default 0
        Reference rows for inference (validation scoring, and :attr:`TrainResult.bank` /
        :attr:`TrainResult.reference`): 0 or None = every training row (the paper: V2VS vectors
        are labelled against the training set; MNkNN memories are drawn from it); N > 0 = N random
        training rows (a deviation; 4096 was this module's former fixed bank).
    memory_labels, attention_scale : bool, default False   MNkNN deviations (see :func:`build_model`)
    memory_draws : int, default 1       MNkNN memories averaged per prediction (see :func:`predict`)
    """

    hidden: int = 64
    tau: float = 0.85
    lam: float = 0.12
    alpha: float = 9.5
    lr: float = 0.01
    dropout: float = 0.2
    memory_size: int = 64
    label_bank: int | None = 0
    memory_labels: bool = False
    attention_scale: bool = False
    memory_draws: int = 1


def _memory_draw(rng: np.random.Generator, pool: np.ndarray, size: int) -> np.ndarray:
    return np.sort(rng.choice(pool, size=min(size, len(pool)), replace=False))


def predict(
    model: Any,
    X: Any,
    *,
    name: str,
    memory: tuple[Any, np.ndarray] | None = None,
    memory_size: int = 64,
    memory_draws: int = 1,
    reference: Any = None,
    batch_size: int = 1024,
    device: Any = "cpu",
    random_state: Any = 0,
) -> dict[str, np.ndarray]:
    """Run a trained model on rows ``X`` (standardised; array or :class:`RowView`).

    Parameters
    ----------
    model : torch.nn.Module from :func:`build_model`
    X : [n, D] float32
    name : model name (``ffn`` for the benchmark)
    memory : (rows view, labels int64) the memory samples are drawn from (MNkNN models)
    memory_size : int, default 64
    memory_draws : int, default 1
        MNkNN: one random memory per batch of queries (the paper: "the model takes a query x and
        random samples x_1 … x_n"); more averages the predictions over that many memories (a
        deviation that lowers the variance).
    reference : :class:`ReferenceLabeler`, or (standardised features [m, D], labels [m]) indexed
        exactly — used to label V2VS vectors by their nearest reference row
    batch_size, device, random_state

    Returns
    -------
    dict: ``predictions`` int64 [n], ``scores`` float32 [n, C] (``Y^P``; V2VS: vote fractions),
    ``step_labels`` int64 [n, K] (argmax Y_t^P, or the 1-NN labels of X_t^P for V2VS) and, for
    vector models, ``step_vectors`` float32 [n, K, D].
    """
    import torch

    from knntools.utils import as_generator

    rng = as_generator(random_state)
    model.eval()
    n = len(X)
    probs_all, steps_all, vecs_all = [], [], []
    with torch.no_grad():
        for s in range(0, n, batch_size):
            xb = torch.from_numpy(np.asarray(X[np.arange(s, min(n, s + batch_size))] if not isinstance(X, np.ndarray) else X[s : s + batch_size])).to(device)
            if name in MEMORY_MODELS:
                mem_view, mem_y = memory  # type: ignore[misc]
                pool = np.arange(len(mem_y))
                acc = None
                for _ in range(max(1, memory_draws)):
                    rows = _memory_draw(rng, pool, memory_size)
                    out = model(xb, torch.from_numpy(mem_view[rows]).to(device), torch.from_numpy(mem_y[rows]).to(device))
                    acc = out if acc is None else {k: acc[k] + v for k, v in out.items()}
                out = {k: v / max(1, memory_draws) for k, v in acc.items()}  # type: ignore[union-attr]
            else:
                out = model(xb)
            if "probs" in out:
                probs_all.append(out["probs"].cpu().numpy())
            if "step_probs" in out:
                steps_all.append(out["step_probs"].argmax(-1).cpu().numpy())
            if "step_vectors" in out:
                vecs_all.append(out["step_vectors"].cpu().numpy())
    res: dict[str, np.ndarray] = {}
    if vecs_all:
        res["step_vectors"] = np.concatenate(vecs_all).astype(np.float32)
    if probs_all:
        res["scores"] = np.concatenate(probs_all).astype(np.float32)
        res["predictions"] = res["scores"].argmax(1).astype(np.int64)
        if steps_all:
            res["step_labels"] = np.concatenate(steps_all).astype(np.int64)
    else:  # V2VS: vote among the 1-NN labels of the predicted vectors
        if reference is None:
            raise InputError("V2VS predictions need a reference set (features, labels) to label its predicted vectors")
        labeler = reference if isinstance(reference, ReferenceLabeler) else ReferenceLabeler(reference[0], reference[1])
        V = res["step_vectors"]
        labels = labeler.labels(V.reshape(-1, V.shape[-1])).reshape(V.shape[0], V.shape[1])
        C = int(getattr(model, "C"))
        votes = np.stack([(labels == c).sum(1) for c in range(C)], 1).astype(np.float32)
        res["scores"] = votes / votes.sum(1, keepdims=True)
        res["predictions"] = votes.argmax(1).astype(np.int64)
        res["step_labels"] = labels.astype(np.int64)
    return res


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Macro-averaged F1 over ``n_classes`` classes (scikit-learn, zero_division=0)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def train_model(
    name: str,
    X: Any,
    y: np.ndarray,
    n_classes: int,
    *,
    neighbors: np.ndarray | None = None,
    train_rows: np.ndarray | None = None,
    val: tuple[Any, np.ndarray] | None = None,
    K: int = 5,
    epochs: int = 30,
    batch_size: int = 64,
    backend: str = "exact",
    metric: str = "l2",
    search_params: dict[str, Any] | None = None,
    device: Any = "cpu",
    random_state: Any = 0,
    callback: Callable[[dict[str, float]], None] | None = None,
    **settings: Any,
) -> TrainResult:
    """Train one model (or the ``ffn`` benchmark) with Adam; keep the best validation macro-F1 epoch.

    Parameters
    ----------
    name : one of :data:`MODELS` or ``"ffn"``
    X : standardised rows, ndarray [N, D] or :class:`RowView` over an h5py dataset (rows are read
        per mini-batch: the set need not be in memory)
    y : int64 [N] labels of every row of ``X``
    n_classes : int
    neighbors : int64 [N, K] kNN-target rows of ``X`` for the rows in ``train_rows`` (row i of
        ``neighbors`` belongs to ``train_rows[i]``); required except for ``ffn``
    train_rows : int64 rows of ``X`` to train on (default all); MNkNN memories come from them too
    val : (X_val [m, D] standardised, y_val [m]) for model selection (optional)
    K : int, default 5   neighbours per training row (the paper's K; module docstring)
    epochs : int, default 30
    batch_size : int, default 64   mini-batch size
    backend, metric, search_params
        Search used to label V2VS vectors (:class:`ReferenceLabeler`; ``metric`` should be the
        metric of the kNN targets).
    device, random_state, callback (called with each epoch's history row)
    **settings
        :class:`ModelSettings` fields (``hidden``, ``tau``, ``lam``, ``alpha``, ``lr``, ``dropout``,
        ``memory_size``, ``label_bank``, ``memory_labels``, ``attention_scale``, ``memory_draws``);
        the paper's defaults where omitted.

    Returns
    -------
    TrainResult

    Raises
    ------
    InputError
        Missing or mis-shaped ``neighbors``, labels out of range.
    TypeError
        A keyword that is not a :class:`ModelSettings` field.
    """
    import torch

    from knntools.utils import as_generator

    st = ModelSettings(**settings)
    rng = as_generator(random_state)
    devices = [device] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):  # seed dropout/init without touching the caller's global RNG
        torch.manual_seed(int(rng.integers(0, 2**31 - 1)))
        return _train(name, X, y, n_classes, rng, neighbors=neighbors, train_rows=train_rows, val=val, K=K, epochs=epochs,
                      batch_size=batch_size, st=st, backend=backend, metric=metric, search_params=search_params or {}, device=device,
                      callback=callback)


def _train(name: str, X: Any, y: np.ndarray, n_classes: int, rng: np.random.Generator, *, neighbors: Any, train_rows: Any, val: Any,
           K: int, epochs: int, batch_size: int, st: ModelSettings, backend: str, metric: str, search_params: dict[str, Any], device: Any, callback: Any) -> TrainResult:
    import torch

    N, D = int(X.shape[0]), int(X.shape[1])
    y = check_labels(y, n_classes)
    rows = np.arange(N, dtype=np.int64) if train_rows is None else np.asarray(train_rows, dtype=np.int64)
    if name != "ffn":
        name = check_model_name(name)
        if neighbors is None or neighbors.shape != (len(rows), K):
            got = None if neighbors is None else neighbors.shape
            raise InputError(f"neighbors: shape {got}; expected ({len(rows)}, {K}) kNN-target rows for the training rows")
    model = build_model(name, D, n_classes, K=K, hidden=st.hidden, tau=st.tau, dropout=st.dropout, memory_labels=st.memory_labels,
                        attention_scale=st.attention_scale).to(device)
    if st.label_bank is not None and st.label_bank < 0:
        raise InputError(f"label_bank={st.label_bank}: expected 0 (every training row) or a positive number of rows", param="label_bank")
    bank_rows = rows if not st.label_bank or len(rows) <= st.label_bank else np.sort(rng.choice(rows, int(st.label_bank), replace=False))
    bank_X = np.asarray(X[bank_rows], dtype=np.float32) if isinstance(X, np.ndarray) else SubsetRows(X, bank_rows)
    bank = (bank_X, y[bank_rows])
    reference = None
    if name == "v2vs":  # only V2VS labels its vectors by search; built once, reused every epoch
        reference = ReferenceLabeler(bank_X, bank[1], backend=backend, metric=metric, **search_params)
    opt = torch.optim.Adam(model.parameters(), lr=st.lr)
    res = TrainResult(model=model)
    best_state, best_key = None, (-1.0, -math.inf)
    t0 = time.perf_counter()
    bs = max(2, int(batch_size))
    for epoch in range(1, epochs + 1):
        model.train()
        te = time.perf_counter()
        perm = rng.permutation(len(rows))
        total, count = 0.0, 0
        for s in range(0, len(perm), bs):
            pos = perm[s : s + bs]
            if len(pos) < 2:  # BatchNorm needs two samples
                continue
            xr = rows[pos]
            xb = torch.from_numpy(X[xr]).to(device)
            yb = torch.from_numpy(y[xr]).to(device)
            if name == "ffn":
                out = model(xb)
                loss = torch.nn.functional.cross_entropy(out["logits"], yb)
            else:
                nb = neighbors[pos]
                y_nb = torch.from_numpy(y[nb]).to(device)
                x_nb = None
                if name in VECTOR_MODELS:
                    x_nb = torch.from_numpy(X[nb.reshape(-1)].reshape(len(pos), K, D)).to(device)
                if name in MEMORY_MODELS:
                    mrows = _memory_draw(rng, rows, st.memory_size)
                    out = model(xb, torch.from_numpy(X[mrows]).to(device), torch.from_numpy(y[mrows]).to(device))
                else:
                    out = model(xb)
                loss = combined_loss(out, y_nb, x_nb, yb, alpha=st.alpha, lam=st.lam)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(pos)
            count += len(pos)
        row = {"epoch": epoch, "loss": total / max(1, count), "seconds": time.perf_counter() - te}
        if val is not None and len(val[1]):
            pv = predict(model, val[0], name=name, memory=bank, memory_size=st.memory_size, memory_draws=st.memory_draws, reference=reference,
                         device=device, random_state=int(rng.integers(0, 2**31 - 1)))
            row["val_f1"] = macro_f1(val[1], pv["predictions"], n_classes)
            row["val_accuracy"] = float((pv["predictions"] == val[1]).mean())
            key = (row["val_f1"], -row["loss"])
        else:
            key = (0.0, -row["loss"])
        if key > best_key:
            best_key, best_state, res.best_epoch = key, copy.deepcopy(model.state_dict()), epoch
            res.best_val_f1 = row.get("val_f1", float("nan"))
        res.history.append(row)
        if callback is not None:
            callback(row)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    res.bank = bank
    res.reference = reference
    res.seconds = time.perf_counter() - t0
    return res
