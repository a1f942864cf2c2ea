"""Self-describing checkpoints (``.pt``) of every kind knntools writes, loadable with ``torch.load(weights_only=True)``.

One format for every ``.pt`` knntools writes: the classifier of ``knntools train`` (kind
``"model"``), the kNet of ``knntools distill-knet`` (kind ``"knet"``) and the seq2knn network of
``knntools seq2knn`` (kind ``"seq2knn"``). A checkpoint is a plain dict of strings, numbers, lists,
dicts and tensors only (never pickled objects), so loading a user's file cannot execute code.
Every checkpoint starts with the same header::

    format            "knntools-checkpoint"
    format_version    2
    kind              "model" | "knet" | "seq2knn"

followed by the keys of its kind (:data:`REQUIRED_KEYS` lists those a reader checks).

``kind="model"`` (``knntools train``)::

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
    metrics           last epoch's train/test loss and accuracy (final checkpoints)
    training_state    {"epoch", "step", "epoch_step", "optimizer", "scheduler", "scaler", "rng"} for
                      --resume (optional in files written for export)

``kind="knet"`` (:func:`knntools.methods.knet.to_checkpoint`): ``architecture``, ``config``,
``state_dict``, ``n_parameters``, ``meta``. ``kind="seq2knn"``
(:func:`knntools.methods.seq2knn.checkpoint_dict`): ``model``, ``n_features``, ``n_classes``,
``classes``, ``hyper``, ``scaler_mean``, ``scaler_std``, ``state_dict``, ``provenance`` and
optionally ``memory_x`` / ``memory_y``.

Earlier releases wrote one format per kind: ``format="knntools-model"``, ``"knntools-knet"`` and
``"knntools-seq2knn"``, each ``format_version`` 1 and without ``kind``. :func:`read_checkpoint`
reads them too (:data:`LEGACY_FORMATS`) and adds the ``kind`` they imply.

Checkpoints are written atomically (:func:`knntools.io.h5.atomic_path`), so an interrupted run
keeps the last complete file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from knntools.errors import InputError, SchemaError

#: The ``format`` of every checkpoint knntools writes.
FORMAT = "knntools-checkpoint"
#: The version this knntools writes; it reads every version up to this one.
FORMAT_VERSION = 2
#: Checkpoint kinds: the ``kind`` header field.
KINDS = ("model", "knet", "seq2knn")
#: Formats of earlier releases (one per kind, all version 1): format -> (kind, newest version).
LEGACY_FORMATS = {"knntools-model": ("model", 1), "knntools-knet": ("knet", 1), "knntools-seq2knn": ("seq2knn", 1)}
#: Keys a reader requires for each kind (besides the header).
REQUIRED_KEYS = {
    "model": ("arch", "arch_kwargs", "input_shape", "classes", "normalization", "state_dict", "provenance"),
    "knet": ("config", "state_dict", "meta"),
    "seq2knn": ("model", "n_features", "n_classes", "classes", "hyper", "scaler_mean", "scaler_std", "state_dict", "provenance"),
}
#: The command that writes each kind (for messages).
WRITERS = {"model": "`knntools train`", "knet": "`knntools distill-knet`", "seq2knn": "`knntools seq2knn`"}
_HEADER = ("format", "format_version", "kind")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; expected one of {KINDS}")


def checkpoint_header(kind: str) -> dict[str, Any]:
    """The header every checkpoint starts with: ``{"format", "format_version", "kind"}``.

    Raises
    ------
    ValueError
        ``kind`` is not one of :data:`KINDS` (a programming error, not user input).
    """
    _check_kind(kind)
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind}


def make_checkpoint(body: Mapping[str, Any], *, kind: str) -> dict[str, Any]:
    """``body`` under the current header: :func:`checkpoint_header` first, then ``body``'s keys.

    A header already in ``body`` (e.g. a dict of an earlier format) is replaced.

    Raises
    ------
    ValueError
        Unknown ``kind``, or ``body`` lacks a key of :data:`REQUIRED_KEYS` (programming errors).
    """
    ckpt = checkpoint_header(kind)
    ckpt.update((k, v) for k, v in body.items() if k not in _HEADER)
    missing = [k for k in REQUIRED_KEYS[kind] if k not in ckpt]
    if missing:
        raise ValueError(f"a {kind} checkpoint needs {', '.join(missing)}")
    return ckpt


def write_checkpoint(ckpt: Mapping[str, Any], path: str | os.PathLike, *, kind: str, force: bool = False) -> Path:
    """Write ``ckpt`` (the keys of ``kind``) under the current header, atomically, with ``torch.save``.

    Parameters
    ----------
    ckpt : mapping
        The checkpoint body: plain values and tensors only (see the module docstring for each
        kind); a header in it is replaced by :func:`checkpoint_header` ``(kind)``.
    path : path-like
        Destination ``.pt``; written to a temporary file and renamed.
    kind : {"model", "knet", "seq2knn"}
    force : bool, default False
        Overwrite an existing file.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        Existing file without ``force``, missing folder (see :func:`knntools.io.h5.check_output_path`).
    ValueError
        Unknown ``kind`` or missing keys (programming errors).
    """
    import torch

    from knntools.io.h5 import atomic_path

    full = make_checkpoint(ckpt, kind=kind)
    with atomic_path(path, force=force) as tmp:
        torch.save(full, tmp)
    return Path(path)


def _expected(kind: str | None) -> str:
    if kind is None:
        return "a .pt written by knntools (train, distill-knet, seq2knn)"
    return f"a {kind} checkpoint written by {WRITERS[kind]}"


def check_checkpoint(obj: Any, *, kind: str | None = None, where: str = "checkpoint", expected: str | None = None) -> dict[str, Any]:
    """Validate a loaded checkpoint dict (current or earlier format) and return it with its ``kind``.

    Parameters
    ----------
    obj : Any
        What ``torch.load(weights_only=True)`` returned.
    kind : {"model", "knet", "seq2knn"}, optional
        The kind required; None accepts any.
    where : str, default "checkpoint"
        Names the source in messages (the file path).
    expected : str, optional
        What messages say was expected (default: "a KIND checkpoint written by `knntools CMD`").

    Returns
    -------
    dict
        A shallow copy of ``obj`` with ``kind`` set (files of :data:`LEGACY_FORMATS` keep their
        ``format`` and ``format_version``, and gain the ``kind`` they imply).

    Raises
    ------
    SchemaError
        Not a knntools checkpoint (no or unknown ``format``), a ``format_version`` newer than this
        knntools reads, a ``kind`` other than the one required, or a missing key of the kind.
    """
    if kind is not None:
        _check_kind(kind)
    want = expected or _expected(kind)
    if not isinstance(obj, dict):
        raise SchemaError(f"{where}: not a knntools checkpoint (holds a {type(obj).__name__}, not a dict with a 'format' header); expected {want}")
    fmt = obj.get("format")
    version = obj.get("format_version")
    if fmt == FORMAT:
        newest, found = FORMAT_VERSION, obj.get("kind")
        if found not in KINDS:
            raise SchemaError(f"{where}: kind: {found!r}; expected one of {', '.join(KINDS)}")
    elif fmt in LEGACY_FORMATS:
        found, newest = LEGACY_FORMATS[fmt]
    else:
        what = f"format {fmt!r}" if fmt is not None else "no 'format' header"
        raise SchemaError(f"{where}: not a knntools checkpoint ({what}); expected {want}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1 or version > newest:
        raise SchemaError(f"{where}: format_version: {version!r} for format {fmt!r}; this knntools reads versions 1 to {newest}")
    if kind is not None and found != kind:
        raise SchemaError(f"{where}: kind: a {found} checkpoint (written by {WRITERS[found]}); expected {want}")
    for key in REQUIRED_KEYS[found]:
        if key not in obj:
            raise SchemaError(f"{where}: {key}: missing from this {found} checkpoint; expected an intact file written by {WRITERS[found]}")
    out = dict(obj)
    out["kind"] = found
    return out


def read_checkpoint(path: str | os.PathLike, *, kind: str | None = None, map_location: Any = "cpu", expected: str | None = None) -> dict[str, Any]:
    """Load a knntools checkpoint of any kind with ``torch.load(weights_only=True)`` and validate it.

    Parameters
    ----------
    path : path-like
        A ``.pt`` written by :func:`write_checkpoint`, or by an earlier release (:data:`LEGACY_FORMATS`).
    kind : {"model", "knet", "seq2knn"}, optional
        The kind required; None accepts any (``info``).
    map_location : default "cpu"
        Passed to ``torch.load``.
    expected : str, optional
        What messages say was expected (default: "a KIND checkpoint written by `knntools CMD`").

    Returns
    -------
    dict
        The checkpoint with ``kind`` set (see :func:`check_checkpoint`).

    Raises
    ------
    InputError
        Missing file.
    SchemaError
        Refused by ``torch.load(weights_only=True)`` (pickled code, truncated or not a torch file),
        or not a checkpoint of the kind required (see :func:`check_checkpoint`).
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file" + (" (a folder)" if p.is_dir() else ""))
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, unsafe globals
        raise SchemaError(f"{p}: not a knntools checkpoint ({load_error_reason(exc)}; refused by torch.load(weights_only=True)); "
                          f"expected {expected or _expected(kind)}") from None
    return check_checkpoint(obj, kind=kind, where=str(p), expected=expected)


def save_checkpoint(ckpt: Mapping[str, Any], path: str | os.PathLike, *, force: bool = False) -> Path:
    """:func:`write_checkpoint` of a ``kind="model"`` checkpoint (what ``knntools train`` writes)."""
    return write_checkpoint(ckpt, path, kind="model", force=force)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """:func:`read_checkpoint` of a ``kind="model"`` checkpoint (what ``knntools train`` writes).

    Raises
    ------
    InputError
        Missing file.
    SchemaError
        See :func:`read_checkpoint`.
    """
    return read_checkpoint(path, kind="model", map_location=map_location)


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


def model_from_checkpoint(ckpt: Mapping[str, Any]) -> Any:
    """Rebuild the ``nn.Module`` of a ``kind="model"`` checkpoint and load its weights (eval mode).

    Parameters
    ----------
    ckpt : mapping
        From :func:`read_checkpoint` ``(path, kind="model")`` or :func:`knntools.models.training.fit_classifier`.

    Returns
    -------
    torch.nn.Module
        In eval mode, on the CPU.
    """
    from knntools.models.registry import build_model

    model = build_model(ckpt["arch"], ckpt["input_shape"], len(ckpt["classes"]), **dict(ckpt["arch_kwargs"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model
