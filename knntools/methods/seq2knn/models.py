"""The five kNN-mimicking networks of Xu & Klabjan §3 and the feed-forward benchmark (§4).

:func:`build_model` constructs V2LS / V2VS / V2VSLS (:class:`Seq2KNN`: an LSTM encoder over the
length-1 sequence ``(x)`` and an LSTM decoder of K steps), MNkNN / MNkNN_VEC (:class:`MemKNN`: an
end-to-end memory network with K hops) or ``ffn`` (the benchmark). The classes are built on first
use (:func:`_torch_modules`) so that importing this module does not import torch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from knntools.errors import InputError

MODELS = ("v2ls", "v2vs", "v2vsls", "mnknn", "mnknn-vec")
#: Models with a label head (predict ``Y_t^P``) / a vector head (predict ``X_t^P``).
LABEL_MODELS = ("v2ls", "v2vsls", "mnknn", "mnknn-vec")
VECTOR_MODELS = ("v2vs", "v2vsls", "mnknn-vec")
MEMORY_MODELS = ("mnknn", "mnknn-vec")

DEFAULTS: dict[str, Any] = {
    "K": 5, "tau": 0.85, "lam": 0.12, "alpha": 9.5, "lr": 0.01, "dropout": 0.2, "hidden": 64,
    "memory_size": 64, "batches": 50, "batch_size": 64,
}
#: The paper's oversampling setting (§4 "Oversampling"): more weight on the vectors.
OVERSAMPLE_DEFAULTS: dict[str, Any] = {"lam": 1.3, "alpha": 3.0}


def check_model_name(name: str) -> str:
    """Return ``name`` if it is one of :data:`MODELS` (``mnknn_vec`` accepted for ``mnknn-vec``).

    Raises
    ------
    InputError
        Unknown model name.
    """
    n = str(name).lower().replace("_", "-")
    if n not in MODELS:
        raise InputError(f"model {name!r} is unknown; expected one of {', '.join(MODELS)}")
    return n


def _torch_modules() -> Any:
    import torch
    from torch import nn

    class Seq2KNN(nn.Module):
        """V2LS / V2VS / V2VSLS (paper §3): LSTM encoder over the length-1 sequence ``(x)`` and an
        LSTM decoder of K steps.

        The input is embedded by ``Linear(D, H) · BatchNorm · ReLU · Dropout`` and encoded by one LSTM
        step; the decoder cell at step t reads ``[h^e_T, Y_{t-1}^P, X_{t-1}^P]`` (zeros at t = 1,
        each part only when the model has that head) and its output ``y_t`` (after BatchNorm and
        Dropout) feeds ``Y_t^P = softmax((W y_t + b)/tau)`` and/or ``X_t^P = W2 relu(W1 y_t + b1) + b2``.

        forward(x [n, D]) → dict with ``step_probs`` [n, K, C], ``probs`` [n, C] (= mean over steps)
        and/or ``step_vectors`` [n, K, D].
        """

        def __init__(self, n_features: int, n_classes: int, K: int = 5, hidden: int = 64, tau: float = 0.85,
                     dropout: float = 0.2, label_head: bool = True, vector_head: bool = True):
            super().__init__()
            self.K, self.tau, self.C, self.D = K, tau, n_classes, n_features
            self.label_head, self.vector_head = label_head, vector_head
            self.embed = nn.Sequential(nn.Linear(n_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout))
            self.encoder = nn.LSTM(hidden, hidden, batch_first=True)
            dec_in = hidden + (n_classes if label_head else 0) + (n_features if vector_head else 0)
            self.decoder = nn.LSTMCell(dec_in, hidden)
            self.norm = nn.BatchNorm1d(hidden)
            self.drop = nn.Dropout(dropout)
            if label_head:
                self.W_y = nn.Linear(hidden, n_classes)
            if vector_head:
                self.vec = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_features))

        def forward(self, x: Any) -> dict[str, Any]:
            n = x.shape[0]
            e = self.embed(x)
            _, (h, c) = self.encoder(e[:, None, :])
            ctx, h, c = h[0], h[0], c[0]
            prev_y = x.new_zeros(n, self.C) if self.label_head else None
            prev_x = x.new_zeros(n, self.D) if self.vector_head else None
            probs, vecs = [], []
            for _ in range(self.K):
                parts = [ctx] + ([prev_y] if self.label_head else []) + ([prev_x] if self.vector_head else [])
                h, c = self.decoder(torch.cat(parts, 1), (h, c))
                yt = self.drop(self.norm(h))
                if self.label_head:
                    prev_y = torch.softmax(self.W_y(yt) / self.tau, dim=1)
                    probs.append(prev_y)
                if self.vector_head:
                    prev_x = self.vec(yt)
                    vecs.append(prev_x)
            out: dict[str, Any] = {}
            if probs:
                out["step_probs"] = torch.stack(probs, 1)
                out["probs"] = out["step_probs"].mean(1)
            if vecs:
                out["step_vectors"] = torch.stack(vecs, 1)
            return out

    class MemKNN(nn.Module):
        """MNkNN / MNkNN_VEC (paper §3): an end-to-end memory network with K hops over a memory of
        n training samples; hop t predicts the t-th neighbour.

        The paper's model (§2.2, §3): query ``u^1 = B x``; memory keys ``m_i = A x_i``, values
        ``c_i = C x_i``; per hop ``p = softmax(uᵀm)``, ``o = sum_i p_i c_i``, ``z_t = H u^t + o^t``
        (then BatchNorm, Dropout), ``u^{t+1} = z_t``, ``Y_t^P = softmax((W z_t + b)/tau)`` and, with
        the vector head, ``X_t^P = W_x relu(T z_t) + b_x``. A, C, H are shared across hops
        (Sukhbaatar et al.). Two documented deviations, off by default:

        * ``memory_labels=True``: values ``c_i = C x_i + E y_i`` (a label embedding ``E`` lets a hop
          read its memory sample's label; the paper's memory holds feature vectors only);
        * ``attention_scale=True``: ``p = softmax(uᵀm / sqrt(hidden))`` (scaled dot product).

        forward(x [n, D], memory_x [m, D], memory_y int64 [m]) → dict as :class:`Seq2KNN`
        (``memory_y`` is only read with ``memory_labels``).
        """

        def __init__(self, n_features: int, n_classes: int, K: int = 5, hidden: int = 64, tau: float = 0.85,
                     dropout: float = 0.2, vector_head: bool = True, memory_labels: bool = False, attention_scale: bool = False):
            super().__init__()
            self.K, self.tau, self.C, self.D = K, tau, n_classes, n_features
            self.label_head, self.vector_head = True, vector_head
            self.memory_labels, self.attention_scale = bool(memory_labels), bool(attention_scale)
            self.B = nn.Sequential(nn.Linear(n_features, hidden), nn.BatchNorm1d(hidden))
            self.A = nn.Linear(n_features, hidden)
            self.Cm = nn.Linear(n_features, hidden)
            if self.memory_labels:
                self.E = nn.Embedding(n_classes, hidden)
            self.H = nn.Linear(hidden, hidden, bias=False)
            self.norm = nn.BatchNorm1d(hidden)
            self.drop = nn.Dropout(dropout)
            self.W_y = nn.Linear(hidden, n_classes)
            if vector_head:
                self.vec = nn.Sequential(nn.Linear(hidden, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, n_features))

        def forward(self, x: Any, memory_x: Any, memory_y: Any) -> dict[str, Any]:
            u = self.B(x)
            m = self.A(memory_x)
            cval = self.Cm(memory_x) + self.E(memory_y) if self.memory_labels else self.Cm(memory_x)
            scale = 1.0 / math.sqrt(m.shape[1]) if self.attention_scale else 1.0
            probs, vecs = [], []
            for _ in range(self.K):
                p = torch.softmax((u @ m.T) * scale, dim=1)
                o = p @ cval
                z = self.drop(self.norm(self.H(u) + o))
                probs.append(torch.softmax(self.W_y(z) / self.tau, dim=1))
                if self.vector_head:
                    vecs.append(self.vec(z))
                u = z
            out = {"step_probs": torch.stack(probs, 1)}
            out["probs"] = out["step_probs"].mean(1)
            if vecs:
                out["step_vectors"] = torch.stack(vecs, 1)
            return out

    class FFN(nn.Module):
        """The feed-forward benchmark (paper §4): 4 linear layers, BatchNorm, ReLU, Dropout.

        forward(x [n, D]) → dict with ``probs`` [n, C].
        """

        def __init__(self, n_features: int, n_classes: int, hidden: int = 64, dropout: float = 0.2):
            super().__init__()
            layers: list[Any] = []
            d = n_features
            for _ in range(3):
                layers += [nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout)]
                d = hidden
            layers.append(nn.Linear(d, n_classes))
            self.net = nn.Sequential(*layers)

        def forward(self, x: Any) -> dict[str, Any]:
            logits = self.net(x)
            return {"logits": logits, "probs": torch.softmax(logits, 1)}

    return Seq2KNN, MemKNN, FFN


def build_model(name: str, n_features: int, n_classes: int, *, K: int = 5, hidden: int = 64, tau: float = 0.85, dropout: float = 0.2,
                memory_labels: bool = False, attention_scale: bool = False) -> Any:
    """Construct one of :data:`MODELS` (or ``"ffn"``, the benchmark) as a ``torch.nn.Module``.

    ``memory_labels`` / ``attention_scale`` (MNkNN models only, default False = the paper's memory
    network): add a label embedding to the memory values / scale the attention by 1/sqrt(hidden).

    Raises
    ------
    InputError
        Unknown name or non-positive sizes.
    """
    Seq2KNN, MemKNN, FFN = _torch_modules()
    if min(n_features, n_classes, K, hidden) < 1:
        raise InputError(f"model sizes must be positive (n_features={n_features}, n_classes={n_classes}, K={K}, hidden={hidden})")
    if not tau > 0:
        raise InputError(f"tau={tau}: expected a positive softmax temperature")
    if name == "ffn":
        return FFN(n_features, n_classes, hidden, dropout)
    name = check_model_name(name)
    if name in MEMORY_MODELS:
        return MemKNN(n_features, n_classes, K, hidden, tau, dropout, vector_head=name == "mnknn-vec",
                      memory_labels=memory_labels, attention_scale=attention_scale)
    return Seq2KNN(n_features, n_classes, K, hidden, tau, dropout, label_head=name in LABEL_MODELS, vector_head=name in VECTOR_MODELS)
