"""Every figure the notebooks show, read back from its artists after running each notebook's
source in full mode (the shipped results): it fits the notebook's width with readable text,
no two tick labels run into each other, no legend covers data, each method keeps its one colour,
and no figure is shown twice.

The notebooks run in a child process (this module run as ``python -m
tests.test_notebook_figures NOTEBOOK.py OUT.json``), which records every figure the notebook
leaves open (what the inline backend displays) and the first figure of every explorer, which
shows its whole canvas.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.py"))
#: Smallest text (points, once the figure is shrunk to the notebook's width) and smallest
#: number in a heatmap cell.
MIN_TEXT, MIN_CELL = 7.0, 8.0


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def inspect(fig) -> dict:
    """What a reader meets in ``fig``: its shrink factor at the notebook's width, its smallest
    text and cell number (after shrinking), tick labels that collide, legends over data, and
    the colour of every artist labelled with a method's name."""
    import hashlib

    import matplotlib.colors as mcolors
    import numpy as np
    from matplotlib.patches import Rectangle
    from matplotlib.text import Text

    from dmole_lab.viz import plots

    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    tight = fig.get_tightbbox(r)
    shown = tight.width  # inches, as the inline backend crops
    width, height = fig.get_size_inches()
    inside = (tight.x0 >= -0.02 and tight.y0 >= -0.02 and tight.x1 <= width + 0.02
              and tight.y1 <= height + 0.02)
    scale = min(1.0, plots.NOTEBOOK_WIDTH / shown)
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    cells = [t for ax in fig.axes if ax.images for t in ax.texts]
    problems = []
    for ax in fig.axes:
        where = ax.get_title() or (fig._suptitle.get_text() if fig._suptitle else "")
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            labels = [t for t in labels if t.get_visible() and t.get_text()]
            for a, b in zip(labels, labels[1:]):
                rot = a.get_rotation() % 180
                if rot == 0 and _overlap(a.get_window_extent(r), b.get_window_extent(r)):
                    problems.append(f"{where}: tick labels {a.get_text()!r} and "
                                    f"{b.get_text()!r} overlap")
                elif rot:  # slanted labels: the distance between their baselines
                    x0 = ax.transData.transform((a.get_position()[0], 0))[0]
                    x1 = ax.transData.transform((b.get_position()[0], 0))[0]
                    if abs(x1 - x0) * np.sin(np.radians(rot)) < a.get_fontsize() * fig.dpi / 72:
                        problems.append(f"{where}: slanted tick labels too close")
        legend = ax.get_legend()
        if legend is not None:
            box = legend.get_window_extent(r)
            for line in ax.lines:
                pts = ax.transData.transform(line.get_xydata()) if len(line.get_xydata()) else []
                if any(box.x0 < x < box.x1 and box.y0 < y < box.y1 for x, y in pts):
                    problems.append(f"{where}: the legend covers {line.get_label()!r}")
            if any(isinstance(p, Rectangle) and p.get_height() and
                   _overlap(p.get_window_extent(r), box) for p in ax.patches):
                problems.append(f"{where}: the legend covers a bar")
    colours = {}
    for ax in fig.axes:
        for artist in [*ax.lines, *ax.containers]:
            name = artist.get_label()
            if name in plots.METHOD_COLORS or name.lower() in plots.METHOD_ALIASES:
                colour = (artist.get_color() if hasattr(artist, "get_color")
                          else artist.patches[0].get_facecolor())
                colours[name] = list(map(float, mcolors.to_rgb(colour)))
    buf = np.asarray(r.buffer_rgba())
    return {"title": fig._suptitle.get_text() if fig._suptitle else fig.axes[0].get_title(),
            "scale": scale, "min_text": scale * min(t.get_fontsize() for t in texts),
            "min_cell": scale * min((t.get_fontsize() for t in cells), default=99.0),
            "problems": problems, "colours": colours, "inside": bool(inside),
            "digest": hashlib.sha1(buf.tobytes()).hexdigest()}


def run_notebook(path: Path) -> list[dict]:
    """Run a notebook's source here (Agg) and inspect every figure a reader sees."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dmole_lab.viz import widgets

    closed, first = set(), []
    plt_close = plt.close

    def close(fig=None):
        closed.add(id(fig))

    redraw = widgets._Explorer.redraw

    def first_redraw(self):
        redraw(self)
        if not getattr(self, "_seen", False):
            self._seen = True
            first.append(self.figure)

    plt.close, widgets.plots.close = close, close
    widgets._Explorer.redraw = first_redraw
    os.chdir(path.parent)
    runpy.run_path(path.name, run_name="__main__")
    shown = [plt.figure(n) for n in plt.get_fignums()]
    shown = [f for f in shown if id(f) not in closed and f.axes]
    out = [inspect(f) for f in shown] + [{**inspect(f), "explorer": True} for f in first]
    plt_close("all")
    return out


if __name__ == "__main__":
    Path(sys.argv[2]).write_text(json.dumps(run_notebook(Path(sys.argv[1]))))
    sys.exit(0)


@pytest.fixture(scope="module", params=NOTEBOOKS, ids=lambda p: p.stem)
def figures(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures") / "figures.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DMOLE_SMOKE", "DMOLE_STREAM_FILE")}
    proc = subprocess.run([sys.executable, "-m", "tests.test_notebook_figures",
                           str(request.param), str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_text_is_readable_at_the_notebooks_width(figures):
    small = [(f["title"], round(f["min_text"], 1)) for f in figures if f["min_text"] < MIN_TEXT]
    assert not small, f"text under {MIN_TEXT} pt once shrunk to the notebook: {small}"
    cells = [(f["title"], round(f["min_cell"], 1)) for f in figures if f["min_cell"] < MIN_CELL]
    assert not cells, f"heatmap numbers under {MIN_CELL} pt: {cells}"


def test_no_label_collides_and_no_legend_covers_data(figures):
    assert [p for f in figures for p in f["problems"]] == []


def test_each_method_keeps_its_colour(figures):
    import matplotlib.colors as mcolors

    from dmole_lab.viz import plots

    for f in figures:
        for name, colour in f["colours"].items():
            assert mcolors.to_hex(colour) == mcolors.to_hex(plots.method_color(name)), (
                f["title"], name)


def test_no_figure_is_shown_twice(figures):
    digests = [f["digest"] for f in figures]
    twice = [f["title"] for f in figures if digests.count(f["digest"]) > 1]
    assert not twice, f"shown twice: {twice}"


def test_an_explorer_draws_inside_its_canvas(figures):
    """An explorer shows its whole canvas (to redraw it in place), so nothing may lie outside."""
    outside = [f["title"] for f in figures if f.get("explorer") and not f["inside"]]
    assert not outside, outside
