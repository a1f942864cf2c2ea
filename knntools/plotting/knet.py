"""Plots of ``knntools distill-knet`` evaluations (Mizrahi & Avidan, kNet, Figure 3 and Tables 2–5).

Functions take the evaluation rows (``list`` of dicts as produced by the command's JSON
``approximation`` / ``accuracy`` entries) and return a ``matplotlib.figure.Figure`` built without
pyplot (no global state, any backend); the command saves it atomically with
:func:`knntools.io.h5.atomic_path`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def _by_k(rows: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[int]]:
    rows = sorted(rows, key=lambda r: int(r["k"]))
    return rows, [int(r["k"]) for r in rows]


def _knn_and_knet(ax: Any, ks: list[int], knn: list[float] | None, knet: list[float]) -> None:
    """kNN (red circles; skipped when None) and kNet (blue squares) against k."""
    if knn is not None:
        ax.plot(ks, knn, "o-", color="tab:red", ms=3, label="kNN")
    ax.plot(ks, knet, "s--", color="tab:blue", ms=3, label="kNet")


def _k_axis(ax: Any, ylabel: str) -> None:
    ax.set_xlabel("k")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)


def plot_approximation(rows: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Any:
    """Figure 3: how closely kNet follows kNN, against k.

    Parameters
    ----------
    rows : sequence of dict
        One per k, with keys ``k`` (int), ``mad`` (mean absolute difference between kNet's and
        kNN's normalised vote vectors, over samples and classes), ``max_knn`` and ``max_knet``
        (mean over samples of each distribution's largest entry).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Two panels: top, ``mad`` against k; bottom, ``max_knn`` and ``max_knet`` against k.
    """
    from matplotlib.figure import Figure

    rows, ks = _by_k(rows)
    fig = Figure(figsize=(5.0, 5.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(ks, [float(r["mad"]) for r in rows], "o-", color="tab:purple", ms=3)
    top.set_ylabel("mean |kNet − kNN|")
    top.grid(alpha=0.3)
    _knn_and_knet(bottom, ks, [float(r["max_knn"]) for r in rows], [float(r["max_knet"]) for r in rows])
    _k_axis(bottom, "mean max probability")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_accuracy(rows: Sequence[Mapping[str, Any]], *, base_accuracy: float | None = None, title: str | None = None) -> Any:
    """Tables 2–5 as a plot: test accuracy of kNN and kNet against k, the base network as a line.

    Parameters
    ----------
    rows : sequence of dict
        One per k with ``k``, ``knn_accuracy`` (may be None when kNN was skipped) and
        ``knet_accuracy``.
    base_accuracy : float, optional
        The preliminary network's accuracy (horizontal line).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    rows, ks = _by_k(rows)
    fig = Figure(figsize=(5.0, 3.2), layout="constrained")
    ax = fig.subplots()
    knn = [r.get("knn_accuracy") for r in rows]
    _knn_and_knet(ax, ks, [float("nan") if v is None else float(v) for v in knn] if any(v is not None for v in knn) else None,
                  [float(r["knet_accuracy"]) for r in rows])
    if base_accuracy is not None:
        ax.axhline(float(base_accuracy), color="black", lw=1.0, label="network")
    _k_axis(ax, "test accuracy")
    if title:
        ax.set_title(title, fontsize=10)
    return fig
