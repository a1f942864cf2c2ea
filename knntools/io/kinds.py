"""Writers for each file kind of format version 1 (dataset names live here, not in commands).

See the README's "File format" section for the full table. Every writer is atomic and refuses an
existing output unless ``force=True`` (:func:`knntools.io.h5.create`).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from knntools.io.h5 import create, write_array

TRANSITION_CONVENTION = "row-stochastic: transition_matrix[i, j] = P(noisy = j | clean = i)"


def write_labels(
    path: str | os.PathLike,
    *,
    labels: np.ndarray,
    labels_clean: np.ndarray,
    ids: np.ndarray,
    transition_matrix: np.ndarray,
    noise_matrix: np.ndarray,
    classes: Sequence[str],
    attrs: Mapping[str, Any] | None = None,
    parents: Iterable[str] = (),
    seed: int | None = None,
    force: bool = False,
) -> str:
    """Write a ``labels`` file (from ``noise``); returns its uuid.

    Datasets: ``labels`` int64 [N] (noisy), ``labels_clean`` int64 [N], ``ids`` int64 [N],
    ``is_noisy`` bool [N], ``transition_matrix`` float64 [C, C], ``noise_matrix`` float64 [C, C]
    (realised). Root attrs: ``classes`` plus ``attrs`` (noise_kind, rate, actual_rate, …).
    """
    with create(path, "labels", parents=parents, seed=seed, force=force, attrs={"classes": list(classes), **(attrs or {})}) as f:
        write_array(f, "labels", np.asarray(labels, dtype=np.int64))
        write_array(f, "labels_clean", np.asarray(labels_clean, dtype=np.int64))
        write_array(f, "ids", np.asarray(ids, dtype=np.int64))
        write_array(f, "is_noisy", np.asarray(labels) != np.asarray(labels_clean))
        write_array(f, "transition_matrix", np.asarray(transition_matrix, dtype=np.float64), per_sample=False, attrs={"convention": TRANSITION_CONVENTION})
        write_array(f, "noise_matrix", np.asarray(noise_matrix, dtype=np.float64), per_sample=False, attrs={"convention": TRANSITION_CONVENTION + " (realised frequencies)"})
        return str(f.attrs["uuid"])


def write_features(
    path: str | os.PathLike,
    *,
    features: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    ids: np.ndarray | None = None,
    synthetic: np.ndarray | None = None,
    feature_names: Sequence[str] = (),
    attrs: Mapping[str, Any] | None = None,
    parents: Iterable[str] = (),
    seed: int | None = None,
    force: bool = False,
) -> str:
    """Write a ``features`` file (tabular data); returns its uuid.

    Datasets: ``features`` float32 [N, D], ``labels`` int64 [N], ``ids`` int64 [N] (−1 for
    synthetic rows), ``synthetic`` bool [N]. Root attrs: ``classes``, ``feature_names``.
    """
    X = np.asarray(features, dtype=np.float32)
    n = len(X)
    ids_arr = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    syn = np.zeros(n, dtype=bool) if synthetic is None else np.asarray(synthetic, dtype=bool)
    base = {"classes": list(classes), "feature_names": list(feature_names)}
    with create(path, "features", parents=parents, seed=seed, force=force, attrs={**base, **(attrs or {})}) as f:
        write_array(f, "features", X)
        write_array(f, "labels", np.asarray(labels, dtype=np.int64))
        write_array(f, "ids", ids_arr)
        write_array(f, "synthetic", syn)
        return str(f.attrs["uuid"])


def write_predictions(
    path: str | os.PathLike,
    *,
    method: str,
    predictions: np.ndarray,
    scores: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray | None,
    classes: Sequence[str],
    extras: Mapping[str, np.ndarray] | None = None,
    neighbors: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
    parents: Iterable[str] = (),
    seed: int | None = None,
    force: bool = False,
) -> str:
    """Write a ``predictions`` file; returns its uuid.

    Datasets: ``predictions`` int64 [N], ``scores`` float32 [N, C] (method-specific: p-values,
    blended probabilities, kNet output…; ``scores`` attr ``meaning`` says which), ``ids`` int64 [N]
    (rows of the evaluated file's source split), ``labels`` int64 [N] (ground truth when known);
    ``extras``: any per-sample arrays (e.g. ``confidence``, ``credibility``,
    ``dnn_predictions``, ``changed``) at the root; ``neighbors/<layer>/<name>`` per layer (e.g.
    ``ids`` int64 [N, k] training ids, ``labels`` int64 [N, k], ``distances`` float32 [N, k]).
    Root attrs: ``method``, ``classes``, ``params`` (JSON), ``metrics`` (JSON), plus ``attrs``.
    """
    root = {"method": method, "classes": list(classes), "params": dict(params or {}), "metrics": dict(metrics or {}), **(attrs or {})}
    with create(path, "predictions", parents=parents, seed=seed, force=force, attrs=root) as f:
        write_array(f, "predictions", np.asarray(predictions, dtype=np.int64))
        write_array(f, "scores", np.asarray(scores, dtype=np.float32))
        write_array(f, "ids", np.asarray(ids, dtype=np.int64))
        if labels is not None:
            write_array(f, "labels", np.asarray(labels, dtype=np.int64))
        for name, arr in (extras or {}).items():
            write_array(f, name, np.asarray(arr))
        for layer, group in (neighbors or {}).items():
            for name, arr in group.items():
                write_array(f, f"neighbors/{layer}/{name}", np.asarray(arr))
        return str(f.attrs["uuid"])


def write_activations(
    path: str | os.PathLike,
    *,
    layers: Mapping[str, np.ndarray],
    logits: np.ndarray | None,
    labels: np.ndarray,
    ids: np.ndarray,
    classes: Sequence[str],
    labels_clean: np.ndarray | None = None,
    penultimate: str | None = None,
    layer_attrs: Mapping[str, Mapping[str, Any]] | None = None,
    dtype: Any = np.float32,
    attrs: Mapping[str, Any] | None = None,
    parents: Iterable[str] = (),
    seed: int | None = None,
    force: bool = False,
) -> str:
    """Write a whole in-memory ``activations`` file (tests, small data); returns its uuid.

    ``embed`` streams the same layout batch by batch with :func:`knntools.io.h5.create_stream`.

    Datasets: ``layers/<name>`` float32|float16 [N, D_name] (flattened per sample; attr ``shape`` =
    per-sample shape before flattening, ``module``, ``pooling``), ``logits`` float32 [N, C],
    ``labels`` int64 [N] (the labels the network was trained with), ``labels_clean`` int64 [N]
    (when known), ``ids`` int64 [N] (row in the source split).
    Root attrs: ``layer_order`` (JSON list, network order), ``penultimate`` (layer name),
    ``classes``, and e.g. ``dataset``, ``split``, ``model_uuid``, ``model_arch``, ``attack``.
    """
    names = list(layers)
    root = {"classes": list(classes), "layer_order": names, "penultimate": penultimate or (names[-1] if names else None), **(attrs or {})}
    with create(path, "activations", parents=parents, seed=seed, force=force, attrs=root) as f:
        for name in names:
            arr = np.asarray(layers[name])
            la = {"shape": list(arr.shape[1:]), "module": name, "pooling": "none", **dict((layer_attrs or {}).get(name, {}))}
            write_array(f, f"layers/{name}", arr.reshape(len(arr), -1).astype(dtype), attrs=la)
        if logits is not None:
            write_array(f, "logits", np.asarray(logits, dtype=np.float32))
        write_array(f, "labels", np.asarray(labels, dtype=np.int64))
        if labels_clean is not None:
            write_array(f, "labels_clean", np.asarray(labels_clean, dtype=np.int64))
        write_array(f, "ids", np.asarray(ids, dtype=np.int64))
        return str(f.attrs["uuid"])
