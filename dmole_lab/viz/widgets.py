"""Notebook explorers: controls that look things up in stored tables and redraw with ``plots``.

A widget holds no logic: every number comes from :mod:`dmole_lab.analysis.profiles` on a table
already computed and stored, every figure from :mod:`dmole_lab.viz.plots`, so a change of a control
redraws in milliseconds. Each explorer exposes its controls as attributes (set ``.value`` to
drive it from code or a test), the last figure as ``.figure`` and the whole panel as ``.widget``
(displayed when the explorer is the last expression of a cell; a page without a kernel, e.g.
``make html``, shows the figure it had then and says that the controls need a kernel).
"""

from __future__ import annotations

import base64
import html
import io
import time

import ipywidgets as W
import numpy as np
import pandas as pd

from dmole_lab.analysis.profiles import NORMALISATIONS, QUANTITIES, layer_profiles, tower_split
from dmole_lab.config import CURRICULA
from dmole_lab.dmole.allocation import allocate_stream, allocation_table, expert_params

from . import plots

ALL_TASKS = "all tasks"
#: What a static export (no kernel, no widget JavaScript) says under each explorer's figure.
NEEDS_KERNEL = ("Interactive explorer: open this notebook in Jupyter with a kernel to use its "
                "controls (<code>make lab</code>).")


def png(fig, dpi: int = 100, bbox=None) -> bytes:
    """The figure as PNG bytes, cropped to what it draws (as the notebook's inline backend), or
    to ``bbox`` (inches, see :func:`crop_box`): then the figure is drawn once on its own canvas
    and the box cut out of the picture, where ``savefig`` would lay it out and draw it twice."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    buf = io.BytesIO()
    if bbox is None or fig.dpi != dpi:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if bbox is None else bbox)
        return buf.getvalue()
    if not isinstance(fig.canvas, FigureCanvasAgg):  # a figure closed in pyplot keeps none
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())
    height, width = pixels.shape[:2]
    x0, x1 = (int(round(v * dpi)) for v in (bbox.x0, bbox.x1))
    y0, y1 = (int(round(height - v * dpi)) for v in (bbox.y1, bbox.y0))  # rows count down
    crop = pixels[max(0, y0):min(height, y1), max(0, x0):min(width, x1)]
    Image.fromarray(crop).save(buf, format="png", compress_level=1)
    return buf.getvalue()


def crop_box(fig):
    """The box (inches) an explorer that updates its figure in place shows: the whole canvas,
    which the plotting functions lay out to hold everything they draw (tests/test_widgets.py
    checks it). Fixed once per figure, so that each later render draws once (a "tight" save
    lays the figure out and draws it twice) and the picture keeps its size."""
    from matplotlib.transforms import Bbox

    return Bbox.from_bounds(0, 0, *fig.get_size_inches())


class _Explorer:
    """Shared plumbing: a figure redrawn whenever one of ``controls`` changes.

    The figure is shown as an image widget whose bytes are replaced on each change: one message
    to the browser, which swaps the picture in place (no output area cleared and refilled), and
    the notes beside it are set in the same callback, so they arrive with it. Sliders report
    when they are released, not at every step of a drag, so a drag costs one redraw.
    """

    def __init__(self, controls: list[W.Widget]):
        self.output = W.Image(format="png")
        self.figure, self._box, self._texts = None, None, {}
        self.widget = W.VBox([W.HBox(controls), self.output])
        self.widget.add_class("dmole-explorer")  # how a browser test finds it
        for c in controls:
            c.observe(lambda _change: self.redraw(), names="value")

    def prepare(self) -> None:
        """Compute what the figure and its notes show for the current control values, once per
        change, before :meth:`update` or :meth:`draw` (which only draw it)."""

    def draw(self):  # pragma: no cover - every explorer overrides it
        """Build and return the figure for the current control values."""
        raise NotImplementedError

    def update(self, fig) -> bool:
        """Show the current control values in ``fig`` (the last figure) in place, if this
        explorer can; False: :meth:`draw` a new one. Building a figure costs more than
        drawing it, so explorers whose figure keeps its shape override this."""
        return False

    def redraw(self) -> None:
        """Redraw the figure for the current control values: in place when :meth:`update`
        can, else a new figure from :meth:`draw`."""
        self.prepare()
        if self.figure is not None and self._box is not None and self.update(self.figure):
            self.output.value = png(self.figure, bbox=self._box)
        else:
            fig = self.draw()
            self._box = crop_box(fig) if self._updates_in_place else None
            self.output.value = png(fig, bbox=self._box)
            plots.close(fig)
            self.figure = fig
        # the texts go out right behind the picture, so the browser shows them together
        for widget, value in self._texts.items():
            widget.value = value
        self._texts = {}

    def show_text(self, widget: W.HTML, value: str) -> None:
        """Set ``widget``'s text once the figure being drawn has been sent."""
        self._texts[widget] = value

    @property
    def _updates_in_place(self) -> bool:
        return type(self).update is not _Explorer.update

    def _repr_mimebundle_(self, **kwargs) -> dict[str, object]:
        """The panel as a widget view, plus a ``text/html`` fallback for a page without a kernel.

        Jupyter renders the widget view (``self.widget``'s own bundle); an export that drops it
        (``make html``, :mod:`dmole_lab.viz.export`) shows the fallback: the settings of the
        controls, the figure as it is now, the text of every HTML widget in the panel (notes,
        tables) and a line saying the controls need a kernel.
        """
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/html"] = self._static_html()
        return bundle

    def _static_html(self) -> str:
        widgets = list(_descendants(self.widget))
        settings = [f"{w.description} = {_shown(w)}" for w in widgets
                    if isinstance(w, W.ValueWidget) and getattr(w, "description", "")]
        caption = NEEDS_KERNEL + (" Shown: " + html.escape(", ".join(settings)) + "."
                                  if settings else "")
        figure = base64.b64encode(self.output.value).decode("ascii")
        notes = "".join(f"<div>{w.value}</div>" for w in widgets
                        if isinstance(w, W.HTML) and w.value)
        return (f'<div class="dmole-explorer-static"><p>{caption}</p>'
                f'<img alt="{type(self).__name__} figure" '
                f'src="data:image/{self.output.format};base64,{figure}">{notes}</div>')


