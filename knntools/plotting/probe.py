"""Plots of ``knntools probe`` results (Cohen, Giryes & Sapiro, Figures 1, 2, 4, 5).

Both functions take the probe table as columns (``dict name -> array``, as written by
:func:`knntools.io.table.write_table` and read by :func:`knntools.io.table.read_table`) with at
least ``layer``, ``classifier``, ``split``, ``accuracy``, ``p_same``, ``kl`` (and ``step`` for
curves), and return a ``matplotlib.figure.Figure`` built without pyplot.

Colours follow the paper: DNN black, k-NN red, SVM blue, LR green.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

COLORS = {"dnn": "black", "knn": "tab:red", "svm": "tab:blue", "lr": "tab:green"}
LABELS = {"dnn": "DNN", "knn": "k-NN", "svm": "SVM", "lr": "LR"}
METRICS = (("accuracy", "accuracy"), ("p_same", "P_SAME (Eq. 2)"), ("kl", "D_KL(M || DNN) (Eq. 1)"))
_STYLES = ("-", "--", ":", "-.")


def _figure(nrows: int, ncols: int, width: float = 4.2, height: float = 2.8) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


def _splits(cols: Mapping[str, np.ndarray]) -> list[str]:
    present = list(dict.fromkeys(str(s) for s in cols["split"]))
    return [s for s in ("train", "test") if s in present] + [s for s in present if s not in ("train", "test")]


def _keys(cols: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``layer``, ``classifier`` and ``split`` columns as string arrays."""
    return tuple(np.asarray([str(v) for v in cols[name]]) for name in ("layer", "classifier", "split"))


def _style_panel(ax: Any, label: str, split: str, *, legend: bool) -> None:
    ax.set_ylabel(label, fontsize=8)
    ax.set_title(split, fontsize=9)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7)


def _finish(fig: Any, title: str | None) -> Any:
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_layers(cols: Mapping[str, np.ndarray], *, title: str | None = None) -> Any:
    """Figure 4 style: accuracy / P_SAME / D_KL (rows) against layer depth, train and test (columns).

    Lines per classifier; the DNN is drawn as a horizontal reference (it does not depend on the layer).
    """
    layers = list(dict.fromkeys(str(x) for x in cols["layer"]))
    splits = _splits(cols)
    fig, axes = _figure(len(METRICS), len(splits), width=max(4.2, 0.55 * len(layers) + 2.0))
    x = np.arange(len(layers))
    lay, clf, spl = _keys(cols)
    for j, split in enumerate(splits):
        for i, (metric, label) in enumerate(METRICS):
            ax = axes[i, j]
            for c in dict.fromkeys(clf):
                if c == "dnn" and metric != "accuracy":
                    continue
                ys = []
                for L in layers:
                    m = (lay == L) & (clf == c) & (spl == split)
                    ys.append(float(np.asarray(cols[metric])[m][0]) if m.any() else np.nan)
                if c == "dnn":
                    ax.axhline(np.nanmean(ys), color=COLORS["dnn"], lw=1.2, label=LABELS["dnn"])
                else:
                    ax.plot(x, ys, marker="o", ms=3, color=COLORS.get(c), label=LABELS.get(c, c))
            ax.set_xticks(x)
            ax.set_xticklabels(layers, rotation=45, ha="right", fontsize=7)
            _style_panel(ax, label, split, legend=i == 0 and j == 0)
    return _finish(fig, title)


def plot_curves(cols: Mapping[str, np.ndarray], *, title: str | None = None, memorization: Mapping[str, float | None] | None = None) -> Any:
    """Figures 1, 2, 5 style: accuracy / P_SAME / D_KL (rows) against the training step, train and test (columns).

    Colour per classifier, line style per layer (when several). ``memorization`` (layer -> step)
    adds dashed vertical lines where the DNN's train accuracy first reached 100 % (Figure 6).
    """
    splits = _splits(cols)
    fig, axes = _figure(len(METRICS), len(splits))
    step = np.asarray(cols["step"], dtype=np.float64)
    lay, clf, spl = _keys(cols)
    layers = list(dict.fromkeys(lay))
    for j, split in enumerate(splits):
        for i, (metric, label) in enumerate(METRICS):
            ax = axes[i, j]
            vals = np.asarray(cols[metric], dtype=np.float64)
            for li, L in enumerate(layers):
                for c in dict.fromkeys(clf):
                    if c == "dnn" and (metric != "accuracy" or li > 0):
                        continue
                    m = (lay == L) & (clf == c) & (spl == split)
                    if not m.any():
                        continue
                    o = np.argsort(step[m], kind="stable")
                    lab = LABELS.get(c, c) + (f" [{L}]" if len(layers) > 1 and c != "dnn" else "")
                    ax.plot(step[m][o], vals[m][o], marker="o", ms=3, color=COLORS.get(c), ls=_STYLES[li % len(_STYLES)], label=lab)
            for s in (memorization or {}).values():
                if s is not None:
                    ax.axvline(s, color="gray", ls="--", lw=0.8)
            ax.set_xlabel("training step", fontsize=8)
            _style_panel(ax, label, split, legend=i == 0 and j == 0)
    return _finish(fig, title)


def save_png(fig: Any, path: Any, *, force: bool = False, dpi: int = 110) -> None:
    """Save ``fig`` as PNG atomically (:func:`knntools.io.h5.atomic_path`)."""
    from knntools.io.h5 import atomic_path

    with atomic_path(path, force=force) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


__all__ = ["plot_layers", "plot_curves", "save_png", "COLORS", "METRICS"]
