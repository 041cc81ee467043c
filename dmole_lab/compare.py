"""Finished runs side by side: headline metrics, router accuracy and cost, one row per run.

Torch-free; reads run stores only. ``dmole-lab run --methods a,b`` and the benchmarks use it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .results import headline
from .store import RunStore

METRICS = ("AVG", "Last", "BWT", "MFT")
COST = ("params_per_task", "training_seconds")


def run_row(store: RunStore) -> dict:
    """One finished run: method, seed, run name, :data:`METRICS` (method.md section 4), the
    router accuracy after the last stage (NaN without a router), mean trainable parameters per
    task and training time (set-up + training loop + wrap-up, summed over stages)."""
    m = store.manifest()
    stages = [s for k, s in m["stages"].items() if int(k) >= 1]
    if not stages:
        raise ValueError(f"run {store.root.name} has no finished training stage")
    last = m["stages"][str(max(int(k) for k in m["stages"]))]
    return {
        "method": m["method"], "seed": m["seed"], "run": store.root.name,
        **headline(store, METRICS),
        "router_accuracy": float(last.get("router_accuracy", float("nan"))),
        "params_per_task": sum(s["trainable_params"] for s in stages) / len(stages),
        "training_seconds": sum(s.get("setup_seconds", 0.0) + s.get("train_seconds", 0.0)
                                + s.get("end_seconds", 0.0) for s in stages),
    }


def headline_table(stores: list[RunStore]) -> pd.DataFrame:
    """:func:`run_row` of every run."""
    return pd.DataFrame([run_row(s) for s in stores])


def mean_std(table: pd.DataFrame, by: str = "method",
             columns: tuple[str, ...] = (*METRICS, "router_accuracy", *COST)) -> pd.DataFrame:
    """"mean +- std" strings over the rows of each ``by`` group (e.g. seeds of a method)."""
    agg = table.groupby(by, sort=False)[list(columns)].agg(["mean", "std"])
    return pd.DataFrame({c: [f"{agg.loc[g, (c, 'mean')]:.2f} +- {agg.loc[g, (c, 'std')]:.2f}"
                             for g in agg.index] for c in columns}, index=agg.index)


def write_comparison(stores: list[RunStore], out: Path) -> dict[str, Path]:
    """Write the runs' headline table and their score matrices side by side under ``out``."""
    from . import plots

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
    fig.savefig(paths["score_matrices"], dpi=110, bbox_inches="tight")
    plots.close(fig)
    return paths