def _shown(control: W.ValueWidget) -> str:
    """What a control shows: its option's label (a dropdown's), else its value."""
    shown = getattr(control, "label", control.value)
    return ", ".join(map(str, shown)) if isinstance(shown, tuple) else str(shown)


def _descendants(widget: W.Widget):
    """``widget`` and every widget inside it, depth first in panel order."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _descendants(child)


class SensitivityExplorer(_Explorer):
    """Figure 1 from a stored sensitivity table: pick proxy, probe batches, normalisation, task.

    ``task`` = "all tasks" draws the tasks x layers heatmaps; one task draws its per-layer
    profile per tower with its vision share rho_V (docs/method.md section 2 step 2).
    """

    def __init__(self, table: pd.DataFrame, tasks: list[str] | None = None,
                 batches: int | None = None, proxy: str = "grad_norm"):
        self.table = table
        self.tasks = list(tasks) if tasks is not None else list(dict.fromkeys(table["task"]))
        counts = sorted(int(b) for b in set(table["batches"]))
        proxies = sorted(set(table["proxy"]))
        self.proxy = W.Dropdown(options=proxies, value=proxy if proxy in proxies else proxies[0],
                                description="proxy")
        self.batches = W.Dropdown(options=counts, value=batches if batches in counts
                                  else counts[-1], description="batches")
        self.normalisation = W.Dropdown(options=list(NORMALISATIONS), value="minmax",
                                        description="normalise")
        self.task = W.Dropdown(options=[ALL_TASKS, *self.tasks], value=ALL_TASKS,
                               description="task")
        super().__init__([self.task, self.proxy, self.batches, self.normalisation])
        self.redraw()

    def profiles(self) -> pd.DataFrame:
        """Per-layer profiles (task, tower, layer, score) for the current proxy and batches."""
        return layer_profiles(self.table, self.proxy.value, self.batches.value)

    def update(self, fig) -> bool:
        """Another proxy, batch count or normalisation in the same heatmaps (a task's bars:
        a new figure)."""
        if self.task.value != ALL_TASKS:
            return False
        return plots.update_sensitivity_heatmaps(
            fig, self.profiles(), self.tasks, self.normalisation.value,
            title=f"{self.proxy.value}, {self.batches.value} batches")

    def draw(self):
        """Heatmaps of every task, or one task's per-layer bars."""
        prof = self.profiles()
        label = f"{self.proxy.value}, {self.batches.value} batches"
        if self.task.value == ALL_TASKS:
            return plots.sensitivity_heatmaps(prof, self.tasks, self.normalisation.value,
                                              title=label)
        split = tower_split(self.table, self.proxy.value, self.batches.value)
        rho = float(split.set_index("task").loc[self.task.value, "rho_V"])
        return plots.layer_profile_bars(prof, self.task.value, self.normalisation.value,
                                        title=f"{self.task.value}: {label}, rho_V = {rho:.3f}")


