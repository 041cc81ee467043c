"""Figures. Every function takes ``ax=None`` (a new figure if omitted) and returns the figure.

Torch-free: plots read tidy tables from the run store. Curves over seeds are a mean line with a
+- standard-error band, one fixed colour per method; heatmaps are matplotlib images
(``ax.images[0].get_array()`` is the drawn matrix) annotated the way ``sns.heatmap`` does. The
``update_*`` functions put new data into a figure built by their namesake, in place (what the
notebook explorers redraw).
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns

#: Width of a notebook's output area, in inches at the inline backend's 100 dpi: a wider figure
#: is shrunk to fit, and its text with it, so the notebooks' figures are sized to this.
NOTEBOOK_WIDTH = 10.0
#: "mean ± std" with non-breaking spaces, so that a table cell never wraps inside it.
PM = "\u00a0±\u00a0"

#: One colour per method in every figure (a selection never recolours a method). D-MoLE is the
#: one red line, its ablations warm shades, the peers cool ones, multi-task (the reference)
#: black and plain fine-tuning grey.
METHOD_COLORS = {
    "dmole": "#d62728", "dmole-v1": "#ff9f40", "dmole-v2": "#c51b7d", "dmole-v3": "#8c510a",
    "dmole-v4": "#e9a3c9",
    "seq-ft": "#8c8c8c", "seq-lora": "#1f77b4", "lwf": "#17becf", "ewc": "#2ca02c",
    "o-lora": "#9467bd", "moelora": "#08306b", "mole": "#6baed6", "mola": "#98df8a",
    "branchlora": "#bcbd22", "multitask": "#000000",
}
#: Display names the notebooks use, read as the method they name.
METHOD_ALIASES = {"d-mole": "dmole", "sequential lora": "seq-lora", "multi-task": "multitask",
                  "v1 (llm only)": "dmole-v1"}
#: One colour per tower in every figure.
TOWER_COLORS = {"vision": "tab:blue", "llm": "tab:orange", "projector": "tab:green"}
_MARKERS = "osD^vP*Xph<>"


def _method_key(name: str) -> str:
    """The method a (display) name means: lower case, aliases resolved."""
    key = name.strip().lower()
    return METHOD_ALIASES.get(key, key)


def method_color(name: str) -> str:
    """The fixed colour of method (or variant) ``name``: the same in every figure, whatever
    else is drawn beside it. A variant with overrides (``dmole+dmole.routing=sample``) takes a
    colour of its own; an unknown name a hue from a stable hash of the name (husl, at a
    lightness where it reads on white)."""
    import zlib

    key = _method_key(name)
    if key in METHOD_COLORS:
        return METHOD_COLORS[key]
    hue = (zlib.crc32(key.encode()) % 3600) / 3600
    from seaborn.external import husl

    return mcolors.to_hex(husl.husl_to_rgb(360 * hue, 80, 55))


def method_marker(name: str) -> str:
    """A fixed marker shape per method, so lines stay apart where colours are close."""
    import zlib

    key = _method_key(name)
    known = list(METHOD_COLORS)
    index = known.index(key) if key in known else zlib.crc32(key.encode())
    return _MARKERS[index % len(_MARKERS)]


def _is_dmole(name: str) -> bool:
    return _method_key(name) == "dmole"


def _legend_outside(ax, **kw) -> None:
    """The legend to the right of ``ax``, top-aligned, off the data."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              frameon=False, **kw)


def _variant_bars(ax, variants: list[str], values: dict, errors: dict, rotation: int) -> None:
    """Grouped bars, one group per variant and one bar per key of ``values`` (error bars from
    ``errors``), each variant's name in its fixed colour and D-MoLE's in bold, the legend
    outside."""
    width = 0.8 / len(values)
    x = np.arange(len(variants))
    for k, (m, v) in enumerate(values.items()):
        ax.bar(x + (k - (len(values) - 1) / 2) * width, v, width, yerr=errors[m].fillna(0.0),
               label=m, capsize=2)
    ax.set_xticks(x, variants, rotation=rotation, ha="right")
    for label in ax.get_xticklabels():
        label.set_color(method_color(label.get_text()))
        if _is_dmole(label.get_text()):
            label.set_fontweight("bold")
    _legend_outside(ax)


