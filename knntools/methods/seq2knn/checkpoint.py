"""seq2knn checkpoints: plain dicts of tensors, numbers and strings in the one knntools checkpoint
format (:mod:`knntools.models.checkpoint`: header ``format = "knntools-checkpoint"``,
``format_version``, ``kind = "seq2knn"``; read with ``torch.load(weights_only=True)``).

:func:`checkpoint_dict` builds one from a trained model (write it with
:func:`knntools.models.checkpoint.write_checkpoint`, ``kind="seq2knn"``), :func:`load_checkpoint`
rebuilds the model, the checkpoint dict and its :class:`Standardizer`. Files of the former
``"knntools-seq2knn"`` version-1 format still load.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from knntools.errors import InputError
from knntools.methods.seq2knn.data import Standardizer
from knntools.methods.seq2knn.models import build_model

#: The checkpoint kind in :mod:`knntools.models.checkpoint` (``ck["kind"]``).
CHECKPOINT_KIND = "seq2knn"
#: The format written before the unified checkpoint header (still read).
CHECKPOINT_FORMAT = "knntools-seq2knn"
#: Out-of-core runs store at most this many random training rows in the checkpoint (full runs store
#: the whole reference set: every training row with ``label_bank=0``).
CHECKPOINT_BANK_ROWS = 4096
#: Version of the legacy ``CHECKPOINT_FORMAT`` (the unified header carries its own ``format_version``).
CHECKPOINT_VERSION = 1


def checkpoint_dict(model: Any, *, name: str, n_features: int, n_classes: int, classes: Sequence[str], hyper: dict[str, Any],
                    scaler: Standardizer, provenance: dict[str, Any] | None = None, memory: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """A self-describing checkpoint: only tensors, numbers, strings, lists and dicts.

    Keys: the header ``format``, ``format_version``, ``kind`` (``"seq2knn"``;
    :func:`knntools.models.checkpoint.make_checkpoint`), ``model`` (name), ``n_features``, ``n_classes``,
    ``classes``, ``hyper`` (K, hidden, tau, lam, alpha, lr, dropout, …), ``scaler_mean`` /
    ``scaler_std`` (float32 tensors [D]), ``state_dict``, ``provenance`` (plain dict) and, for
    MNkNN models and V2VS, ``memory_x`` [m, D] / ``memory_y`` [m]: the standardised training samples
    their memories (MNkNN) or 1-NN labelling (V2VS) draw from at inference.
    """
    import torch

    from knntools.models.checkpoint import make_checkpoint

    ck: dict[str, Any] = {
        "model": name,
        "n_features": int(n_features), "n_classes": int(n_classes), "classes": [str(c) for c in classes],
        "hyper": {k: (float(v) if isinstance(v, float) else v) for k, v in hyper.items()},
        "scaler_mean": torch.from_numpy(np.asarray(scaler.mean, dtype=np.float32)),
        "scaler_std": torch.from_numpy(np.asarray(scaler.std, dtype=np.float32)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "provenance": dict(provenance or {}),
    }
    if memory is not None:
        ck["memory_x"] = torch.from_numpy(np.ascontiguousarray(memory[0], dtype=np.float32))
        ck["memory_y"] = torch.from_numpy(np.asarray(memory[1], dtype=np.int64))
    return make_checkpoint(ck, kind=CHECKPOINT_KIND)


def load_checkpoint(path: Any) -> tuple[Any, dict[str, Any], Standardizer]:
    """Load a checkpoint written by ``knntools seq2knn`` with ``torch.load(weights_only=True)``.

    Returns
    -------
    (model in eval mode, checkpoint dict, Standardizer)

    Raises
    ------
    InputError
        Missing file; SchemaError (an InputError) for a file that is not a seq2knn checkpoint
        (:func:`knntools.models.checkpoint.read_checkpoint`).
    """
    from knntools.models.checkpoint import read_checkpoint

    ck = read_checkpoint(path, kind=CHECKPOINT_KIND, expected="a seq2knn checkpoint written by `knntools seq2knn`")
    h = ck["hyper"]
    # checkpoints written before these options existed used the label embedding and the 1/sqrt(d) scaling
    model = build_model(ck["model"], ck["n_features"], ck["n_classes"], K=int(h["K"]), hidden=int(h["hidden"]), tau=float(h["tau"]), dropout=float(h["dropout"]),
                        memory_labels=bool(h.get("memory_labels", True)), attention_scale=bool(h.get("attention_scale", True)))
    model.load_state_dict(ck["state_dict"])
    model.eval()
    scaler = Standardizer(ck["scaler_mean"].numpy(), ck["scaler_std"].numpy())
    return model, ck, scaler