class DynamicsExplorer(_Explorer):
    """Figure 2 from a stored dynamics table: pick quantity, smoothing and the stages shown."""

    def __init__(self, dynamics: pd.DataFrame, quantity: str = "grad_norm", smooth: int = 5,
                 title: str | None = None):
        self.dynamics, self.title = dynamics, title
        tasks = list(dict.fromkeys(dynamics["task"])) if "task" in dynamics else []
        have = [q for q in QUANTITIES if q in set(dynamics["quantity"])]
        self.quantity = W.Dropdown(options=[(QUANTITIES[q][0], q) for q in have],
                                   value=quantity if quantity in have else have[0],
                                   description="quantity")
        self.smooth = W.IntSlider(value=smooth, min=1, max=50, description="smooth",
                                  continuous_update=False)
        self.task = W.Dropdown(options=[ALL_TASKS, *tasks], value=ALL_TASKS, description="task")
        super().__init__([self.task, self.quantity, self.smooth])
        self.redraw()

    def _rows(self) -> pd.DataFrame:
        d = self.dynamics
        return d if self.task.value == ALL_TASKS else d[d["task"] == self.task.value]

    def _label(self) -> str:
        label = QUANTITIES[self.quantity.value][1]
        return f"{self.title}: {label}" if self.title else label

    def draw(self):
        """Per-tower curves and their ratio for the chosen stages."""
        return plots.tower_dynamics(self._rows(), self.quantity.value, smooth=self.smooth.value,
                                    title=self._label())

    def update(self, fig) -> bool:
        """Another quantity, smoothing or choice of stages, in place."""
        return plots.update_tower_dynamics(fig, self._rows(), self.quantity.value,
                                           smooth=self.smooth.value, title=self._label())


