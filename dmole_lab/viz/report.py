"""Per-run reports: the figures of a finished run, drawn from its stored tables (torch-free).

The training loop writes a run's stage tables and :mod:`dmole_lab.analysis.summaries` turns them
into run-level tables; this module only reads those and draws. ``dmole-lab run`` and
``dmole-lab report`` call :func:`write_report`; a report can be redrawn at any time.
"""

from __future__ import annotations

from pathlib import Path

from dmole_lab.analysis import usage
from dmole_lab.analysis.compare import headline_table
from dmole_lab.analysis.profiles import layer_profiles
from dmole_lab.analysis.summaries import write_tables
from dmole_lab.store import RunStore

from . import plots


def _save(fig, path: Path, dpi: int = 120) -> Path:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plots.close(fig)
    return path


def write_figures(store: RunStore) -> dict[str, Path]:
    """Draw every figure of a run from its ``tables/`` (score matrix, forgetting curves, tower
    dynamics; allocation and router confusion for D-MoLE); returns name -> path."""
    m = store.manifest()
    tasks = m["tasks"]
    title = f"{m['method']} (seed {m['seed']})"
    tables = store.root / "tables"
    sm = store.summary("score_matrix")
    figures = [
        ("heatmap", "score_matrix", lambda: plots.score_matrix_heatmap(sm, tasks, title=title)),
        ("curves", "forgetting_curves", lambda: plots.forgetting_curves(sm, tasks, title=title)),
    ]
    if (tables / "dynamics.parquet").exists():
        dynamics = store.summary("dynamics")
        # gradient norms when recorded (not under DeepSpeed ZeRO: no process holds them all)
        quantity = "grad_norm" if (dynamics["quantity"] == "grad_norm").any() else "rel_update"
        figures.append(("tower_dynamics", "tower_dynamics",
                        lambda: plots.tower_dynamics(dynamics, quantity, title=title)))
    if (tables / "allocation.parquet").exists():
        alloc, sens = store.summary("allocation"), store.summary("sensitivity")
        n_layers = (sens.groupby("tower")["layer"].max() + 1).astype(int).to_dict()
        figures.append(("allocation_heatmap", "allocation", lambda: plots.allocation_heatmaps(
            alloc, tasks, n_layers, title=f"{title}: experts per task and layer")))
    if (tables / "routing.parquet").exists():
        routing = store.summary("routing")
        conf = usage.confusion(routing, normalise=True, tasks=tasks)
        last = int(routing["stage"].max())
        figures.append(("router_confusion", "router_confusion", lambda: plots.routing_confusion(
            conf, title=f"{title}: routing after stage {last}")))
    return {key: _save(draw(), store.figure_path(name)) for key, name, draw in figures}


def write_report(store: RunStore) -> dict[str, Path]:
    """The run-level tables (:func:`dmole_lab.analysis.summaries.write_tables`) and figures of a
    run; returns name -> path of everything written."""
    return {**write_tables(store), **write_figures(store)}


def write_probe_figures(store: RunStore) -> dict[str, Path]:
    """Figure-1 heatmaps of a probe run (one file per proxy) at the method's default number of
    batches (docs/method.md section 5)."""
    m = store.manifest()
    table = store.summary("sensitivity")
    paths = {}
    for proxy in sorted(set(table["proxy"])):
        prof = layer_profiles(table, proxy=proxy, batches=m["probe_batches"])
        fig = plots.sensitivity_heatmaps(prof, tasks=m["tasks"],
                                         title=f"{proxy}, {m['probe_batches']} batches")
        paths[proxy] = _save(fig, store.figure_path(f"sensitivity_{proxy}"))
    return paths


def write_comparison(stores: list[RunStore], out: Path) -> dict[str, Path]:
    """Write the runs' headline table and their score matrices side by side under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = headline_table(stores)
    paths = {"comparison": out / "comparison.parquet", "score_matrices": out / "score_matrices.png"}
    table.to_parquet(paths["comparison"], index=False)
    fig, axes = plots.plt.subplots(1, len(stores), figsize=(8 * len(stores), 5.5), squeeze=False)
    for ax, store in zip(axes[0], stores):
        m = store.manifest()
        plots.score_matrix_heatmap(store.summary("score_matrix"), m["tasks"], ax=ax,
                                   title=f"{m['method']} (seed {m['seed']})", general=False)
    fig.tight_layout()
    _save(fig, paths["score_matrices"], dpi=110)
    return paths


__all__ = ["write_comparison", "write_figures", "write_probe_figures", "write_report"]
