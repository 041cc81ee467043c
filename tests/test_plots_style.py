"""What the figures of dmole_lab.viz.plots show, read back from their artists: the numbers
written in heatmap cells (and whether they can be read), the mean +- std bands over seeds, and
the ``ax=None`` convention."""

import subprocess
import sys

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from dmole_lab.viz import plots


def _dark(text):
    return max(mcolors.to_rgb(text.get_color())) < 0.3


def _white(text):
    return mcolors.to_rgb(text.get_color()) == (1.0, 1.0, 1.0)


def _cells(ax):
    """(row, column) -> text of every annotation in a heatmap's axes (blank cells left out)."""
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
            for t in ax.texts if t.get_text()}


def _text_at(ax, r, c):
    return next(t for t in ax.texts if np.allclose(t.get_position(), (c, r)))


def _matrix_table(A, tasks, general=None):
    rows = [{"stage": t, "eval_task": task, "value": A[t, i]}
            for t in range(A.shape[0]) for i, task in enumerate(tasks) if np.isfinite(A[t, i])]
    if general is not None:
        rows += [{"stage": t, "eval_task": "general", "value": g} for t, g in enumerate(general)]
    return pd.DataFrame(rows)


A = np.array([[5.0, 0.0, np.nan],  # stage 0: task c not evaluated
              [61.2, 3.0, 0.4],
              [40.4, 88.6, 99.6]])


def test_score_matrix_cells_show_the_rounded_scores_in_the_callers_order():
    table = _matrix_table(A, ["a", "b", "c"], general=[70.0, 50.0, 20.0])
    fig, ax = plt.subplots()
    assert plots.score_matrix_heatmap(table.iloc[::-1], ["a", "b", "c"], ax=ax) is fig
    assert _cells(ax) == {(0, 0): "5", (0, 1): "0", (0, 3): "70",
                          (1, 0): "61", (1, 1): "3", (1, 2): "0", (1, 3): "50",
                          (2, 0): "40", (2, 1): "89", (2, 2): "100", (2, 3): "20"}
    np.testing.assert_allclose(ax.images[0].get_array()[:, :3], A)  # NaN stays empty
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c", "general"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["zero-shot", "after 1: a",
                                                            "after 2: b"]
    # seaborn's contrast rule: dark text on the bright (yellow) cell, white on dark ones
    assert _dark(_text_at(ax, 2, 2))
    assert _white(_text_at(ax, 1, 1))
    plots.close(fig)
    fig = plots.score_matrix_heatmap(table, ["a", "b", "c"], general=False)
    assert len(fig.axes[0].texts) == 8 and fig.axes[0].images[0].get_array().shape == (3, 3)
    plots.close(fig)


