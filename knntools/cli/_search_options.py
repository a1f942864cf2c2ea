"""Shared typer options for every command that searches neighbours.

Used by ``index``, ``dknn``, ``lasenn``, ``distill-knet``, ``probe`` and ``seq2knn`` so that one
concept has one flag everywhere. Import the aliases and give the default in the signature::

    from knntools.cli._search_options import Backend, Metric, IndexPath, Ef, HnswM, EfConstruction
    from knntools.cli._search_options import search_params

    def dknn_cli(..., backend: Backend = "exact", metric: Metric = "l2",
                 M: HnswM = None, ef_construction: EfConstruction = None, ef: Ef = None, ...):
        params = search_params(backend, M=M, ef_construction=ef_construction, ef=ef,
                               num_threads=num_threads, seed=seed, device=device)
        index = make_index(backend, metric=metric, **params).fit(X)

Values arrive as plain ``str`` / ``int`` / ``Path`` (choices are ``Literal`` types, not Enums).
This module must stay light: no torch, hnswlib or numpy imports (``--help`` and shell completion
import it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from knntools.errors import InputError
from knntools.search.names import (
    BACKEND_NAMES,
    DISTANCE_UNITS,
    HNSW_DEFAULT_EF_CONSTRUCTION,
    HNSW_DEFAULT_M,
    HNSW_MIN_EF,
    METRICS,
    PRECISIONS,
)

BackendName = Literal[BACKEND_NAMES]  # type: ignore[valid-type]
MetricName = Literal[METRICS]  # type: ignore[valid-type]
PrecisionName = Literal[PRECISIONS]  # type: ignore[valid-type]

PANEL = "Neighbour search"

#: ``--backend exact|hnsw``: exact brute force (torch, chunked, GPU when present) or hnswlib graph.
Backend = Annotated[
    BackendName,
    typer.Option(
        "--backend",
        help="Search backend: 'exact' (brute force: tiled float32 GEMM in numpy's BLAS or torch, whichever is faster here; the reference) or 'hnsw' (hnswlib approximate graph index).",
        rich_help_panel=PANEL,
    ),
]

#: ``--metric l2|cosine|ip``; distances are reported in the metric's own units.
Metric = Annotated[
    MetricName,
    typer.Option(
        "--metric",
        help="Distance: 'l2' (Euclidean, not squared), 'cosine' (1 - cosine similarity) or 'ip' (negative inner product). "
        + "Distances are written ascending in these units.",
        rich_help_panel=PANEL,
    ),
]

#: ``--index PATH``: reuse an index saved by ``knntools index`` (refused if built from another file/layer).
IndexPath = Annotated[
    Optional[Path],
    typer.Option(
        "--index",
        help="Reuse an index saved by `knntools index` instead of building one. Refused when it was built from another file, layer or metric.",
        dir_okay=False,
        rich_help_panel=PANEL,
    ),
]

#: ``--ef N``: hnsw search breadth (stored with the index; raised to k for a query when smaller).
Ef = Annotated[
    Optional[int],
    typer.Option(
        "--ef",
        min=1,
        help=f"hnsw search breadth ef (recall/speed trade-off). Default: the index's stored ef, else max({HNSW_MIN_EF}, 2k). Raised to k when smaller.",
        rich_help_panel=PANEL,
    ),
]

#: ``--M N``: hnsw graph degree.
HnswM = Annotated[
    Optional[int],
    typer.Option("--M", min=2, help=f"hnsw graph degree M. [default: {HNSW_DEFAULT_M}]", rich_help_panel=PANEL),
]

#: ``--ef-construction N``: hnsw build breadth.
EfConstruction = Annotated[
    Optional[int],
    typer.Option(
        "--ef-construction",
        min=1,
        help=f"hnsw build breadth ef_construction. [default: {HNSW_DEFAULT_EF_CONSTRUCTION}]",
        rich_help_panel=PANEL,
    ),
]

#: ``--check-recall N``: measure recall@k of the approximate backend against exact on N sampled queries.
CheckRecall = Annotated[
    Optional[int],
    typer.Option(
        "--check-recall",
        min=1,
        metavar="N",
        help="Also measure recall@k of the hnsw results against exact search on N sampled queries (reported, and stored as an attribute).",
        rich_help_panel=PANEL,
    ),
]

#: ``--precision float32|bfloat16|float16``: arithmetic of the exact backend's scoring GEMM.
Precision = Annotated[
    Optional[PrecisionName],
    typer.Option(
        "--precision",
        help="Exact backend: arithmetic of the distance GEMM. 'float32' (default); 'bfloat16' or 'float16' score in low precision, "
        + "re-rank k*4 candidates in float32 and prove each query's answer (else redo it in float32), so the neighbours are the float32 ones; "
        + "faster where low-precision matrix products are (GPUs, CPUs with AVX512-BF16/AMX).",
        rich_help_panel=PANEL,
    ),
]

#: Options that only the hnsw backend understands (flag name -> parameter name).
_HNSW_ONLY = {"--M": "M", "--ef-construction": "ef_construction", "--ef": "ef"}


def search_params(
    backend: str,
    *,
    M: int | None = None,
    ef_construction: int | None = None,
    ef: int | None = None,
    num_threads: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """Turn the shared CLI options into ``make_index(backend, **params)`` keyword arguments.

    Options left at ``None`` are omitted (the backend's defaults apply); ``num_threads=0`` means
    all cores. ``seed`` goes to hnsw only
    (exact search has no randomness); ``device`` and ``precision`` go to exact only (hnswlib runs
    on CPU, in float32).

    Raises
    ------
    InputError
        An hnsw-only option (``--M``, ``--ef-construction``, ``--ef``) given with ``--backend exact``;
        ``--precision`` other than float32 with ``--backend hnsw``; an unknown precision; ``--device
        cuda`` (or ``mps``) on a machine without one (checked here, before any work).
    """
    given = {"M": M, "ef_construction": ef_construction, "ef": ef}
    params: dict[str, Any] = {}
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"--precision {precision}: not understood; expected one of {', '.join(PRECISIONS)}")
    if backend == "hnsw":
        if precision not in (None, "float32"):
            raise InputError(f"--precision {precision}: applies to --backend exact only (hnswlib searches in float32); drop it or use --backend exact")
        params.update({k: v for k, v in given.items() if v is not None})
        if seed is not None:
            params["seed"] = int(seed)
    else:
        bad = [flag for flag, name in _HNSW_ONLY.items() if given[name] is not None]
        if bad:
            raise InputError(f"{', '.join(bad)}: hnsw option(s); expected --backend hnsw (got --backend {backend})")
        if device is not None:
            if device == "mps" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
                from knntools.search.exact import resolve_device  # imports torch: only for an explicit accelerator

                resolve_device(device)
            params["device"] = device
        if precision is not None:
            params["precision"] = precision
    if num_threads:  # None or 0 (the shared --num-threads flag's "all cores") -> backend default
        params["num_threads"] = int(num_threads)
    return params


def distance_units(metric: str) -> str:
    """The ``distance_units`` attribute value for ``metric`` (see :mod:`knntools.search.names`)."""
    return DISTANCE_UNITS[metric]


__all__ = [
    "Backend",
    "BackendName",
    "CheckRecall",
    "Ef",
    "EfConstruction",
    "HnswM",
    "IndexPath",
    "Metric",
    "MetricName",
    "Precision",
    "PrecisionName",
    "distance_units",
    "search_params",
]