class AllocationExplorer(_Explorer):
    """Figure 3 live: D-MoLE's allocation of every task from a stored sensitivity table.

    Budget fraction, vision floor and curriculum mode recompute the allocation of the whole
    stream (docs/method.md section 2 steps 2-3, :func:`dmole_lab.dmole.allocation.allocate_stream`)
    and
    redraw the tasks x layers heatmaps. The note under the figure gives the time the
    recomputation took, the experts' trainable parameters per task (rank ``r``), and the scores
    of a stored D-MoLE run with these settings (``find`` returns the matching runs), or the
    command that produces one.
    """

    def __init__(self, table: pd.DataFrame, tasks: list[str], r: int, batches: int | None = None,
                 proxy: str = "grad_norm", preset: str = "tiny", find=None, fraction: float = 0.5,
                 vision_floor: float = 0.25, curriculum: str = "current", seed: int = 0):
        # One filter up front, so each update only allocates.
        self.table = table[table["proxy"] == proxy]
        self.batches = batches or int(self.table["batches"].max())
        self.table = self.table[self.table["batches"] == self.batches]
        self.tasks, self.r, self.proxy, self.preset, self.seed = list(tasks), r, proxy, preset, seed
        self.find = find
        self.n_layers = (self.table.groupby("tower")["layer"].max() + 1).astype(int).to_dict()
        self.fraction = W.FloatSlider(value=fraction, min=0.05, max=1.0, step=0.05,
                                      description="budget", continuous_update=False)
        self.vision_floor = W.FloatSlider(value=vision_floor, min=0.0, max=1.0, step=0.05,
                                          description="vision floor", continuous_update=False)
        self.curriculum = W.Dropdown(options=list(CURRICULA), value=curriculum,
                                     description="curriculum")
        self.note = W.HTML()
        self.allocation, self.params, self.seconds, self.runs = None, None, 0.0, []
        super().__init__([self.fraction, self.vision_floor, self.curriculum])
        self.widget.children = (*self.widget.children, self.note)
        self.redraw()

    def settings(self) -> dict[str, object]:
        """The run settings of the current controls, as dotted config keys."""
        return {"method": "dmole", "dmole.budget": round(self.fraction.value, 4),
                "dmole.vision_floor": round(self.vision_floor.value, 4),
                "dmole.curriculum": self.curriculum.value}

    def recompute(self) -> pd.DataFrame:
        """Allocation table (stage, task, tower, layer, module) for the current controls."""
        start = time.perf_counter()
        allocs = allocate_stream(self.table, self.tasks, self.batches, self.proxy,
                                 fraction=self.fraction.value,
                                 vision_floor=self.vision_floor.value,
                                 curriculum=self.curriculum.value, seed=self.seed)
        self.allocation = allocation_table(allocs)
        self.params = expert_params(self.allocation, self.table, self.r)
        self.seconds = time.perf_counter() - start
        return self.allocation

    def prepare(self) -> None:
        """Recompute the allocation; the note says what it costs and scores."""
        self.recompute()
        self.runs = self.find(self.settings()) if self.find is not None else []
        self.show_text(self.note, self._note())

    def draw(self):
        """Heatmaps of the recomputed allocation."""
        return plots.allocation_heatmaps(self.allocation, self.tasks, self.n_layers,
                                         title=self._label())

    def update(self, fig) -> bool:
        """The recomputed allocation in the same heatmaps (same tasks and layers)."""
        return plots.update_allocation_heatmaps(fig, self.allocation, self.tasks,
                                                self.n_layers, title=self._label())

    def _label(self) -> str:
        return (f"budget {self.fraction.value:.2f}, vision floor {self.vision_floor.value:.2f},"
                f" curriculum {self.curriculum.value}")

    def _note(self) -> str:
        from dmole_lab.analysis.summaries import headline

        from .results import run_command

        p = self.params
        lines = [f"allocation of {len(self.tasks)} tasks recomputed in "
                 f"{1000 * self.seconds:.1f} ms",
                 f"trainable parameters per task (rank {self.r}): mean {p.mean():,.0f}, "
                 f"min {p.min():,} ({p.idxmin()}), max {p.max():,} ({p.idxmax()}); "
                 f"whole stream {p.sum():,}"]
        if self.runs:
            for store in self.runs:
                h = headline(store)
                lines.append(f"stored run <code>{store.root.name}</code> (seed "
                             f"{store.manifest()['seed']}): " +
                             ", ".join(f"{k} {v:.1f}" for k, v in h.items()))
        else:
            lines.append("no stored run with these settings; produce one with "
                         f"<code>{run_command(self.preset, self.settings())}</code>")
        return "<br>".join(lines)