def _assert_cells_fit(fig, ax, min_size):
    """Every cell text is at least ``min_size`` points and lies inside its own cell."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for t in ax.texts:
        assert t.get_fontsize() >= min_size
        c, row = t.get_position()
        (x0, y0), (x1, y1) = ax.transData.transform([(c - 0.5, row - 0.5), (c + 0.5, row + 0.5)])
        box = t.get_window_extent(r)
        assert min(x0, x1) <= box.x0 and box.x1 <= max(x0, x1), t.get_text()
        assert min(y0, y1) <= box.y0 and box.y1 <= max(y0, y1), t.get_text()
    labels = sorted((t.get_window_extent(r) for t in ax.get_yticklabels()), key=lambda b: b.y0)
    assert all(lo.y1 <= hi.y0 for lo, hi in zip(labels, labels[1:]))  # no overlapping rows


def test_score_matrix_numbers_fit_their_cells_and_grow_with_them():
    tasks = [f"task_{i}" for i in range(9)]
    big = np.full((10, 9), 100.0)
    table = _matrix_table(big, tasks)
    fig = plots.score_matrix_heatmap(table, tasks, general=False)  # its own figure
    _assert_cells_fit(fig, fig.axes[0], 7)
    plots.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(16, 5.5))  # notebook 02's side-by-side layout
    for ax in axes:
        plots.score_matrix_heatmap(table, tasks, ax=ax, general=False)
    fig.tight_layout()
    for ax in axes:
        _assert_cells_fit(fig, ax, 8)
    plots.close(fig)
    scores = table.assign(variant="v", seed=0)
    fig = plots.score_matrix_grid(pd.concat([scores, scores.assign(variant="w")]), tasks,
                                  ["v", "w", "v", "w"], ncols=3)
    for ax in fig.axes:
        if ax.images:
            _assert_cells_fit(fig, ax, 6)
    plots.close(fig)


def test_correlation_cells_are_readable_on_dark_and_light_colours():
    corr = pd.DataFrame([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.04], [0.0, 0.04, 1.0]],
                        index=list("abc"), columns=list("abc"))
    fig = plots.correlation_heatmap(corr)
    ax = fig.axes[0]
    assert _cells(ax) == {(r, c): f"{corr.iloc[r, c]:.1f}" for r in range(3) for c in range(3)}
    for r, c in ((0, 0), (0, 1), (1, 0)):  # dark red, dark blue
        assert _white(_text_at(ax, r, c))
    for r, c in ((0, 2), (1, 2)):  # the white middle of RdBu_r
        assert _dark(_text_at(ax, r, c))
    _assert_cells_fit(fig, ax, 6)
    plots.close(fig)


def test_allocation_and_routing_leave_zero_cells_blank():
    alloc = pd.DataFrame([("a", "vision", 0, "q"), ("a", "vision", 0, "k"), ("b", "llm", 2, "q"),
                          ("a", "llm", 2, "v")], columns=["task", "tower", "layer", "module"])
    fig = plots.allocation_heatmaps(alloc, ["a", "b"], {"vision": 2, "llm": 3})
    vision, llm = [a for a in fig.axes if a.images]
    assert _cells(vision) == {(0, 0): "2"} and _cells(llm) == {(0, 2): "1", (1, 2): "1"}
    assert [t.get_text() for t in vision.get_yticklabels()] == ["a", "b"]
    plots.close(fig)
    conf = pd.DataFrame([[0.75, 0.25], [0.0, 1.0]], index=["a", "b"], columns=["a", "b"])
    fig = plots.routing_confusion(conf)
    ax = fig.axes[0]
    assert _cells(ax) == {(0, 0): "0.75", (0, 1): "0.25", (1, 1): "1.00"}
    assert _white(_text_at(ax, 1, 1))  # darkest purple
    assert _dark(_text_at(ax, 0, 1))
    plots.close(fig)


def _seed_scores():
    """Two variants x three seeds, tasks a and b over stages 0..2 (variant "y" listed first)."""
    rng = np.random.default_rng(0)
    rows = [{"variant": v, "seed": s, "stage": t, "eval_task": task,
             "value": float(rng.integers(0, 100))}
            for v in ("y", "x") for s in range(3) for t in range(3) for task in ("a", "b")]
    return pd.DataFrame(rows)


def _band(coll, x):
    """The lowest and highest y of a fill_between band at x."""
    verts = np.concatenate([p.vertices for p in coll.get_paths()])
    ys = verts[np.isclose(verts[:, 0], x), 1]
    return ys.min(), ys.max()


def test_task_curves_band_spans_mean_plus_minus_one_standard_error_over_seeds():
    scores = _seed_scores()
    stats = (scores[scores["eval_task"] == "a"].groupby(["variant", "stage"])["value"]
             .agg(["mean", "sem"]))  # std over seeds (ddof = 1) / sqrt(seeds)
    fig, ax = plt.subplots()
    assert plots.task_curves_by_method(scores, "a", ["a", "b"], ["x", "y"], ax=ax) is fig
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines[:2]] == ["x", "y"]  # the caller's order
    bands = [c for c in ax.collections if len(c.get_paths())]
    assert len(bands) == 2
    for line, band, v in zip(lines, bands, ("x", "y")):
        np.testing.assert_allclose(line.get_ydata(), stats.loc[v, "mean"])
        np.testing.assert_allclose(band.get_facecolor()[0][:3],
                                   mcolors.to_rgb(line.get_color()))
        for stage in range(3):
            mean, sd = stats.loc[(v, stage)]
            assert sd > 0
            np.testing.assert_allclose(_band(band, stage), (mean - sd, mean + sd))
    plots.close(fig)


def test_forgetting_curves_follow_the_task_order_and_band_pooled_seeds():
    tasks = ["b", "a"]
    one = _matrix_table(np.array([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]]), tasks)
    fig = plots.forgetting_curves(one.iloc[::-1], tasks)  # one run: the raw columns
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.get_lines()[:2]] == tasks
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [10, 30, 50])
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [20, 40, 60])
    plots.close(fig)
    two = pd.concat([one, one.assign(value=one["value"] + 10)])  # two seeds: s.e. 5
    fig = plots.forgetting_curves(two, tasks)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [15, 35, 55])
    band = [c for c in ax.collections if len(c.get_paths())][0]
    np.testing.assert_allclose(_band(band, 1), (30, 40))
    plots.close(fig)


def test_many_curves_get_distinct_colours_and_a_legend_off_the_axes():
    scores = pd.concat([_seed_scores().assign(variant=f"m{i}") for i in range(11)])
    fig = plots.task_curves_by_method(scores, "a", ["a", "b"])
    ax = fig.axes[0]
    lines = ax.get_lines()[:11]
    assert [ln.get_label() for ln in lines] == [f"m{i}" for i in range(11)]
    assert len({mcolors.to_hex(ln.get_color()) for ln in lines}) == 11
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    assert ax.get_legend().get_window_extent(r).x0 >= ax.get_window_extent(r).x1
    plots.close(fig)


def _profiles():
    return pd.DataFrame([{"task": t, "tower": tower, "layer": k, "score": float(k + i)}
                         for i, t in enumerate(("a", "b")) for tower in ("vision", "llm")
                         for k in range(3)])


def _single_axes_figures():
    scores = _seed_scores()
    table = pd.DataFrame({("AVG", "mean"): [1.0, 2.0], ("AVG", "std"): [0.1, 0.2]},
                         index=["x", "y"])
    return {
        "score_matrix_heatmap": lambda ax: plots.score_matrix_heatmap(
            _matrix_table(A, ["a", "b", "c"]), ["a", "b", "c"], ax=ax),
        "forgetting_curves": lambda ax: plots.forgetting_curves(
            _matrix_table(A, ["a", "b", "c"]), ["a", "b", "c"], ax=ax),
        "correlation_heatmap": lambda ax: plots.correlation_heatmap(
            pd.DataFrame(np.eye(2), index=["a", "b"], columns=["a", "b"]), ax=ax),
        "routing_confusion": lambda ax: plots.routing_confusion(
            pd.DataFrame(np.eye(2), index=["a", "b"], columns=["a", "b"]), ax=ax),
        "task_curves_by_method": lambda ax: plots.task_curves_by_method(
            scores, "a", ["a", "b"], ax=ax),
        "metric_bars": lambda ax: plots.metric_bars(table, ("AVG",), ax=ax),
        "curriculum_split_bars": lambda ax: plots.curriculum_split_bars(pd.DataFrame(
            {"task": ["a", "b"], "curriculum": "none", "vision_share": [0.3, 0.4]}), ax=ax),
    }


@pytest.mark.parametrize("name", list(_single_axes_figures()))
def test_functions_draw_into_the_given_axes(name):
    fig, ax = plt.subplots()
    before = plt.get_fignums()
    assert _single_axes_figures()[name](ax) is fig
    assert plt.get_fignums() == before  # no figure of its own
    assert ax.images or ax.lines or ax.patches
    plots.close(fig)


@pytest.mark.parametrize("draw", [
    lambda axes: plots.sensitivity_heatmaps(_profiles(), ["b", "a"], ax=axes),
    lambda axes: plots.allocation_heatmaps(pd.DataFrame(
        [("a", "llm", 1, "q")], columns=["task", "tower", "layer", "module"]), ["a", "b"],
        {"vision": 3, "llm": 3}, ax=axes),
    lambda axes: plots.layer_profile_bars(_profiles(), "a", ax=axes),
])
def test_paired_functions_draw_into_the_given_pair(draw):
    fig, axes = plt.subplots(1, 2)
    before = plt.get_fignums()
    assert draw(axes) is fig and plt.get_fignums() == before
    assert all(a.images or a.patches for a in axes)
    plots.close(fig)


def test_plots_stays_torch_free():
    code = "import sys, dmole_lab.viz.plots; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_method_keeps_its_colour_whatever_is_drawn_beside_it():
    scores = pd.concat([_seed_scores().assign(variant=v)
                        for v in ("seq-lora", "dmole", "ewc", "my-variant")])
    colours = []
    for chosen in (["seq-lora", "dmole", "ewc", "my-variant"], ["dmole", "my-variant"]):
        fig = plots.task_curves_by_method(scores, "a", ["a", "b"], chosen)
        lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()[:len(chosen)]}
        colours.append({k: mcolors.to_hex(ln.get_color()) for k, ln in lines.items()})
        assert lines["dmole"].get_linewidth() > lines["my-variant"].get_linewidth()
        plots.close(fig)
    assert all(colours[0][k] == c for k, c in colours[1].items())
    assert colours[0]["dmole"] == plots.method_color("D-MoLE") == plots.METHOD_COLORS["dmole"]
    # D-MoLE's colour is its own
    assert list(plots.METHOD_COLORS.values()).count(plots.METHOD_COLORS["dmole"]) == 1
    assert plots.method_color("my-variant") == plots.method_color("my-variant")
    fig = plots.tower_ratio_bars({"D-MoLE": pd.DataFrame({"task": ["a"], "median": [2.0]}),
                                  "sequential LoRA": pd.DataFrame({"task": ["a"],
                                                                   "median": [3.0]})})
    bars = fig.axes[0].containers
    assert [mcolors.to_hex(b.patches[0].get_facecolor()) for b in bars] == [
        plots.METHOD_COLORS["dmole"], plots.METHOD_COLORS["seq-lora"]]
    plots.close(fig)


def test_rho_marks_sit_on_the_current_bars_and_proxy_names_wrap():
    splits = pd.DataFrame({"task": ["a", "a", "b", "b"], "curriculum": ["current", "none"] * 2,
                           "vision_share": [0.25, 0.5, 0.25, 0.5],
                           "rho_vision": [0.1, 0.1, 0.05, 0.05]})
    fig = plots.curriculum_split_bars(splits)
    ax = fig.axes[0]
    current = ax.containers[0]  # the first mode's bars
    marks = ax.collections[0].get_segments()
    for bar, seg, rho in zip(current.patches, marks, (0.1, 0.05)):
        np.testing.assert_allclose([seg[0][0], seg[1][0]], [bar.get_x(), bar.get_x() +
                                                            bar.get_width()])
        assert seg[0][1] == seg[1][1] == rho
    plots.close(fig)
    pooled = pd.DataFrame({"proxy": ["grad_norm", "grad_norm_per_param"] * 2,
                           "tower": ["vision"] * 2 + ["llm"] * 2, "mean": [0.2] * 4,
                           "std": [0.1] * 4})
    fig = plots.proxy_oracle_bars(pooled)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [
        "grad_norm", "grad_norm_\nper_param"]
    plots.close(fig)
