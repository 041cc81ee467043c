"""Figures. Every function takes ``ax=None`` (a new figure if omitted) and returns the figure.

Torch-free: plots read tidy tables from the run store.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def _ax(ax, figsize=(6, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def close(fig) -> None:
    """Release a figure's memory (scripts that save many figures)."""
    plt.close(fig)


def score_matrix_heatmap(scores: pd.DataFrame, tasks: list[str], ax=None,
                         title: str | None = None, general: bool = True):
    """Heatmap of a[t, i]: rows = stages (0 = zero-shot), columns = eval tasks, annotated."""
    extra = sorted(set(scores["eval_task"]) - set(tasks)) if general else []
    cols = list(tasks) + extra
    piv = scores.pivot_table(index="stage", columns="eval_task", values="value").reindex(
        columns=cols)
    fig, ax = _ax(ax, figsize=(1.0 + 0.75 * len(cols), 1.0 + 0.45 * len(piv)))
    data = piv.to_numpy(dtype=float)
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (r, c), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if v < 60 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    labels = ["zero-shot" if s == 0 else f"after {s}: {tasks[s - 1]}" for s in piv.index]
    ax.set_yticks(range(len(piv)), labels)
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("stage")
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, label="score (0-100)", fraction=0.04)
    return fig


def forgetting_curves(scores: pd.DataFrame, tasks: list[str], ax=None, title: str | None = None):
    """Score of every task across stages (a column of the matrix as a line)."""
    fig, ax = _ax(ax, figsize=(7, 4))
    for i, task in enumerate(tasks):
        d = scores[scores["eval_task"] == task].sort_values("stage")
        ax.plot(d["stage"], d["value"], marker="o", ms=3, label=task)
        ax.axvline(i + 1, color="grey", lw=0.3)
    ax.set_xlabel("stage (0 = zero-shot)")
    ax.set_ylabel("score")
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title)
    return fig


def sample_grid(images: list[np.ndarray], captions: list[str], ncols: int = 5):
    """A grid of example images with their captions (a grid needs its own figure, so no ax)."""
    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 3.1 * nrows))
    for a in np.atleast_1d(axes).ravel():
        a.axis("off")
    for a, img, cap in zip(np.atleast_1d(axes).ravel(), images, captions):
        a.imshow(img, interpolation="nearest")
        a.set_title(cap, fontsize=6.5, wrap=True)
    fig.tight_layout()
    return fig
