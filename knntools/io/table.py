"""The ``table`` file kind: a small column table (results of ``knntools probe``) in the knntools format.

Layout (format version 1)::

    /columns/<name>   one 1-D dataset per column, all of length n_rows; numbers as int64/float64,
                      text as UTF-8 strings; attribute ``axis0 = "rows"`` (rows are not samples)
    root attrs        ``columns`` (JSON list, column order), ``n_rows``, ``table`` (what one row is),
                      plus the caller's ``attrs`` (e.g. ``params``, ``summary``) and the provenance
                      attributes of :mod:`knntools.io.h5`.

Writing is atomic (:func:`knntools.io.h5.create`); an existing output is refused unless ``force``.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from knntools.errors import SchemaError
from knntools.io.h5 import KFile, create, set_attrs


def _column_array(name: str, values: Sequence[Any]) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind in "US" or arr.dtype == object:
        return np.asarray([str(v) for v in values], dtype=object)
    if arr.dtype.kind == "b":
        return arr.astype(bool)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        return arr.astype(np.float64)
    raise ValueError(f"column {name!r}: unsupported dtype {arr.dtype}")


def rows_to_columns(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> dict[str, list[Any]]:
    """Turn a list of row dicts into ordered columns (missing values become NaN / "")."""
    names: list[str] = list(columns) if columns is not None else []
    if columns is None:
        for r in rows:
            for key in r:
                if key not in names:
                    names.append(key)
    out: dict[str, list[Any]] = {n: [] for n in names}
    for r in rows:
        for n in names:
            v = r.get(n)
            if v is None:
                v = float("nan")
            out[n].append(v)
    for n, vals in out.items():  # a text column with holes: fill with ""
        if any(isinstance(v, str) for v in vals):
            out[n] = ["" if (isinstance(v, float) and np.isnan(v)) else v for v in vals]
    return out


def write_table(
    path: str | os.PathLike,
    columns: Mapping[str, Sequence[Any]],
    *,
    table: str = "",
    attrs: Mapping[str, Any] | None = None,
    parents: Iterable[str] = (),
    seed: int | None = None,
    force: bool = False,
) -> str:
    """Write a ``table`` file; returns its uuid.

    Parameters
    ----------
    path : path-like
    columns : mapping name -> sequence
        Columns of equal length (numbers, bools or strings).
    table : str
        What one row describes (root attribute ``table``).
    attrs : mapping, optional
        Extra root attributes (lists/dicts are stored as JSON).

    Raises
    ------
    ValueError
        Columns of different lengths (a programming error).
    InputError
        The output exists without ``force`` (see :func:`knntools.io.h5.create`).
    """
    arrays = {name: _column_array(name, vals) for name, vals in columns.items()}
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) > 1:
        raise ValueError(f"table columns have different lengths: {sorted(lengths)}")
    n_rows = lengths.pop() if lengths else 0
    root = {"columns": list(arrays), "n_rows": int(n_rows), "table": table, **(attrs or {})}
    with create(path, "table", parents=parents, seed=seed, force=force, attrs=root) as f:
        for name, arr in arrays.items():
            if arr.dtype == object:
                import h5py

                ds = f.create_dataset(f"columns/{name}", data=arr, dtype=h5py.string_dtype())
            else:
                ds = f.create_dataset(f"columns/{name}", data=arr)
            set_attrs(ds, {"axis0": "rows"})
        return str(f.attrs["uuid"])


def read_table(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a ``table`` file.

    Returns
    -------
    columns : dict name -> ndarray (strings decoded to ``str`` objects), in column order
    attrs : dict   root attributes (JSON decoded)

    Raises
    ------
    SchemaError
        Not a table file, or a listed column is missing.
    """
    with KFile(path, kind="table") as kf:
        names = kf.attrs.get("columns") or []
        cols: dict[str, np.ndarray] = {}
        for name in names:
            key = f"columns/{name}"
            if key not in kf.f:
                raise SchemaError(f"{kf.path}: column '{name}' listed in attribute 'columns' but dataset {key} is missing")
            ds = kf.f[key]
            if h5py_is_string(ds):
                cols[name] = np.asarray(ds.asstr()[()], dtype=object)
            else:
                cols[name] = np.asarray(ds[()])
        return cols, dict(kf.attrs)


def h5py_is_string(ds: Any) -> bool:
    """Whether an h5py dataset holds strings."""
    import h5py

    return h5py.check_string_dtype(ds.dtype) is not None
