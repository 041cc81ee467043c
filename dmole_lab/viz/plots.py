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


def _pair(ax, figsize):
    if ax is None:
        _, ax = plt.subplots(1, 2, figsize=figsize)
    return ax[0].figure, ax


def sensitivity_heatmaps(profiles: pd.DataFrame, tasks: list[str] | None = None,
                         normalisation: str = "minmax", ax=None, title: str | None = None):
    """Figure 1 (docs/method.md section 5): tasks x layers per tower, darker = more sensitive.

    ``profiles`` is a per-layer table (task, tower, layer, score), e.g. from
    :func:`dmole_lab.analysis.profiles.layer_profiles`; rows are normalised per task and tower with
    ``normalisation`` ("minmax" as in the paper). ``ax``: a pair of axes (vision, llm) or None.
    """
    from dmole_lab.analysis.profiles import normalise, profile_matrix
    from dmole_lab.config import TOWERS

    tasks = list(tasks) if tasks is not None else list(dict.fromkeys(profiles["task"]))
    norm = normalise(profiles, normalisation)
    fig, axes = _pair(ax, (11, 0.9 + 0.42 * len(tasks)))
    for a, tower in zip(axes, TOWERS):
        m = profile_matrix(norm, tower, tasks)
        im = a.imshow(m.to_numpy(dtype=float), cmap="Blues", aspect="auto",
                       vmin=0 if normalisation == "minmax" else None,
                       vmax=1 if normalisation == "minmax" else None)
        a.set_xticks(range(m.shape[1]), [str(c) for c in m.columns])
        a.set_yticks(range(len(tasks)), tasks)
        a.set_xlabel(f"{tower} layer (0 = input side)")
        a.set_title(f"{'vision encoder' if tower == 'vision' else 'LLM'}")
        fig.colorbar(im, ax=a, fraction=0.04,
                     label=f"sensitivity ({normalisation})")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def layer_profile_bars(profiles: pd.DataFrame, task: str, normalisation: str = "minmax",
                       ax=None, title: str | None = None):
    """One task's per-layer sensitivity as bars, one panel per tower (a row of Figure 1).

    ``profiles``: task, tower, layer, score (see :func:`sensitivity_heatmaps`); ``ax``: a pair
    of axes (vision, llm) or None.
    """
    from dmole_lab.analysis.profiles import normalise
    from dmole_lab.config import TOWERS

    if task not in set(profiles["task"]):
        raise ValueError(f"task {task!r} is not in the table; available: "
                         f"{list(dict.fromkeys(profiles['task']))}")
    norm = normalise(profiles, normalisation)
    fig, axes = _pair(ax, (10, 2.8))
    for a, tower in zip(axes, TOWERS):
        d = norm[(norm["task"] == task) & (norm["tower"] == tower)].sort_values("layer")
        a.bar(d["layer"], d["score"], color="tab:blue" if tower == "vision" else "tab:orange")
        a.set_xticks(d["layer"])
        a.set_xlabel(f"{tower} layer (0 = input side)")
        a.set_ylabel(f"sensitivity ({normalisation})")
        a.set_title("vision encoder" if tower == "vision" else "LLM")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def tower_dynamics(dynamics: pd.DataFrame, quantity: str = "grad_norm", ax=None,
                   title: str | None = None, smooth: int = 5):
    """Figure 2 (docs/method.md section 5): per-tower magnitude vs step (top) and their ratio.

    ``dynamics``: the recorders' table (step, tower, quantity, value, and stage/task when it
    comes from a continual run: stages are laid end to end with their boundaries marked).
    ``quantity``: "grad_norm" or "rel_update"; ``smooth``: rolling-mean window (1 = raw);
    ``ax``: a pair of axes (magnitudes, ratio) or None.
    """
    from dmole_lab.analysis.profiles import QUANTITIES

    d = dynamics[dynamics["quantity"] == quantity]
    if d.empty:
        raise ValueError(f"no {quantity!r} rows; available: {sorted(set(dynamics['quantity']))}")
    axes = ax
    if axes is None:
        _, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True,
                               gridspec_kw={"height_ratios": [2, 1]})
    fig = axes[0].figure
    wide = d.pivot_table(index=_global_step(d), columns="tower", values="value")
    wide = wide.rolling(smooth, min_periods=1).mean() if smooth > 1 else wide
    for tower in [t for t in ("vision", "llm", "projector") if t in wide]:
        axes[0].plot(wide.index, wide[tower], label=tower, lw=1)
    axes[0].set_yscale("log")
    axes[0].set_ylabel(QUANTITIES[quantity][0])
    axes[0].legend(fontsize=8)
    if {"llm", "vision"} <= set(wide.columns):
        ratio = wide["llm"] / wide["vision"]
        axes[1].plot(ratio.index, ratio, color="black", lw=1)
        axes[1].axhline(1, color="grey", lw=0.5, ls="--")  # balanced towers
        axes[1].set_yscale("log")
    else:  # one tower trains alone (D-MoLE ablations v1 / v2): no ratio to draw
        axes[1].text(0.5, 0.5, "one tower trained: no ratio", ha="center", va="center",
                     transform=axes[1].transAxes, fontsize=8)
    axes[1].set_ylabel("LLM / vision")
    axes[1].set_xlabel("training step")
    if "stage" in d:
        bounds = d.assign(g=_global_step(d)).groupby("stage")["g"].agg(["min", "max"])
        for stage, (lo, hi) in bounds.iterrows():
            for ax in axes:
                ax.axvline(lo, color="grey", lw=0.3)
            task = d.loc[d["stage"] == stage, "task"].iloc[0] if "task" in d else stage
            axes[0].text((lo + hi) / 2, 1.01, str(task), transform=axes[0].get_xaxis_transform(),
                         ha="center", va="bottom", fontsize=6, rotation=30)
    if title:
        fig.suptitle(title, y=1.04)
    return fig


