"""Names and units of the search layer (no heavy imports: the CLI reads these at import time).

Every backend returns distances in the metric's own units, sorted ascending:

=========  =====================================  ==========================================
metric     distance                               ``distance_units`` attribute
=========  =====================================  ==========================================
``l2``     ``||q - x||`` (Euclidean, NOT squared)  ``"euclidean"``
``cosine`` ``1 - cos(q, x)``, in ``[0, 2]``         ``"1 - cosine_similarity"``
``ip``     ``-<q, x>`` (negative inner product:    ``"negative_inner_product"``
           ascending = most similar first)
=========  =====================================  ==========================================
"""

from __future__ import annotations

#: Supported metrics, in the order shown to users.
METRICS: tuple[str, ...] = ("l2", "cosine", "ip")

#: Registered backend names (``knntools.search.registry.BACKENDS`` maps them to classes).
BACKEND_NAMES: tuple[str, ...] = ("exact", "hnsw")

#: Backend the ``index`` command builds by default.
DEFAULT_BACKEND = "hnsw"

#: Value of the ``distance_units`` attribute written with distances of each metric.
DISTANCE_UNITS: dict[str, str] = {
    "l2": "euclidean",
    "cosine": "1 - cosine_similarity",
    "ip": "negative_inner_product",
}

#: Default hnsw parameters (see :class:`knntools.search.hnsw.HnswIndex`).
HNSW_DEFAULT_M = 16
HNSW_DEFAULT_EF_CONSTRUCTION = 200
#: ``ef`` used at query time when none is set: ``max(HNSW_MIN_EF, 2 * k)``.
HNSW_MIN_EF = 200

#: Arithmetic of the exact backend's scoring GEMM (``--precision``); the results are float32-exact
#: whatever the choice (low precision picks candidates that are re-ranked and certified in float32).
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "float16")
