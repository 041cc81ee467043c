"""Notebook explorers: controls that look things up in stored tables and redraw with ``plots``.

A widget holds no logic (style.md): every number comes from :mod:`dmole_lab.profiles` on a table
already computed and stored, every figure from :mod:`dmole_lab.plots`, so a change of a control
redraws in milliseconds. Each explorer exposes its controls as attributes (set ``.value`` to
drive it from code or a test), the last figure as ``.figure`` and the whole panel as ``.widget``
(displayed when the explorer is the last expression of a cell).
"""

from __future__ import annotations

import ipywidgets as W
import pandas as pd
from IPython.display import display

from . import plots
from .profiles import NORMALISATIONS, QUANTITIES, layer_profiles, tower_split

ALL_TASKS = "all tasks"


class _Explorer:
    """Shared plumbing: an output area redrawn whenever one of ``controls`` changes."""

    def __init__(self, controls: list[W.Widget]):
        self.output = W.Output()
        self.figure = None
        self.widget = W.VBox([W.HBox(controls), self.output])
        for c in controls:
            c.observe(lambda _change: self.redraw(), names="value")

    def draw(self):  # pragma: no cover - every explorer overrides it
        """Build and return the figure for the current control values."""
        raise NotImplementedError

    def redraw(self) -> None:
        """Redraw the figure for the current control values."""
        fig = self.draw()
        with self.output:
            self.output.clear_output(wait=True)
            display(fig)
        plots.close(fig)
        self.figure = fig

    def _ipython_display_(self):
        display(self.widget)


class SensitivityExplorer(_Explorer):
    """Figure 1 from a stored sensitivity table: pick proxy, probe batches, normalisation, task.

    ``task`` = "all tasks" draws the tasks x layers heatmaps; one task draws its per-layer
    profile per tower with its vision share rho_V (method.md section 2 step 2).
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

    def __init__(self, dynamics: pd.DataFrame, quantity: str = "grad_norm", smooth: int = 5):
        self.dynamics = dynamics
        tasks = list(dict.fromkeys(dynamics["task"])) if "task" in dynamics else []
        have = [q for q in QUANTITIES if q in set(dynamics["quantity"])]
        self.quantity = W.Dropdown(options=[(QUANTITIES[q][0], q) for q in have],
                                   value=quantity if quantity in have else have[0],
                                   description="quantity")
        self.smooth = W.IntSlider(value=smooth, min=1, max=50, description="smooth")
        self.task = W.Dropdown(options=[ALL_TASKS, *tasks], value=ALL_TASKS, description="task")
        super().__init__([self.task, self.quantity, self.smooth])
        self.redraw()

    def draw(self):
        """Per-tower curves and their ratio for the chosen stages."""
        d = self.dynamics
        if self.task.value != ALL_TASKS:
            d = d[d["task"] == self.task.value]
        return plots.tower_dynamics(d, self.quantity.value, smooth=self.smooth.value,
                                    title=QUANTITIES[self.quantity.value][1])