def _global_step(d: pd.DataFrame) -> pd.Series:
    """Steps of consecutive stages laid end to end (a single stage keeps its own steps)."""
    if "stage" not in d:
        return d["step"]
    length = d.groupby("stage")["step"].max() + 1
    offset = length.cumsum().shift(fill_value=0)
    return d["step"] + d["stage"].map(offset)


def correlation_heatmap(corr: pd.DataFrame, ax=None, title: str | None = None,
                        label: str = "Spearman rank correlation"):
    """An annotated square correlation matrix in [-1, 1] (e.g. tasks x tasks)."""
    fig, ax = _ax(ax, figsize=(1.5 + 0.5 * len(corr), 1.0 + 0.45 * len(corr)))
    data = corr.to_numpy(dtype=float)
    im = ax.imshow(data, cmap="RdBu_r", vmin=-1, vmax=1)
    for (r, c), v in np.ndenumerate(data):
        ax.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(corr.columns)), corr.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(corr.index)), corr.index)
    fig.colorbar(im, ax=ax, fraction=0.04, label=label)
    if title:
        ax.set_title(title)
    return fig


def proxy_oracle_bars(pooled: pd.DataFrame, ax=None, title: str | None = None):
    """Mean (+- std over tasks) Spearman of each proxy against the oracle, per tower."""
    fig, ax = _ax(ax, figsize=(6, 3.2))
    proxies = list(dict.fromkeys(pooled["proxy"]))
    towers = list(dict.fromkeys(pooled["tower"]))
    width = 0.8 / len(towers)
    for k, tower in enumerate(towers):
        d = pooled[pooled["tower"] == tower].set_index("proxy").reindex(proxies)
        ax.bar(np.arange(len(proxies)) + k * width, d["mean"], width, yerr=d["std"],
               label=tower, capsize=2)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xticks(np.arange(len(proxies)) + width * (len(towers) - 1) / 2, proxies)
    ax.set_ylabel("Spearman vs oracle gain")
    ax.set_ylim(-1, 1)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def allocation_heatmaps(allocation: pd.DataFrame, tasks: list[str],
                        n_layers: dict[str, int], ax=None, title: str | None = None):
    """Figure 3 (docs/method.md section 5): tasks x layers per tower, the number of modules of each
    layer that hold an expert of each task.

    ``allocation``: task, tower, layer, module (one row per expert, e.g. a D-MoLE run's
    ``allocation`` table or :meth:`dmole_lab.dmole.allocation.Allocation.table`);
    ``n_layers``: layers per tower, so that layers with no expert still get a column; ``ax``: a
    pair of axes (vision, llm) or None.
    """
    from dmole_lab.config import TOWERS

    per_layer = int(allocation.groupby(["tower", "layer"])["module"].nunique().max()) \
        if len(allocation) else 1
    fig, axes = _pair(ax, (11, 0.9 + 0.42 * len(tasks)))
    for a, tower in zip(axes, TOWERS):
        d = allocation[allocation["tower"] == tower]
        m = (d.groupby(["task", "layer"]).size().unstack(fill_value=0)
             .reindex(index=list(tasks), columns=range(n_layers[tower]), fill_value=0))
        data = m.to_numpy(dtype=float)
        im = a.imshow(data, cmap="Greens", aspect="auto", vmin=0, vmax=per_layer)
        for (r, c), v in np.ndenumerate(data):
            if v:
                a.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=7,
                       color="white" if v > per_layer / 2 else "black")
        a.set_xticks(range(m.shape[1]), [str(c) for c in m.columns])
        a.set_yticks(range(len(tasks)), tasks)
        a.set_xlabel(f"{tower} layer (0 = input side)")
        a.set_title(f"{'vision encoder' if tower == 'vision' else 'LLM'}: {len(d)} experts")
        fig.colorbar(im, ax=a, fraction=0.04, label="modules with an expert")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def routing_confusion(confusion: pd.DataFrame, ax=None, title: str | None = None):
    """Evaluation set x routed task as row shares (e.g. :func:`dmole_lab.analysis.usage.confusion`
    with ``normalise=True``); the diagonal is the router's accuracy per set."""
    fig, ax = _ax(ax, figsize=(1.5 + 0.55 * confusion.shape[1], 1.0 + 0.45 * len(confusion)))
    data = confusion.to_numpy(dtype=float)
    im = ax.imshow(data, cmap="Purples", vmin=0, vmax=1, aspect="auto")
    for (r, c), v in np.ndenumerate(data):
        if v:
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if v > 0.5 else "black")
    ax.set_xticks(range(confusion.shape[1]), confusion.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(confusion)), confusion.index)
    ax.set_xlabel("routed task (top vote)")
    ax.set_ylabel("evaluation set")
    fig.colorbar(im, ax=ax, fraction=0.04, label="share of the set's samples")
    if title:
        ax.set_title(title)
    return fig


