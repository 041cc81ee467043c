"""The run-level tables of a finished run, computed from its stage tables (torch-free).

A run folder keeps per-stage tables under ``stages/``; this module turns them into the tables
every reader uses (``tables/*.parquet``): the score matrix, the metrics under every convention
of docs/method.md section 4, and for runs with experts and routers (D-MoLE) the allocation,
sensitivity, curriculum, routing, router accuracy and expert usage. Figures are drawn from these
tables by :mod:`dmole_lab.viz.report`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dmole_lab.store import RunStore

from . import usage
from .metrics import matrix_from_scores, summary
from .scoring import METRICS

#: Headline metrics of a run (docs/method.md section 4).
HEADLINE = ("AVG", "Last", "BWT")


def score_matrix(store: RunStore) -> pd.DataFrame:
    """Tidy score matrix of a run: stage, eval_task, metric, value (main metric per task)."""
    scores = store.table("scores")
    return main_scores(scores)[["stage", "eval_task", "metric", "value"]].reset_index(drop=True)


def main_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """The rows of a scores table that fill the score matrix (one per stage and eval task).

    Tables written since stream files exist mark them (``main``); in older ones, and in
    stages written before, the main row is the one named after one of our metrics."""
    named = scores["metric"].isin(METRICS)
    if "main" not in scores:
        return scores[named]
    marked = scores["main"].astype("boolean")
    return scores[marked.fillna(pd.Series(named, index=scores.index)).astype(bool)]


def metrics_table(sm: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """Every metric of docs/method.md section 4 under both BWT divisors and both forgetting
    modes, plus each general set's last and zero-shot score (tidy: metric, value, conventions)."""
    tasks = manifest["tasks"]
    A = matrix_from_scores(sm[sm["eval_task"].isin(tasks)], tasks)
    rows = []
    for divisor in ("T-1", "T"):
        for mode in ("first", "max"):
            for k, v in summary(A, divisor, mode).items():
                rows.append({"method": manifest["method"], "seed": manifest["seed"],
                             "metric": k, "value": v, "bwt_divisor": divisor,
                             "forgetting_mode": mode})
    for name in sorted(set(sm["eval_task"]) - set(tasks)):
        g = sm[sm["eval_task"] == name].sort_values("stage")["value"]
        label = "General" if name == "general" else f"General ({name})"
        for metric, value in ((label, g.iloc[-1]), (f"{label} zero-shot", g.iloc[0])):
            rows.append({"method": manifest["method"], "seed": manifest["seed"],
                         "metric": metric, "value": float(value), "bwt_divisor": "-",
                         "forgetting_mode": "-"})
    return pd.DataFrame(rows)


def has_table(store: RunStore, name: str) -> bool:
    """True if any stage of the run wrote a ``name`` table."""
    return any((store.stage_dir(int(t)) / f"{name}.parquet").exists()
               for t in store.manifest()["stages"])


def write_tables(store: RunStore) -> dict[str, Path]:
    """Write every run-level table of ``store`` under ``tables/``; returns name -> path."""
    manifest = store.manifest()
    tasks = manifest["tasks"]
    sm = score_matrix(store)
    paths = {
        "score_matrix": store.write_summary("score_matrix", sm),
        "metrics": store.write_summary("metrics", metrics_table(sm, manifest)),
    }
    if has_table(store, "dynamics"):  # recorders were on
        paths["dynamics"] = store.write_summary("dynamics", store.table("dynamics"))
    if has_table(store, "allocation"):
        paths.update(_expert_tables(store, tasks))
    return paths


def _expert_tables(store: RunStore, tasks: list[str]) -> dict[str, Path]:
    """Allocation, sensitivity, curriculum, routing, router accuracy per stage and expert usage
    of a run with experts and routers (D-MoLE)."""
    paths = {}
    alloc = store.table("allocation")
    paths["allocation"] = store.write_summary("allocation", alloc)
    paths["sensitivity"] = store.write_summary("sensitivity", store.table("sensitivity"))
    for name in ("curriculum", "routing", "train_routing"):
        if has_table(store, name):
            paths[name] = store.write_summary(name, store.table(name))
    if "routing" in paths:
        routing = store.summary("routing")
        paths["router_accuracy"] = store.write_summary(
            "router_accuracy", usage.accuracy_by_stage(routing, tasks))
        paths["expert_usage"] = store.write_summary(
            "expert_usage", usage.expert_usage(routing, alloc))
    return paths


def headline(store: RunStore, metrics: tuple[str, ...] = HEADLINE) -> dict[str, float]:
    """AVG, Last and BWT (or other ``metrics``) of a finished run (BWT divisor T-1,
    forgetting "first"; docs/method.md section 4)."""
    m = store.summary("metrics")
    m = m[(m["bwt_divisor"] == "T-1") & (m["forgetting_mode"] == "first")]
    return {k: float(m.loc[m["metric"] == k, "value"].iloc[0]) for k in metrics}


__all__ = ["HEADLINE", "has_table", "headline", "metrics_table", "score_matrix", "write_tables"]
