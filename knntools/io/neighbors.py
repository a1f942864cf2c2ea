"""The ``neighbors`` file kind (written by ``knntools index --query``), in the ann-benchmarks spirit.

Layout (format version 1, see :mod:`knntools.io.h5` for the root provenance attributes)::

    ids                           int64 [N]     the queries' ids (row in their source split)
    labels                        int64 [N]     the queries' labels, when the query file has them
    neighbors/<layer>/ids         int64 [N, k]  training ids of the neighbours (the base file's ``ids``)
    neighbors/<layer>/indices     int64 [N, k]  rows of the base file's layer
    neighbors/<layer>/distances   float32 [N, k] ascending, in ``distance_units``

Root attributes: ``metric`` (l2 | cosine | ip), ``distance_units`` (euclidean |
1 - cosine_similarity | negative_inner_product), ``k``, ``backend``, ``params`` (JSON),
``layers`` (JSON list), ``base_uuid``, ``query_uuid``, ``exclude_self`` (bool: the base file was
searched against itself, own rows excluded), ``classes``; each ``neighbors/<layer>``
group carries ``n_features``, ``index`` (path of the index used, or "") and ``recall_at_k``
(-1 when not measured).

Per-shard files (``knntools index PART --query FILE`` on one shard of a base) hold *global* rows
of the full base in ``indices`` and record the shard in the root attributes :data:`SHARD_ATTRS`:
``base_shard_index``, ``base_shard_count``, ``base_row_start``, ``base_row_stop``,
``base_total_rows`` (the indexed rows are ``[base_row_start, base_row_stop)`` of
``base_total_rows``), plus ``base_model_uuid``. ``knntools.search.sharded.merge_neighbor_files``
combines them into the global top-k; the merged file records ``base_part_uuids`` and
``base_total_rows``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from knntools.errors import SchemaError
from knntools.io.h5 import KFile, create, create_stream, set_attrs, write_array

#: Root attributes of a per-shard neighbours file (which rows of the full base were searched).
SHARD_ATTRS = ("base_shard_index", "base_shard_count", "base_row_start", "base_row_stop", "base_total_rows")


def write_neighbors(
    path: str | os.PathLike,
    *,
    layers: Mapping[str, Mapping[str, Any]],
    query_ids: np.ndarray,
    metric: str,
    distance_units: str,
    k: int,
    backend: str,
    params: Mapping[str, Any] | None = None,
    query_labels: np.ndarray | None = None,
    classes: Sequence[str] = (),
    layer_attrs: Mapping[str, Mapping[str, Any]] | None = None,
    attrs: Mapping[str, Any] | None = None,
    parents: Iterable[str] = (),
    seed: int | None = None,
    force: bool = False,
) -> str:
    """Write a ``neighbors`` file atomically; returns its uuid.

    Parameters
    ----------
    layers : mapping layer name -> {"ids", "indices", "distances"}
        Per layer: ``ids`` int64 (N, k) training ids, ``indices`` int64 (N, k) base rows,
        ``distances`` float32 (N, k) ascending.
    query_ids : ndarray of shape (N,), int
    metric, distance_units, k, backend, params
        Stored as root attributes.
    query_labels : ndarray of shape (N,), int, optional
    layer_attrs : mapping layer name -> dict, optional
        Extra attributes of each ``neighbors/<layer>`` group (e.g. ``recall_at_k``, ``index``).

    Raises
    ------
    InputError
        Destination exists without ``force`` (see :func:`knntools.io.h5.create`).
    """
    names = list(layers)
    root = {
        "metric": metric,
        "distance_units": distance_units,
        "k": int(k),
        "backend": backend,
        "params": dict(params or {}),
        "layers": names,
        "classes": list(classes),
        **dict(attrs or {}),
    }
    with create(path, "neighbors", parents=parents, seed=seed, force=force, attrs=root) as f:
        write_array(f, "ids", np.asarray(query_ids, dtype=np.int64))
        if query_labels is not None:
            write_array(f, "labels", np.asarray(query_labels, dtype=np.int64))
        for name in names:
            group = layers[name]
            write_array(f, f"neighbors/{name}/ids", np.asarray(group["ids"], dtype=np.int64))
            write_array(f, f"neighbors/{name}/indices", np.asarray(group["indices"], dtype=np.int64))
            write_array(f, f"neighbors/{name}/distances", np.asarray(group["distances"], dtype=np.float32))
            set_attrs(f[f"neighbors/{name}"], dict((layer_attrs or {}).get(name, {})))
        return str(f.attrs["uuid"])


@contextlib.contextmanager
def create_neighbors(
    path: str | os.PathLike,
    *,
    layers: Sequence[str],
    n_queries: int,
    k: int,
    query_ids: np.ndarray,
    query_labels: np.ndarray | None = None,
    attrs: Mapping[str, Any] | None = None,
    layer_attrs: Mapping[str, Mapping[str, Any]] | None = None,
    parents: Iterable[str] = (),
    force: bool = False,
) -> Iterator[tuple[Any, dict[str, dict[str, Any]]]]:
    """Create a ``neighbors`` file to be filled in query chunks (streaming writes), atomically.

    Parameters
    ----------
    layers : sequence of str
    n_queries, k : int
        Shape ``(n_queries, k)`` of every layer's datasets.
    query_ids : ndarray of shape (n_queries,), int
    query_labels : ndarray of shape (n_queries,), int, optional
    attrs : mapping
        Root attributes (``metric``, ``distance_units``, ``backend``, ``params``, ...); ``k`` and
        ``layers`` are set here.
    layer_attrs : mapping layer -> dict, optional

    Yields
    ------
    (h5py.File, dict)
        The open file and, per layer, the empty datasets ``{"ids", "indices", "distances"}``
        (int64, int64, float32, shape ``(n_queries, k)``) to fill. The file is renamed into place
        only when the block finishes without an exception.

    Raises
    ------
    InputError
        Destination exists without ``force`` (see :func:`knntools.io.h5.create`).
    """
    root = {**dict(attrs or {}), "k": int(k), "layers": list(layers)}
    with create(path, "neighbors", parents=parents, force=force, attrs=root) as f:
        write_array(f, "ids", np.asarray(query_ids, dtype=np.int64))
        if query_labels is not None:
            write_array(f, "labels", np.asarray(query_labels, dtype=np.int64))
        out: dict[str, dict[str, Any]] = {}
        for name in layers:
            out[name] = {
                "ids": create_stream(f, f"neighbors/{name}/ids", (n_queries, k), np.int64),
                "indices": create_stream(f, f"neighbors/{name}/indices", (n_queries, k), np.int64),
                "distances": create_stream(f, f"neighbors/{name}/distances", (n_queries, k), np.float32),
            }
            set_attrs(f[f"neighbors/{name}"], dict((layer_attrs or {}).get(name, {})))
        yield f, out


def read_neighbors(kf: KFile, layer: str) -> dict[str, np.ndarray]:
    """Read one layer of a ``neighbors`` file.

    Returns
    -------
    dict
        ``ids`` int64 (N, k), ``indices`` int64 (N, k), ``distances`` float32 (N, k).

    Raises
    ------
    SchemaError
        Not a neighbors file, or ``layer`` missing (the message lists the stored layers).
    """
    if kf.kind != "neighbors":
        raise SchemaError(f"{kf.path}: file kind is '{kf.kind}'; expected 'neighbors' (written by `knntools index` with a query file)")
    stored = [str(n) for n in (kf.attrs.get("layers") or [])]
    if f"neighbors/{layer}" not in kf.f:
        raise SchemaError(f"{kf.path}: layer '{layer}' not found (available: {', '.join(stored) or 'none'})")
    return {
        "ids": kf.read(f"neighbors/{layer}/ids").astype(np.int64, copy=False),
        "indices": kf.read(f"neighbors/{layer}/indices").astype(np.int64, copy=False),
        "distances": kf.read(f"neighbors/{layer}/distances").astype(np.float32, copy=False),
    }