def curriculum_split_bars(splits: pd.DataFrame, ax=None, title: str | None = None):
    """Per task, the vision tower's share of the expert budget under each curriculum mode.

    ``splits``: task, curriculum, vision_share
    (:func:`dmole_lab.dmole.allocation.curriculum_splits`); the dashed line at each task's rho_V
    (mode "current") is the share before the floor.
    """
    fig, ax = _ax(ax, figsize=(9, 3.5))
    tasks = list(dict.fromkeys(splits["task"]))
    modes = list(dict.fromkeys(splits["curriculum"]))
    width = 0.8 / len(modes)
    x = np.arange(len(tasks))
    for k, mode in enumerate(modes):
        d = splits[splits["curriculum"] == mode].set_index("task").reindex(tasks)
        ax.bar(x + k * width, d["vision_share"], width, label=mode)
    if "rho_vision" in splits and "current" in modes:
        rho = splits[splits["curriculum"] == "current"].set_index("task").reindex(tasks)
        ax.scatter(x + width * (len(modes) - 1) / 2, rho["rho_vision"], marker="_", s=300,
                   color="black", label="rho_V (before the floor)", zorder=3)
    ax.set_xticks(x + width * (len(modes) - 1) / 2, tasks, rotation=30, ha="right")
    ax.set_ylabel("vision share of the budget")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, title="curriculum", title_fontsize=7)
    if title:
        ax.set_title(title)
    return fig


