"""The figures of a run, drawn with Matplotlib and returned as PNG bytes.

Writing them is ``outputs``' job, so that every file a run writes goes through its atomic
write.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    return buffer.getvalue()


def plot_history(history: Sequence[Mapping[str, float]]) -> bytes:
    """Training and validation loss curves (every ``*loss*`` column of the history).

    Args:
      history: The rows returned by :func:`~common.train.fit`.

    Returns:
      The figure as PNG bytes.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [row["step"] for row in history]
    for key in history[0] if history else []:
        if "loss" in key:
            ax.plot(steps, [row[key] for row in history], label=key)
    ax.set(xlabel="step", ylabel="loss", title="loss", yscale="log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def plot_roc_pr(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """ROC and precision-recall curves side by side.

    Args:
      curves: Name to ``(labels, probabilities)``, one curve per entry.

    Returns:
      The figure as PNG bytes.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _pyplot()
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, (y, probability) in curves.items():
        if 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_curve(y, probability)
            precision, recall, _ = precision_recall_curve(y, probability)
            roc.plot(fpr, tpr, label=name)
            pr.plot(recall, precision, label=name)
    roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="test ROC")
    pr.set(xlabel="recall", ylabel="precision", title="test precision-recall")
    for ax in (roc, pr):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def plot_bars(groups: Mapping[str, Mapping[str, Mapping[str, float]]]) -> bytes:
    """Per-label bars of each metric, one bar per group (e.g. with and without a mask).

    Args:
      groups: Group name to label name to metric name to value.

    Returns:
      The figure as PNG bytes.
    """
    plt = _pyplot()
    first = next(iter(groups.values()))
    labels = list(first)
    metrics = ["roc_auc", "average_precision", "f1"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4), sharey=True)
    width = 0.8 / len(groups)
    for ax, metric in zip(axes, metrics, strict=True):
        for g, (group, table) in enumerate(groups.items()):
            values = [table[label][metric] for label in labels]
            ax.bar(np.arange(len(labels)) + g * width, values, width, label=group)
        ax.set_xticks(np.arange(len(labels)) + width * (len(groups) - 1) / 2, labels, rotation=45)
        ax.set(title=f"test {metric}", ylim=(0, 1.05))
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return _png(fig)


def plot_series(history: Sequence[Mapping[str, float]], keys: Sequence[str]) -> bytes:
    """Columns of the history against the step, one panel each (learned scalars, say).

    Args:
      history: The rows returned by :func:`~common.train.fit`.
      keys: The columns to draw.

    Returns:
      The figure as PNG bytes.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.8), squeeze=False)
    steps = [row["step"] for row in history]
    for ax, key in zip(axes[0], keys, strict=True):
        ax.plot(steps, [row[key] for row in history], marker=".")
        ax.set(xlabel="step", title=key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def plot_retrieval(
    queries: np.ndarray,
    candidates: np.ndarray,
    top: np.ndarray,
    truth: np.ndarray,
    *,
    titles: Sequence[str] = ("query", "candidates"),
    row_labels: Sequence[str] | None = None,
) -> bytes:
    """A grid of retrievals: each row a query image, then its top-ranked candidate images.

    The grid is one mosaic image (one ``imshow``, fast to draw however many tiles); a
    retrieved candidate that is the query's own partner is framed in green.

    Args:
      queries: ``[rows, h, w]`` query images.
      candidates: ``[n, h, w]`` candidate images, of the queries' height.
      top: ``[rows, k]`` indices into ``candidates``, best first.
      truth: ``[rows]`` index of each query's partner in ``candidates``.
      titles: What the queries are (the first column's heading) and what the candidates are
        (in the figure's title).
      row_labels: A label for each row (each query), or None.

    Returns:
      The figure as PNG bytes.
    """
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    rows, k = top.shape
    h, w = queries.shape[1], max(queries.shape[2], candidates.shape[2])
    gap = 1
    mosaic = np.full((rows * (h + gap) - gap, (k + 1) * (w + gap) - gap), np.nan)
    for r in range(rows):
        for c, image in enumerate([queries[r], *(candidates[j] for j in top[r])]):
            y, x = r * (h + gap), c * (w + gap)
            mosaic[y : y + h, x : x + image.shape[1]] = image
    inch = 0.11  # per pixel of the mosaic
    fig, ax = plt.subplots(figsize=(1.3 + inch * mosaic.shape[1], 0.9 + inch * mosaic.shape[0]))
    cmap = plt.get_cmap("gray_r").with_extremes(bad="0.8")  # the gaps between tiles
    ax.imshow(mosaic, cmap=cmap, interpolation="nearest")
    for r in range(rows):
        for c in np.flatnonzero(top[r] == truth[r]) + 1:
            x, y = c * (w + gap) - 0.5, r * (h + gap) - 0.5
            ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="tab:green", linewidth=2))
    ax.set_xticks(
        np.arange(k + 1) * (w + gap) + (w - 1) / 2,
        [titles[0], *(str(c) for c in range(1, k + 1))],
        fontsize=8,
    )
    ax.xaxis.tick_top()
    ax.set_yticks(np.arange(rows) * (h + gap) + (h - 1) / 2, row_labels or [""] * rows, fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"{titles[1]}, ranked (green: the query's own partner)", fontsize=9)
    fig.tight_layout()
    return _png(fig)
