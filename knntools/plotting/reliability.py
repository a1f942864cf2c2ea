"""Reliability diagrams: accuracy of predictions binned by a confidence score.

Figure 1 of Liu's DkNN report (after Papernot & McDaniel, 2018): bars (left axis) give the mean
accuracy of the predictions whose score falls in each bin; a red line (right axis) gives the number
of points per bin. Drawn side by side for the DNN's softmax confidence (max softmax probability)
and the DkNN credibility.

:func:`reliability_bins` is pure numpy (testable); :func:`reliability_figure` builds a matplotlib
``Figure`` without pyplot, so it works under any backend and leaves no global state. Saving is
the caller's job (``fig.savefig(tmp, format="png")`` inside :func:`knntools.io.h5.atomic_path`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass
class ReliabilityBins:
    """Per-bin statistics of a reliability diagram.

    Attributes
    ----------
    edges : ndarray (n_bins + 1,), float64   bin edges on [0, 1]; the last bin includes 1.0
    counts : ndarray (n_bins,), int64        points per bin
    accuracy : ndarray (n_bins,), float64    mean correctness per bin (NaN for an empty bin)
    mean_score : ndarray (n_bins,), float64  mean score per bin (NaN for an empty bin)
    ece : float                              expected calibration error Σ_b (n_b/N)·|acc_b − score_b|
    """

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    mean_score: np.ndarray
    ece: float


def reliability_bins(scores: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> ReliabilityBins:
    """Bin ``scores`` in ``n_bins`` equal-width bins of [0, 1] and average ``correct`` per bin.

    Parameters
    ----------
    scores : ndarray (n,), float in [0, 1]
        Confidence scores (credibility, max softmax probability…). Values are clipped to [0, 1].
    correct : ndarray (n,), bool
        Whether each prediction is right.
    n_bins : int, default 10

    Returns
    -------
    ReliabilityBins

    Raises
    ------
    ValueError
        Different lengths or ``n_bins < 1``.
    """
    s = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), 0.0, 1.0)
    c = np.asarray(correct, dtype=np.float64).reshape(-1)
    if len(s) != len(c):
        raise ValueError(f"scores has {len(s)} values but correct has {len(c)}")
    if n_bins < 1:
        raise ValueError(f"n_bins {n_bins}; expected >= 1")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.minimum((s * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=c, minlength=n_bins) / counts
        mean = np.bincount(idx, weights=s, minlength=n_bins) / counts
    nz = counts > 0
    ece = float(np.sum(counts[nz] / max(1, len(s)) * np.abs(acc[nz] - mean[nz]))) if len(s) else 0.0
    return ReliabilityBins(edges, counts, acc, mean, ece)


def plot_reliability(ax: Any, scores: np.ndarray, correct: np.ndarray, *, n_bins: int = 10, title: str = "", xlabel: str = "score") -> ReliabilityBins:
    """Draw one reliability diagram on ``ax``: accuracy bars (left axis), points per bin (red, right axis).

    Parameters
    ----------
    ax : matplotlib Axes
    scores, correct, n_bins : see :func:`reliability_bins`
    title, xlabel : str

    Returns
    -------
    ReliabilityBins  the statistics drawn
    """
    b = reliability_bins(scores, correct, n_bins)
    width = 1.0 / n_bins
    centers = b.edges[:-1] + width / 2
    ax.bar(centers, np.nan_to_num(b.accuracy), width=width * 0.9, color="tab:blue", alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (bars)")
    ax.set_title(f"{title}\nmean {xlabel} {np.mean(scores) if len(scores) else float('nan'):.3f}, "
                 f"accuracy {np.mean(correct) if len(correct) else float('nan'):.3f}", fontsize=9)
    ax2 = ax.twinx()
    ax2.plot(centers, b.counts, color="red", marker="o", ms=3, lw=1.2, label="points per bin")
    ax2.set_ylabel("points per bin (red)", color="red")
    ax2.tick_params(axis="y", colors="red")
    ax2.set_ylim(0, max(1, int(b.counts.max())) * 1.05)
    return b


def reliability_figure(panels: Sequence[dict[str, Any]], *, n_bins: int = 10, ncols: int = 2, suptitle: str | None = None) -> Any:
    """A figure of reliability diagrams, one per panel, in rows of ``ncols``.

    Parameters
    ----------
    panels : sequence of dict
        Each with ``scores`` (n,), ``correct`` (n,) bool, and optional ``title`` and ``xlabel``.
    n_bins : int, default 10
    ncols : int, default 2
    suptitle : str, optional

    Returns
    -------
    matplotlib.figure.Figure  (created without pyplot)
    """
    from matplotlib.figure import Figure

    n = len(panels)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(5.2 * ncols, 4.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, panel in enumerate(panels):
        plot_reliability(axes[i // ncols][i % ncols], np.asarray(panel["scores"]), np.asarray(panel["correct"]), n_bins=n_bins,
                         title=panel.get("title", ""), xlabel=panel.get("xlabel", "score"))
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def dknn_panels(*, credibility: np.ndarray, dknn_correct: np.ndarray, dnn_confidence: np.ndarray | None = None,
                dnn_correct: np.ndarray | None = None, label: str = "") -> list[dict[str, Any]]:
    """Panels of the report's Figure 1 for one evaluated set: DNN softmax (left), DkNN credibility (right).

    The DNN panel is omitted when ``dnn_confidence`` is None (no logits stored).
    """
    tag = f" ({label})" if label else ""
    panels = []
    if dnn_confidence is not None and dnn_correct is not None:
        panels.append({"scores": dnn_confidence, "correct": dnn_correct, "title": f"DNN softmax{tag}", "xlabel": "softmax confidence"})
    panels.append({"scores": credibility, "correct": dknn_correct, "title": f"DkNN{tag}", "xlabel": "credibility"})
    return panels


__all__ = ["ReliabilityBins", "dknn_panels", "plot_reliability", "reliability_bins", "reliability_figure"]