def tower_ratio_bars(ratios: dict[str, pd.DataFrame], ax=None, title: str | None = None,
                     label: str = "LLM / vision gradient norm (median over the stage)"):
    """Per task, the LLM / vision ratio of each method side by side (log scale; 1 = balanced).

    ``ratios``: method -> :func:`dmole_lab.analysis.profiles.tower_ratio` table (task, median, ...).
    """
    fig, ax = _ax(ax, figsize=(9, 3.5))
    tasks = list(dict.fromkeys(t for r in ratios.values() for t in r["task"]))
    width = 0.8 / max(1, len(ratios))
    x = np.arange(len(tasks))
    for k, (method, r) in enumerate(ratios.items()):
        d = r.set_index("task").reindex(tasks)
        ax.bar(x + k * width, d["median"], width, label=method)
    ax.axhline(1, color="grey", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(x + width * (len(ratios) - 1) / 2, tasks, rotation=30, ha="right")
    ax.set_ylabel(label, fontsize=8)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def _seed_mean(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of every (variant, stage, eval_task) score."""
    return (scores.groupby(["variant", "stage", "eval_task"], sort=False)["value"]
            .agg(["mean", "std"]).reset_index())


def task_curves_by_method(scores: pd.DataFrame, task: str, tasks: list[str],
                          variants: list[str] | None = None, ax=None,
                          title: str | None = None):
    """Forgetting curves of one task: its score after every stage, one line per variant (mean
    over seeds, band = +- std); the dotted line marks the stage that trains the task."""
    if task not in tasks:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(tasks)}")
    fig, ax = _ax(ax, figsize=(7, 4))
    stats = _seed_mean(scores[scores["eval_task"] == task])
    for v in variants or list(dict.fromkeys(stats["variant"])):
        d = stats[stats["variant"] == v].sort_values("stage")
        line, = ax.plot(d["stage"], d["mean"], marker="o", ms=3, label=v)
        sd = d["std"].fillna(0.0)
        ax.fill_between(d["stage"], d["mean"] - sd, d["mean"] + sd, color=line.get_color(),
                        alpha=0.15, lw=0)
    ax.axvline(tasks.index(task) + 1, color="grey", ls=":", lw=1)
    ax.set_xticks(range(len(tasks) + 1))
    ax.set_xlabel("stage (0 = zero-shot)")
    ax.set_ylabel(f"score on {task}")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title or f"{task}: score across the stream (mean +- std over seeds)")
    return fig


def score_matrix_grid(scores: pd.DataFrame, tasks: list[str], variants: list[str],
                      ncols: int = 3):
    """Seed-mean score matrices of ``variants`` side by side (one heatmap each)."""
    stats = _seed_mean(scores).rename(columns={"mean": "value"})
    nrows = -(-len(variants) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 5 * nrows), squeeze=False)
    for ax, v in zip(axes.flat, variants):
        score_matrix_heatmap(stats[stats["variant"] == v], tasks, ax=ax, title=v,
                             general=False)
    for ax in list(axes.flat)[len(variants):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def metric_bars(table: pd.DataFrame, metrics: tuple[str, ...] = ("AVG", "Last", "BWT"),
                ax=None, title: str | None = None):
    """Grouped bars of a method table (``compare.method_table``): one group per variant, one
    bar per metric, error bars = std over seeds."""
    fig, ax = _ax(ax, figsize=(max(6, 0.9 * len(table)), 4))
    width = 0.8 / len(metrics)
    x = np.arange(len(table))
    for k, m in enumerate(metrics):
        ax.bar(x + (k - (len(metrics) - 1) / 2) * width, table[(m, "mean")],
               width, yerr=table[(m, "std")].fillna(0.0), label=m, capsize=2)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xticks(x, table.index, rotation=45, ha="right")
    ax.legend(fontsize=8)
    ax.set_ylabel("score (0-100)")
    if title:
        ax.set_title(title)
    return fig