class ComparisonExplorer(_Explorer):
    """Forgetting curves and the method table of a stored comparison (``dmole-lab compare``).

    Pick the variants, the task whose curve is drawn, and the metric conventions of docs/method.md
    section 4 (BWT divisor T-1 or T, forgetting "first" or "max"). The per-run metrics of all
    four conventions are computed once, from the stored score matrices, when the explorer is
    built; a change of a control only filters and redraws.
    """

    def __init__(self, scores: pd.DataFrame, runs: pd.DataFrame,
                 variants: list[str] | None = None, task: str | None = None):
        from dmole_lab.analysis.compare import run_metrics
        from dmole_lab.analysis.metrics import BWT_DIVISORS, FORGETTING_MODES

        self.scores, self.runs = scores, runs
        self.tasks = runs["tasks"].iloc[0].split(",")
        every = list(dict.fromkeys(runs["variant"]))
        self.per_run = {(d, f): run_metrics(scores, runs, d, f)
                        for d in BWT_DIVISORS for f in FORGETTING_MODES}
        # every choice in view (no scrolling list), with how to pick several beside it
        self.variants = W.SelectMultiple(options=every, value=tuple(variants or every),
                                         description="methods", rows=len(every))
        self.task = W.Dropdown(options=self.tasks, value=task or self.tasks[0],
                               description="task")
        self.bwt_divisor = W.ToggleButtons(options=list(BWT_DIVISORS), value="T-1",
                                           description="BWT divisor")
        self.forgetting = W.ToggleButtons(options=list(FORGETTING_MODES), value="first",
                                          description="forgetting")
        self.table_view = W.HTML()
        self.table = None
        super().__init__([self.variants, self.task, self.bwt_divisor, self.forgetting])
        hint = W.Label("Ctrl-click (Cmd-click on a Mac) to add or drop a method, "
                       "Shift-click for a range.")
        self.widget.children = (W.HBox([self.variants, W.VBox([self.task, self.bwt_divisor,
                                                               self.forgetting, hint])]),
                                self.output, self.table_view)
        self.redraw()

    def prepare(self) -> None:
        """The table under the figure, for the chosen methods and conventions."""
        from dmole_lab.analysis.compare import format_table, method_table

        chosen = list(self.variants.value)
        per_run = self.per_run[(self.bwt_divisor.value, self.forgetting.value)]
        self.table = method_table(per_run[per_run["variant"].isin(chosen)], order=chosen)
        self.show_text(self.table_view, format_table(self.table, sep=plots.PM).to_html())

    def draw(self):
        """The chosen task's curves for the chosen methods."""
        return plots.task_curves_by_method(self.scores, self.task.value, self.tasks,
                                           list(self.variants.value))

    def update(self, fig) -> bool:
        """Another task or convention for the same methods, in place."""
        return plots.update_task_curves(fig, self.scores, self.task.value, self.tasks,
                                        list(self.variants.value))


class LayerScoreExplorer(_Explorer):
    """A layer score against the oracle, task by task (notebook 05): pick the score and the
    task; the note gives the score's Spearman with the oracle for this task and over all tasks.

    ``scores``: task, tower, layer, score_name, score (benchmarks/bench_layer_scores.py);
    ``oracle``: task, tower, layer, gain (the oracle's seed mean); ``agreement``: task, tower,
    score_name, spearman (the same benchmark's, so nothing is recomputed on a change)."""

    def __init__(self, scores: pd.DataFrame, oracle: pd.DataFrame, agreement: pd.DataFrame,
                 score_name: str = "grad_norm", task: str | None = None):
        self.scores, self.oracle, self.agreement = scores, oracle, agreement
        names = list(dict.fromkeys(scores["score_name"]))
        tasks = list(dict.fromkeys(scores["task"]))
        self.score_name = W.Dropdown(options=names, value=score_name if score_name in names
                                     else names[0], description="score")
        self.task = W.Dropdown(options=tasks, value=task if task in tasks else tasks[0],
                               description="task")
        self.note = W.HTML()
        super().__init__([self.score_name, self.task])
        self.widget.children = (*self.widget.children, self.note)
        self.redraw()

    def prepare(self) -> None:
        """The chosen score's rows and its agreement, and the note that sums it up."""
        name = self.score_name.value
        self._rows = self.scores[self.scores["score_name"] == name]
        self._agreement = self.agreement[self.agreement["score_name"] == name]
        mean = self._agreement.groupby("tower", sort=False)["spearman"].mean()
        self.show_text(self.note, f"<b>{html.escape(name)}</b>, mean Spearman with the oracle "
                       "over all tasks: " + ", ".join(f"{t} {v:+.2f}" for t, v in mean.items()))

    def draw(self):
        """The chosen task's scores and oracle gains per tower."""
        return plots.layer_score_vs_oracle(self._rows, self.oracle, self.task.value,
                                           self.score_name.value, self._agreement)

    def update(self, fig) -> bool:
        """Another score or task in the same panels."""
        return plots.update_layer_score_vs_oracle(fig, self._rows, self.oracle, self.task.value,
                                                  self.score_name.value, self._agreement)