def _ax(ax, figsize=(6, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def _cell_fontsize(ax, shape: tuple[int, int], chars: int, square: bool = False) -> float:
    """A font size (points) at which ``chars`` characters fit in one cell of a ``shape`` heatmap
    drawn in ``ax`` (its colorbar takes about a tenth of the width), between 6 and 9."""
    width, height = ax.figure.get_size_inches()
    box = ax.get_position()
    cell_w = 72 * width * box.width * 0.85 / max(1, shape[1])
    cell_h = 72 * height * box.height / max(1, shape[0])
    if square:
        cell_w = cell_h = min(cell_w, cell_h)
    return float(np.clip(min(cell_w / (0.62 * chars + 1.0), 0.6 * cell_h), 6, 9))


def _cell_labels(values: np.ndarray, fmt: str, skip_zero: bool) -> dict:
    """(row, column) -> the text of every finite cell ("" for a zero one with ``skip_zero``);
    a NaN cell (not measured) has none."""
    return {rc: "" if (skip_zero and v == 0) else format(v, fmt)
            for rc, v in np.ndenumerate(values) if np.isfinite(v)}


def _cell_colours(im, values: np.ndarray) -> np.ndarray:
    """Per cell, dark text on light colours and white on dark ones (seaborn's luminance rule)."""
    rgba = im.to_rgba(np.nan_to_num(values)).reshape(-1, 4)
    lum = np.reshape(sns.utils.relative_luminance(rgba), values.shape)
    return np.where(lum > .408, ".15", "w")


def _annotate(ax, im, values: np.ndarray, fmt: str, skip_zero: bool = False,
              square: bool = False, chars: int | None = None) -> None:
    """Write every finite cell's value into the image ``im``, as ``sns.heatmap(annot=True)``
    does: dark text on light cells and white on dark ones (seaborn's luminance rule), the font
    sized to the cell (to fit ``chars`` characters; default: the longest label). ``skip_zero``
    leaves zero cells blank. Every cell gets a text artist, blank or not, so that
    :func:`_reannotate` can refill them in place."""
    labels = _cell_labels(values, fmt, skip_zero)
    if not any(labels.values()) and chars is None:
        return
    chars = chars or max(map(len, labels.values()))
    size = _cell_fontsize(ax, values.shape, chars, square)
    colours = _cell_colours(im, values)
    for (r, c), text in labels.items():
        ax.text(c, r, text, ha="center", va="center", fontsize=size, color=colours[r, c])


def _reannotate(ax, im, values: np.ndarray, fmt: str, skip_zero: bool = False) -> bool:
    """Put ``values`` into the image ``im`` and its cell texts, in place; False when the
    heatmap has another shape (the figure must be rebuilt)."""
    if (im.get_array().shape != values.shape or not np.isfinite(values).all()
            or len(ax.texts) != values.size):
        return False
    im.set_data(values)
    labels, colours = _cell_labels(values, fmt, skip_zero), _cell_colours(im, values)
    for t in ax.texts:
        c, r = (round(x) for x in t.get_position())
        t.set_text(labels[r, c])
        t.set_color(colours[r, c])
    return True


def _heatmap(ax, values: np.ndarray, xlabels, ylabels, *, cmap: str, vmin=None, vmax=None,
             fmt: str | None = None, skip_zero: bool = False, label: str = "",
             rotate_x: bool = True, square: bool = False, chars: int | None = None):
    """``values`` as an image in ``ax`` with one tick per row and column, annotated with ``fmt``
    (none if None; ``chars``: the widest label to size the font for) and a colorbar labelled
    ``label``; returns the image."""
    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="equal" if square else "auto")
    if fmt is not None:
        _annotate(ax, im, values, fmt, skip_zero, square, chars)
    ax.set_xticks(range(values.shape[1]), [str(x) for x in xlabels],
                  **({"rotation": 45, "ha": "right"} if rotate_x else {}))
    ax.set_yticks(range(values.shape[0]), [str(y) for y in ylabels])
    ax.figure.colorbar(im, ax=ax, fraction=0.04, label=label)
    return im


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
    labels = ["zero-shot" if s == 0 else f"after {s}: {tasks[s - 1]}" for s in piv.index]
    _heatmap(ax, piv.to_numpy(dtype=float), cols, labels, cmap="viridis", vmin=0, vmax=100,
             fmt=".0f", label="score (0-100)")
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("stage")
    if title:
        ax.set_title(title)
    return fig


def _seed_stats(data: pd.DataFrame, hue: str, order: list[str]) -> pd.DataFrame:
    """Mean, standard error (ddof 1; NaN for one seed) and count over the rows of every
    (``hue`` level, stage) of ``data``'s value."""
    d = data[data[hue].isin(order)]
    return d.groupby([hue, "stage"])["value"].agg(["mean", "sem", "count"])


def _seed_band(ax, data: pd.DataFrame, hue: str, order: list[str], methods: bool = False
               ) -> None:
    """One line per ``hue`` level in ``order`` of ``data``'s value against stage: the mean over
    the rows of a stage (seeds) with a band of +- one standard error of that mean (none for a
    single seed): a std band of a method whose seeds disagree would cover the whole plot and
    hide the others. With ``methods`` the levels are methods: each keeps its fixed colour and
    marker (:func:`method_color`) and D-MoLE is drawn thicker, on top. Otherwise matplotlib's
    ten colours, or evenly spaced hues past ten lines. The legend sits outside the axes."""
    order = [h for h in order if h in set(data[hue])]
    stats = _seed_stats(data, hue, order)
    # past ten lines, evenly spaced hues that skip one step, so the first and last differ
    many = sns.color_palette("husl", len(order) + 1) if len(order) > 10 else None
    for k, name in enumerate(order):
        st = stats.loc[name]
        colour = (method_color(name) if methods else
                  many[k] if many is not None else f"C{k}")
        marker = method_marker(name) if methods else _MARKERS[k % len(_MARKERS)]
        thick = methods and _is_dmole(name)
        ax.plot(st.index, st["mean"], color=colour, marker=marker, markersize=5,
                markeredgewidth=0, lw=2.6 if thick else 1.5, zorder=5 if thick else 2,
                label=name)
        if (st["count"] > 1).any():
            ax.fill_between(st.index, st["mean"] - st["sem"], st["mean"] + st["sem"],
                            color=colour, alpha=0.12, lw=0, label=f"_band {name}")
    if order:
        _legend_outside(ax)


def _update_seed_band(ax, data: pd.DataFrame, hue: str, order: list[str]) -> bool:
    """New values for the lines and bands :func:`_seed_band` drew for the same ``order``, in
    place; False when ``ax`` holds other levels or stages."""
    order = [h for h in order if h in set(data[hue])]
    lines = {ln.get_label(): ln for ln in ax.lines if ln.get_label() in order}
    bands = {c.get_label()[len("_band "):]: c for c in ax.collections
             if c.get_label().startswith("_band ")}
    if list(lines) != order or set(bands) - set(order):
        return False
    stats = _seed_stats(data, hue, order)
    for name in order:
        st = stats.loc[name]
        if len(st) != len(lines[name].get_xdata()) or ((st["count"] > 1).any()
                                                        != (name in bands)):
            return False
        lines[name].set_data(st.index, st["mean"])
    ax.relim()  # lines only: the bands' extent is added below, as fill_between adds it
    for name, band in bands.items():
        st = stats.loc[name]
        lo, hi = st["mean"] - st["sem"], st["mean"] + st["sem"]
        band.set_data(st.index, lo, hi)
        ax.update_datalim(np.column_stack([np.r_[st.index, st.index], np.r_[lo, hi]])[
            np.isfinite(np.r_[lo, hi])])
    ax.autoscale_view()
    return True


def forgetting_curves(scores: pd.DataFrame, tasks: list[str], ax=None, title: str | None = None):
    """Score of every task across stages (a column of the matrix as a line; with several seeds
    in ``scores``, their mean with a +- standard-error band)."""
    fig, ax = _ax(ax, figsize=(7, 4))
    _seed_band(ax, scores, "eval_task", list(tasks))
    for i in range(len(tasks)):
        ax.axvline(i + 1, color="grey", lw=0.3)
    ax.set_xlabel("stage (0 = zero-shot)")
    ax.set_ylabel("score")
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
        every = _tick_step(a, m.shape[1])
        a.set_xticks(range(0, m.shape[1], every), [str(c) for c in m.columns[::every]])
        a.set_yticks(range(len(tasks)), tasks)
        a.set_xlabel(f"{tower} layer (0 = input side)")
        a.set_title(f"{'vision encoder' if tower == 'vision' else 'LLM'}")
        fig.colorbar(im, ax=a, fraction=0.04,
                     label=f"sensitivity ({normalisation})")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _tick_step(ax, n: int, chars: int = 2, fontsize: float = 10.0) -> int:
    """Label every k-th of ``n`` evenly spaced columns of ``ax``, the smallest k at which
    labels of ``chars`` characters do not run into each other (a 30-layer LLM)."""
    width_pt = 72 * ax.figure.get_size_inches()[0] * ax.get_position().width
    need = (0.62 * chars + 1.2) * fontsize
    return max(1, int(np.ceil(need / (width_pt / max(1, n)))))


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
        a.bar(d["layer"], d["score"], color=TOWER_COLORS[tower])
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
    wide = _tower_curves(d, smooth)
    for tower in [t for t in TOWER_COLORS if t in wide]:
        axes[0].plot(wide.index, wide[tower], label=tower, lw=1, color=TOWER_COLORS[tower])
    axes[0].set_yscale("log")
    axes[0].set_ylabel(QUANTITIES[quantity][0])
    axes[0].legend(fontsize=8)
    if {"llm", "vision"} <= set(wide.columns):
        ratio = wide["llm"] / wide["vision"]
        axes[1].plot(ratio.index, ratio, color="black", lw=1, label="ratio")
        axes[1].axhline(1, color="grey", lw=0.5, ls="--")  # balanced towers
        axes[1].set_yscale("log")
        # plain numbers (2, 5, 10), not 2 x 10^0
        axes[1].yaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axes[1].yaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    else:  # one tower trains alone (D-MoLE ablations v1 / v2): no ratio to draw
        axes[1].text(0.5, 0.5, "one tower trained: no ratio", ha="center", va="center",
                     transform=axes[1].transAxes, fontsize=8)
    axes[1].set_ylabel("LLM / vision")
    axes[1].set_xlabel("training step")
    _stage_marks(axes, d)
    if title:
        # inside the canvas, above the stage names: an explorer then crops a single drawing
        fig.subplots_adjust(top=0.82)
        _dynamics_title(fig, title)
    return fig


def _dynamics_title(fig, title: str) -> None:
    fig.suptitle(title, y=0.99, va="top")


def _stage_marks(axes, d: pd.DataFrame) -> None:
    """A line where each stage of ``d`` starts and its task's name above it (replacing any
    marks drawn before, so that an update can redraw them)."""
    for ax in axes:
        for artist in [*ax.lines, *ax.texts]:
            if artist.get_gid() == "stage":
                artist.remove()
    if "stage" not in d:
        return
    bounds = d.assign(g=_global_step(d)).groupby("stage")["g"].agg(["min", "max"])
    for stage, (lo, hi) in bounds.iterrows():
        for ax in axes:
            ax.axvline(lo, color="grey", lw=0.3, gid="stage")
        task = d.loc[d["stage"] == stage, "task"].iloc[0] if "task" in d else stage
        axes[0].text((lo + hi) / 2, 1.01, str(task), transform=axes[0].get_xaxis_transform(),
                     ha="center", va="bottom", fontsize=7, rotation=30, gid="stage")


def _tower_curves(d: pd.DataFrame, smooth: int) -> pd.DataFrame:
    """Global step x tower of one quantity, as a rolling mean over ``smooth`` steps."""
    wide = d.pivot_table(index=_global_step(d), columns="tower", values="value")
    return wide.rolling(smooth, min_periods=1).mean() if smooth > 1 else wide


def update_tower_dynamics(fig, dynamics: pd.DataFrame, quantity: str, smooth: int = 5,
                          title: str | None = None) -> bool:
    """Redraw a figure of :func:`tower_dynamics` in place with another quantity, smoothing or
    choice of stages of the same towers: new curves, ratio, stage marks and labels. False when
    ``fig`` cannot take it (other towers): build a new figure instead."""
    from dmole_lab.analysis.profiles import QUANTITIES

    d = dynamics[dynamics["quantity"] == quantity]
    if d.empty or len(fig.axes) != 2:
        return False
    wide = _tower_curves(d, smooth)
    top, bottom = fig.axes
    curves = {ln.get_label(): ln for ln in top.lines if ln.get_label() in TOWER_COLORS}
    if set(curves) != set(wide.columns):
        return False
    for tower, line in curves.items():
        line.set_data(wide.index, wide[tower].to_numpy())
    for line in bottom.lines:
        if line.get_label() == "ratio":
            line.set_data(wide.index, (wide["llm"] / wide["vision"]).to_numpy())
    _stage_marks((top, bottom), d)
    for a in (top, bottom):
        a.relim()
        a.autoscale_view()
    top.set_ylabel(QUANTITIES[quantity][0])
    if title:
        _dynamics_title(fig, title)
    return True


def update_sensitivity_heatmaps(fig, profiles: pd.DataFrame, tasks: list[str],
                                normalisation: str = "minmax", title: str | None = None) -> bool:
    """Redraw a figure of :func:`sensitivity_heatmaps` in place with another proxy, number of
    batches or normalisation of the same tasks and layers. False when ``fig`` cannot take it."""
    from dmole_lab.analysis.profiles import normalise, profile_matrix
    from dmole_lab.config import TOWERS

    axes = [a for a in fig.axes if a.images]
    if len(axes) != len(TOWERS):
        return False
    norm = normalise(profiles, normalisation)
    for a, tower in zip(axes, TOWERS):
        m = profile_matrix(norm, tower, tasks).to_numpy(dtype=float)
        im = a.images[0]
        if im.get_array().shape != m.shape:
            return False
        im.set_data(m)
        im.set_clim(*((0, 1) if normalisation == "minmax" else (np.nanmin(m), np.nanmax(m))))
        if im.colorbar is not None:
            im.colorbar.set_label(f"sensitivity ({normalisation})")
    if title:
        fig.suptitle(title)
    return True


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
    _heatmap(ax, corr.to_numpy(dtype=float), corr.columns, corr.index, cmap="RdBu_r", vmin=-1,
             vmax=1, fmt=".1f", label=label, square=True)
    if title:
        ax.set_title(title)
    return fig


def proxy_oracle_bars(pooled: pd.DataFrame, ax=None, title: str | None = None):
    """Mean (± std over tasks) Spearman of each proxy against the oracle, per tower; a proxy's
    name breaks at its underscores, so that neighbouring names never run into each other, and
    the figure widens with the number of proxies (up to the notebook's width)."""
    proxies = list(dict.fromkeys(pooled["proxy"]))
    fig, ax = _ax(ax, figsize=(min(NOTEBOOK_WIDTH, max(7, 0.95 * len(proxies))), 3.6))
    towers = list(dict.fromkeys(pooled["tower"]))
    width = 0.8 / len(towers)
    for k, tower in enumerate(towers):
        d = pooled[pooled["tower"] == tower].set_index("proxy").reindex(proxies)
        ax.bar(np.arange(len(proxies)) + k * width, d["mean"], width, yerr=d["std"],
               label=tower, capsize=2, color=TOWER_COLORS.get(tower))
    ax.axhline(0, color="black", lw=0.5)
    ticks = np.arange(len(proxies)) + width * (len(towers) - 1) / 2
    if len(proxies) > 6:  # many names: slanted, each on one line
        ax.set_xticks(ticks, proxies, rotation=30, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(ticks, [_wrap_name(p) for p in proxies])
    ax.set_ylabel("Spearman vs oracle gain")
    ax.set_ylim(-1, 1)
    _legend_outside(ax)
    if title:
        ax.set_title(title)
    return fig


def _wrap_name(name: str, width: int = 10) -> str:
    """``name`` on several lines, broken after an underscore (or ``/``, ``*``, ``:``, which
    join the parts of a derived score's name) once a line reaches ``width``."""
    import re

    parts = re.findall(r"[^_/*:]+[_/*:]?|[_/*:]", name)
    lines, line = [], ""
    for part in parts:
        if line and len(line) + len(part.rstrip("_/*:")) > width:
            lines.append(line)
            line = part
        else:
            line += part
    return "\n".join([*lines, line])


def proxy_reliability(table: pd.DataFrame, proxy: str = "grad_norm",
                      ceiling: dict[str, float] | None = None, ax=None,
                      title: str | None = None):
    """How a proxy's layer ranking depends on the number of probe batches K+1, per tower: its
    stability across probe seeds (left) and its Spearman with the oracle's layer gains (right),
    mean over tasks with a +- std band. ``table``: batch count, tower, proxy, stability,
    stability_std, oracle, oracle_std (benchmarks/bench_proxy_reliability.py); ``ceiling``:
    per tower, the oracle's agreement with itself across its seeds, drawn as a dotted line (no
    proxy can be expected to agree with the oracle more than that). ``ax``: a pair of axes."""
    from dmole_lab.config import TOWERS

    fig, axes = _pair(ax, (NOTEBOOK_WIDTH, 3.6))
    d = table[table["proxy"] == proxy]
    if d.empty:
        raise ValueError(f"no rows for proxy {proxy!r}; have {sorted(set(table['proxy']))}")
    colours = TOWER_COLORS
    for a, column, label in ((axes[0], "stability", "Spearman between probe seeds"),
                             (axes[1], "oracle", "Spearman with the oracle")):
        for tower in TOWERS:
            t = d[d["tower"] == tower].sort_values("batches")
            if column not in t or t[column].isna().all():
                continue
            a.plot(t["batches"], t[column], marker="o", color=colours[tower], label=tower)
            a.fill_between(t["batches"], t[column] - t[f"{column}_std"],
                           t[column] + t[f"{column}_std"], color=colours[tower], alpha=0.12,
                           lw=0)
            if column == "oracle" and ceiling and tower in ceiling:
                a.axhline(ceiling[tower], color=colours[tower], ls=":", lw=1,
                          label=f"{tower}: oracle vs itself")
        a.set_xscale("log", base=2)
        ticks = sorted(set(d["batches"]))
        a.set_xticks(ticks, [str(b) for b in ticks])
        a.set_xlabel("probe batches K+1")
        a.set_ylabel(label)
        a.set_ylim(-1, 1)
        a.axhline(0, color="black", lw=0.5)
    _legend_outside(axes[1])
    fig.suptitle(title or f"{proxy}: mean ± std over tasks")
    fig.tight_layout()
    return fig


def oracle_agreement(curve: pd.DataFrame, proxies: pd.DataFrame | None = None,
                     proxy: str = "grad_norm", target: float = 0.8, ax=None,
                     title: str | None = None):
    """The oracle's agreement with itself against its number of seeds, per tower: two
    independent halves of the seeds (solid), and single seeds (dashed), with the ``target`` a
    trustworthy oracle should reach; and, from ``proxies``, ``proxy``'s Spearman with the
    oracle of those seeds (dotted). ``curve`` and ``proxies``:
    :func:`dmole_lab.analysis.profiles.ceiling_by_seeds` and
    :func:`~dmole_lab.analysis.profiles.proxy_by_seeds`."""
    fig, ax = _ax(ax, figsize=(7, 3.6))
    for tower, d in curve.groupby("tower", sort=False):
        colour = TOWER_COLORS.get(tower)
        ax.plot(d["seeds"], d["split_half"], marker="o", color=colour,
                label=f"{tower}: half against half")
        ax.plot(d["seeds"], d["single"], ls="--", color=colour, label=f"{tower}: single seeds")
        if proxies is not None:
            p = proxies[(proxies["tower"] == tower) & (proxies["proxy"] == proxy)]
            if p.empty:
                raise ValueError(f"no {tower} rows for proxy {proxy!r}; have "
                                 f"{sorted(set(proxies['proxy']))}")
            ax.plot(p["seeds"], p["spearman"], ls=":", marker=".", color=colour,
                    label=f"{tower}: {proxy} vs oracle")
    ax.axhline(target, color="black", ls="-.", lw=0.8, label=f"target {target:g}")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("oracle seeds")
    ax.set_ylabel("Spearman over layers")
    ax.set_ylim(-0.2, 1)
    _legend_outside(ax)
    ax.set_title(title or "Does the oracle agree with itself? (mean over tasks)")
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
        m = _allocation_matrix(allocation, tasks, n_layers, tower)
        _heatmap(a, m, range(m.shape[1]), tasks, cmap="Greens", vmin=0, vmax=per_layer,
                 fmt=".0f", skip_zero=True, label="modules with an expert", rotate_x=False,
                 chars=len(str(per_layer)))
        a.set_xlabel(f"{tower} layer (0 = input side)")
        a.set_title(_allocation_title(allocation, tower))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _allocation_matrix(allocation: pd.DataFrame, tasks: list[str], n_layers: dict[str, int],
                       tower: str) -> np.ndarray:
    """tasks x layers of one tower: how many modules of the layer hold the task's expert."""
    d = allocation[allocation["tower"] == tower]
    return (d.groupby(["task", "layer"]).size().unstack(fill_value=0)
            .reindex(index=list(tasks), columns=range(n_layers[tower]), fill_value=0)
            .to_numpy(dtype=float))


def _allocation_title(allocation: pd.DataFrame, tower: str) -> str:
    n = int((allocation["tower"] == tower).sum())
    return f"{'vision encoder' if tower == 'vision' else 'LLM'}: {n} experts"


def update_allocation_heatmaps(fig, allocation: pd.DataFrame, tasks: list[str],
                               n_layers: dict[str, int], title: str | None = None) -> bool:
    """Redraw a figure of :func:`allocation_heatmaps` with another allocation of the same tasks
    and layers in place (new cell colours, numbers and titles; no new artists), which an
    explorer can then render without rebuilding it. False when ``fig`` cannot take it (another
    shape, or more modules per layer than its colour scale): build a new figure instead."""
    from dmole_lab.config import TOWERS

    axes = [a for a in fig.axes if a.images]
    if len(axes) != len(TOWERS):
        return False
    per_layer = allocation.groupby(["tower", "layer"])["module"].nunique().max() \
        if len(allocation) else 1
    if per_layer > axes[0].images[0].norm.vmax:
        return False
    for a, tower in zip(axes, TOWERS):
        m = _allocation_matrix(allocation, tasks, n_layers, tower)
        if not _reannotate(a, a.images[0], m, ".0f", skip_zero=True):
            return False
        a.set_title(_allocation_title(allocation, tower))
    if title:
        fig.suptitle(title)
    return True


def routing_confusion(confusion: pd.DataFrame, ax=None, title: str | None = None):
    """Evaluation set x routed task as row shares (e.g. :func:`dmole_lab.analysis.usage.confusion`
    with ``normalise=True``); the diagonal is the router's accuracy per set."""
    fig, ax = _ax(ax, figsize=(1.5 + 0.55 * confusion.shape[1], 1.0 + 0.45 * len(confusion)))
    _heatmap(ax, confusion.to_numpy(dtype=float), confusion.columns, confusion.index,
             cmap="Purples", vmin=0, vmax=1, fmt=".2f", skip_zero=True,
             label="share of the set's samples")
    ax.set_xlabel("routed task (top vote)")
    ax.set_ylabel("evaluation set")
    if title:
        ax.set_title(title)
    return fig


def curriculum_split_bars(splits: pd.DataFrame, ax=None, title: str | None = None):
    """Per task, the vision tower's share of the expert budget under each curriculum mode.

    ``splits``: task, curriculum, vision_share
    (:func:`dmole_lab.dmole.allocation.curriculum_splits`). A black mark across each task's
    "current" bar is its rho_V: the share that mode gives before the vision floor lifts it.
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
        at = x + modes.index("current") * width  # on the "current" bar, as wide as it
        ax.hlines(rho["rho_vision"], at - width / 2, at + width / 2, color="black", lw=2,
                  label="rho_V: the 'current' bar\nbefore the floor", zorder=3)
    ax.set_xticks(x + width * (len(modes) - 1) / 2, tasks, rotation=30, ha="right")
    ax.set_ylabel("vision share of the budget")
    ax.set_ylim(0, 1)
    _legend_outside(ax, title="curriculum", title_fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def tower_ratio_bars(ratios: dict[str, pd.DataFrame], ax=None, title: str | None = None,
                     label: str = "LLM / vision gradient norm (median over the stage)"):
    """Per task, the LLM / vision ratio of each method side by side (log scale; 1 = balanced).

    ``ratios``: method -> :func:`dmole_lab.analysis.profiles.tower_ratio` table (task, median, ...);
    each method in its fixed colour (:func:`method_color`).
    """
    fig, ax = _ax(ax, figsize=(9, 3.5))
    tasks = list(dict.fromkeys(t for r in ratios.values() for t in r["task"]))
    width = 0.8 / max(1, len(ratios))
    x = np.arange(len(tasks))
    for k, (method, r) in enumerate(ratios.items()):
        d = r.set_index("task").reindex(tasks)
        ax.bar(x + k * width, d["median"], width, label=method, color=method_color(method))
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
    """Forgetting curves of one task: its score after every stage, one line per variant in its
    fixed colour (mean over seeds, band = +- one standard error); the dotted line marks the
    stage that trains the task."""
    if task not in tasks:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(tasks)}")
    own = ax is None
    fig, ax = _ax(ax, figsize=(8, 4))
    d = scores[scores["eval_task"] == task]
    _seed_band(ax, d, "variant", list(variants or dict.fromkeys(d["variant"])), methods=True)
    ax.axvline(tasks.index(task) + 1, color="grey", ls=":", lw=1, label="_trained")
    ax.set_xticks(range(len(tasks) + 1))
    ax.set_xlabel("stage (0 = zero-shot)")
    _task_curves_labels(ax, task, title)
    if own:  # the legend outside the axes, inside the canvas
        fig.tight_layout()
    return fig


def _task_curves_labels(ax, task: str, title: str | None) -> None:
    ax.set_ylabel(f"score on {task}")
    ax.set_title(title or f"{task}: score across the stream (mean ± s.e. over seeds)")


def update_task_curves(fig, scores: pd.DataFrame, task: str, tasks: list[str],
                       variants: list[str], title: str | None = None) -> bool:
    """Redraw a figure of :func:`task_curves_by_method` in place for another task of the same
    variants. False when ``fig`` cannot take it (other variants): build a new figure."""
    if task not in tasks or len(fig.axes) != 1:
        return False
    ax = fig.axes[0]
    if not _update_seed_band(ax, scores[scores["eval_task"] == task], "variant", variants):
        return False
    trained = [ln for ln in ax.lines if ln.get_label() == "_trained"]
    for ln in trained:
        ln.set_xdata([tasks.index(task) + 1] * 2)
    _task_curves_labels(ax, task, title)
    return True


def score_matrix_grid(scores: pd.DataFrame, tasks: list[str], variants: list[str],
                      ncols: int = 2):
    """Seed-mean score matrices of ``variants`` side by side (one heatmap each), ``ncols`` to
    a row; two fill a notebook's width with the numbers in the cells still readable there."""
    stats = _seed_mean(scores).rename(columns={"mean": "value"})
    nrows = -(-len(variants) // ncols)
    width = NOTEBOOK_WIDTH / 2  # two to a notebook's width
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 0.85 * width * nrows),
                             squeeze=False)
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
    bar per metric, error bars = std over seeds. Each variant's name is written in its fixed
    colour (:func:`method_color`), D-MoLE's in bold; the legend sits outside the bars."""
    fig, ax = _ax(ax, figsize=(min(NOTEBOOK_WIDTH - 1, max(6, 0.8 * len(table))), 4))
    _variant_bars(ax, list(table.index), {m: table[(m, "mean")] for m in metrics},
                  {m: table[(m, "std")] for m in metrics}, rotation=45)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("score (0-100)")
    if title:
        ax.set_title(title)
    return fig


def _minmax(values: pd.Series) -> pd.Series:
    lo, hi = values.min(), values.max()
    return (values - lo) / (hi - lo) if hi > lo else values * 0.0


def _score_and_gain(scores: pd.DataFrame, oracle: pd.DataFrame, task: str, tower: str):
    """One task and tower: layers, the score and the oracle gain, each min-max scaled."""
    d = (scores[(scores["task"] == task) & (scores["tower"] == tower)]
         .merge(oracle, on=["task", "tower", "layer"]).sort_values("layer"))
    return d["layer"].to_numpy(), _minmax(d["score"]).to_numpy(), _minmax(d["gain"]).to_numpy()


def _score_title(a, tower: str, rho: float) -> None:
    name = "vision encoder" if tower == "vision" else "LLM"
    a.set_title(f"{name}: Spearman {rho:+.2f}")


def layer_score_vs_oracle(scores: pd.DataFrame, oracle: pd.DataFrame, task: str,
                          score_name: str, agreement: pd.DataFrame | None = None, ax=None):
    """One task's per-layer score (bars) beside the oracle's gain (black line), both min-max
    scaled per tower, one panel per tower; each panel's title gives their Spearman.

    ``scores``: task, tower, layer, score of one score name; ``oracle``: task, tower, layer,
    gain; ``agreement``: task, tower, spearman (computed here if None)."""
    from dmole_lab.analysis.profiles import agreement_with_oracle
    from dmole_lab.config import TOWERS

    agreement = agreement if agreement is not None else agreement_with_oracle(scores, oracle)
    fig, axes = _pair(ax, (NOTEBOOK_WIDTH, 3.0))
    for a, tower in zip(axes, TOWERS):
        layers, score, gain = _score_and_gain(scores, oracle, task, tower)
        a.bar(layers, score, color=TOWER_COLORS[tower], label=_wrap_name(score_name, 14))
        a.plot(layers, gain, color="black", marker="o", lw=1.5, label="oracle gain")
        a.set_xticks(layers)
        a.set_ylim(-0.05, 1.15)
        a.set_xlabel(f"{tower} layer (0 = input side)")
        a.set_ylabel("min-max scaled")
        rho = agreement[(agreement["task"] == task) & (agreement["tower"] == tower)]["spearman"]
        _score_title(a, tower, float(rho.iloc[0]) if len(rho) else float("nan"))
    _legend_outside(axes[1])
    fig.suptitle(f"{task}: {score_name} against the oracle")
    fig.tight_layout()
    return fig


def update_layer_score_vs_oracle(fig, scores: pd.DataFrame, oracle: pd.DataFrame, task: str,
                                 score_name: str, agreement: pd.DataFrame) -> bool:
    """Show another task or score in a :func:`layer_score_vs_oracle` figure in place; False
    when the layer counts differ (draw a new figure)."""
    from dmole_lab.config import TOWERS

    axes = fig.axes[:2]
    for a, tower in zip(axes, TOWERS):
        layers, score, gain = _score_and_gain(scores, oracle, task, tower)
        bars, line = a.patches, a.lines[0]
        if len(bars) != len(layers):
            return False
        for bar, h in zip(bars, score):
            bar.set_height(h)
        line.set_ydata(gain)
        rho = agreement[(agreement["task"] == task) & (agreement["tower"] == tower)]["spearman"]
        _score_title(a, tower, float(rho.iloc[0]) if len(rho) else float("nan"))
    for text in axes[1].get_legend().get_texts():  # lines come first in a legend
        if text.get_text() != "oracle gain":
            text.set_text(_wrap_name(score_name, 14))
    fig.suptitle(f"{task}: {score_name} against the oracle")  # reuses the title's artist
    return True


def factor_excess_bars(excess: pd.DataFrame, ax=None, title: str | None = None):
    """Layer 0's value of each factor over the mean of the other layers, per tower (mean over
    tasks, log scale): above 1 where layer 0 stands out (``probes.factors.layer_zero_excess``
    with a task column)."""
    fig, ax = _ax(ax, figsize=(7, 3.2))
    mean = excess.groupby(["factor", "tower"], sort=False)["ratio"].mean().unstack("tower")
    factors = list(dict.fromkeys(excess["factor"]))
    towers = [t for t in TOWER_COLORS if t in mean.columns]
    width = 0.8 / len(towers)
    for k, tower in enumerate(towers):
        ax.bar(np.arange(len(factors)) + k * width, mean.loc[factors, tower], width,
               color=TOWER_COLORS[tower], label=tower)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(mticker.FixedLocator([0.125, 0.25, 0.5, 1, 2, 4, 8, 16]))
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(mticker.NullLocator())
    ax.axhline(1.0, color="black", lw=0.7)
    ax.set_xticks(np.arange(len(factors)) + width * (len(towers) - 1) / 2,
                  [_wrap_name(f) for f in factors])
    ax.set_ylabel("layer 0 / other layers")
    _legend_outside(ax)
    if title:
        ax.set_title(title)
    return fig


def effect_bars(effects: pd.DataFrame, metrics: tuple[str, ...] = ("MFT", "AVG", "Last"),
                ax=None, title: str | None = None):
    """Each variant's paired effect against a base run, one group per variant and one bar
    per metric, error bars = standard error over seeds (``analysis.plasticity
    .paired_effects``); drawn as :func:`metric_bars` draws a method table."""
    variants = list(dict.fromkeys(effects["variant"]))
    fig, ax = _ax(ax, figsize=(min(NOTEBOOK_WIDTH - 1, max(6, 0.9 * len(variants))), 4))
    by = {m: effects[effects["metric"] == m].set_index("variant").reindex(variants)
          for m in metrics}
    _variant_bars(ax, variants, {m: d["effect"] for m, d in by.items()},
                  {m: d["se"] for m, d in by.items()}, rotation=30)
    ax.axhline(0, color="black", lw=0.7)
    ax.set_ylabel("difference in score points")
    if title:
        ax.set_title(title)
    return fig
