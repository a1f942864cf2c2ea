"""Self-describing model checkpoints (``.pt``) loadable with ``torch.load(weights_only=True)``.

A knntools checkpoint is a plain dict of strings, numbers, lists, dicts and tensors only (never
pickled objects), so loading a user's file cannot execute code::

    format            "knntools-model"
    format_version    1
    arch              registry name ("dknn-cnn", "resnet18", …)
    arch_kwargs       dict of architecture keyword arguments
    input_shape       per-sample input shape, e.g. [1, 28, 28] or [30]
    classes           class names, index = label
    normalization     {"mean": [...], "std": [...]}: the network sees (x - mean) / std, per channel
                      (images, x in [0, 1]) or per feature (tables); empty lists = identity
    state_dict        parameter and buffer tensors
    provenance        {"model_uuid", "created", "knntools_version", "command", "dataset", "data_dir",
                       "split", "n_train", "labels_file", "labels_uuid", "subset", "seed",
                       "hyperparameters": {...}, "device", "n_parameters", "torch_version",
                       "num_threads" (torch CPU threads: with the seed, what makes a run repeatable),
                       "world_size", "backend" (processes under torchrun and their backend)}
    train_labels      int64 tensor [N_train]: the labels the network was trained with, one per row of
                      the training split (noisy labels when a labels file was used), or absent
    subset_ids        int64 tensor: rows of the training split used (``--subset``), or absent
    history           list of per-epoch metric dicts (epoch, step, lr, train_loss, train_acc,
                      test_loss, test_acc, time_s)
    training_state    {"epoch", "step", "epoch_step", "optimizer", "scheduler", "scaler", "rng"} for
                      --resume (optional in files written for export)

Checkpoints are written atomically (:func:`knntools.io.h5.atomic_path`), so an interrupted run
keeps the last complete file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from knntools.errors import InputError, SchemaError

FORMAT = "knntools-model"
FORMAT_VERSION = 1


def save_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write ``ckpt`` atomically to ``path`` with ``torch.save``.

    Raises
    ------
    InputError
        Existing file without ``force``, missing folder (see :func:`knntools.io.h5.check_output_path`).
    """
    import torch

    from knntools.io.h5 import atomic_path

    with atomic_path(path, force=force) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def load_error_reason(exc: BaseException) -> str:
    """A short, complete phrase saying why ``torch.load(weights_only=True)`` refused a file.

    torch's own messages run over several sentences (advice to load with ``weights_only=False``,
    which knntools never does); this keeps the part that names the cause, e.g. ``it holds
    pickled code (GLOBAL posix.system), which is never run`` or ``truncated or damaged zip
    archive (failed finding central directory)``.
    """
    import pickle

    text = " ".join(str(exc).split())
    m = re.search(r"(?:unsupported|Unsupported global:?) (GLOBAL [\w.]+)", text)
    if m or (isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text):
        what = m.group(1) if m else "objects outside the weights-only allow-list"
        return f"it holds pickled code ({what}), which knntools never runs"
    m = re.search(r"failed reading zip archive: ([^.]+)", text)
    if m:
        return f"truncated or damaged zip archive ({m.group(1).strip()})"
    first = re.split(r"(?<=[a-z0-9)])\. ", text)[0].rstrip(".") if text else ""
    if not first or isinstance(exc, (IndexError, EOFError, KeyError, ValueError, pickle.UnpicklingError)) and len(first) < 60:
        return f"not a torch checkpoint ({type(exc).__name__}{': ' + first if first else ''})"
    return f"{type(exc).__name__}: {first[:200]}"


def is_torchscript(path: str | os.PathLike) -> bool:
    """True when ``path`` is a TorchScript archive (a zip holding ``constants.pkl`` / ``code/``)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load and validate a knntools checkpoint with ``torch.load(weights_only=True)``.

    Returns
    -------
    dict
        The checkpoint (see module docstring).

    Raises
    ------
    InputError
        Missing file.
    SchemaError
        Not loadable with ``weights_only=True`` (arbitrary pickles are refused), not a knntools
        checkpoint, a newer format version, or missing keys.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, unsafe globals
        raise SchemaError(f"{p}: not a knntools checkpoint ({load_error_reason(exc)}; refused by torch.load(weights_only=True)); "
                          "expected a file written by `knntools train`, a TorchScript file, or --arch NAME --weights FILE") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise SchemaError(f"{p}: not a knntools checkpoint (no format='{FORMAT}' header); expected a file written by "
                          "`knntools train`, a TorchScript file, or a state dict passed as --arch NAME --weights FILE")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SchemaError(f"{p}: checkpoint format_version {version!r}; this knntools reads <= {FORMAT_VERSION}")
    for key in ("arch", "arch_kwargs", "input_shape", "classes", "normalization", "state_dict", "provenance"):
        if key not in ckpt:
            raise SchemaError(f"{p}: checkpoint lacks '{key}'; expected a file written by `knntools train`")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> Any:
    """Rebuild the ``nn.Module`` of a checkpoint and load its weights (eval mode)."""
    from knntools.models.registry import build_model

    model = build_model(ckpt["arch"], ckpt["input_shape"], len(ckpt["classes"]), **dict(ckpt["arch_kwargs"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model
