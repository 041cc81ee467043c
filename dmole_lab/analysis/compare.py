"""Finished runs side by side: the reproduction table of methods x seeds (docs/method.md section 4).

Torch-free; reads run stores only. A *variant* is a method with optional config overrides
(``"dmole+dmole.routing=sample"``, or ``"dmole-v1"`` for an ablation of docs/method.md section 2);
a *job* is a variant at one seed, i.e. one ordinary continual run. ``dmole-lab compare`` runs
the jobs (resumable, shardable) and writes, from whatever runs are finished:

- ``scores.parquet``: every run's score matrix, tidy (variant, method, seed, stage, eval_task,
  value), so metrics can be recomputed under any convention without training;
- ``runs.parquet``: per run, trainable parameters per task, training time and general-set scores;
- ``table.parquet`` / ``table.md``: mean and std over seeds per variant of AVG, Last, BWT,
  Forgetting, FWT, MFT, general-set retention, trainable parameters and training time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dmole_lab.config import ABLATIONS
from dmole_lab.store import RunStore, write_table

from .metrics import learned_in_own_stage, matrix_from_scores, summary
from .summaries import headline

METRICS = ("AVG", "Last", "BWT", "MFT")
COST = ("params_per_task", "training_seconds")

#: The methods of the reproduction table (docs/method.md sections 2-3): lower bounds, regularisers,
#: architecture-based peers, the upper-bound reference, then D-MoLE.
PEERS = ("seq-ft", "seq-lora", "lwf", "ewc", "o-lora", "moelora", "mole", "mola", "branchlora",
         "multitask", "dmole")
#: D-MoLE's ablations as variants named ``dmole-v1`` .. ``dmole-v4``.
ABLATION_VARIANTS = tuple(f"dmole-{k}" for k in ABLATIONS)
#: Columns of the comparison table, in order (docs/method.md section 4; retention = general-set
#: score after the last stage as a percentage of its zero-shot score).
TABLE_METRICS = ("AVG", "Last", "BWT", "Forgetting", "FWT", "MFT", "General",
                 "Retention", "params_per_task", "training_seconds")


@dataclass(frozen=True)
class Variant:
    """A method and the config overrides that make it this variant."""

    name: str
    method: str
    overrides: dict[str, str] = field(default_factory=dict)


def parse_variant(spec: str) -> Variant:
    """``"dmole"``, ``"dmole+dmole.routing=sample"`` or an ablation ``"dmole-v3"``."""
    spec = spec.strip()
    if spec.startswith("dmole-") and spec.removeprefix("dmole-") in ABLATIONS:
        ab = ABLATIONS[spec.removeprefix("dmole-")]
        return Variant(spec, "dmole", {f"dmole.{k}": v for k, v in ab.items()})
    method, *extra = spec.split("+")
    overrides = {}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"variant {spec!r}: {item!r} is not key=value")
        overrides[key] = value
    return Variant(spec, method, overrides)


def parse_variants(methods: str | None, ablations: bool = True) -> list[Variant]:
    """The variants of a comparison: the comma-separated ``methods`` (see
    :func:`parse_variant`), or by default every peer plus, with ``ablations``, D-MoLE's
    ablations dmole-v1..v4."""
    specs = methods.split(",") if methods else [*PEERS, *(ABLATION_VARIANTS if ablations else ())]
    return [parse_variant(s) for s in specs if s.strip()]


def parse_seeds(spec: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; clear error otherwise."""
    try:
        return [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {spec!r} must be comma-separated integers") from None


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` (1 <= i <= n) -> (i, n); clear error otherwise."""
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"shard {spec!r} must look like i/n, e.g. 1/2") from None
    if not 1 <= i <= n:
        raise ValueError(f"shard {spec!r}: i must be in 1..n (here 1..{n})")
    return i, n


def jobs(variants: list[Variant], seeds: list[int],
         shard: tuple[int, int] = (1, 1)) -> list[tuple[Variant, int]]:
    """Every variant x seed, seeds outermost (a partial run covers every method once first),
    keeping every n-th job from the i-th for ``shard`` = (i, n)."""
    every = [(v, s) for s in seeds for v in variants]
    i, n = shard
    return every[i - 1::n]


def run_row(store: RunStore) -> dict:
    """One finished run: method, seed, run name, :data:`METRICS` (docs/method.md section 4), the
    router accuracy after the last stage (NaN without a router), mean trainable parameters per
    task, training time (set-up + training loop + wrap-up, summed over stages) and, for a
    routed method, the share of training batches an earlier task's experts joined (mean over
    the stages that had an earlier task; NaN otherwise)."""
    m = store.manifest()
    stages = [s for k, s in sorted(m["stages"].items(), key=lambda kv: int(kv[0]))
              if int(k) >= 1]
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
        "train_join_share": _mean([s["train_batches_with_earlier_expert"] for s in stages[1:]
                                   if "train_batches_with_earlier_expert" in s]),
    }


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def headline_table(stores: list[RunStore]) -> pd.DataFrame:
    """:func:`run_row` of every run."""
    return pd.DataFrame([run_row(s) for s in stores])


def mean_std(table: pd.DataFrame, by: str = "method",
             columns: tuple[str, ...] = (*METRICS, "router_accuracy", *COST)) -> pd.DataFrame:
    """"mean +- std" strings over the rows of each ``by`` group (e.g. seeds of a method)."""
    agg = table.groupby(by, sort=False)[list(columns)].agg(["mean", "std"])
    return pd.DataFrame({c: [f"{agg.loc[g, (c, 'mean')]:.2f} +- {agg.loc[g, (c, 'std')]:.2f}"
                             for g in agg.index] for c in columns}, index=agg.index)


# ------------------------------------------------------------------ the comparison tables


def collect(done: list[tuple[Variant, int, RunStore]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores, runs) of finished runs: every score matrix in one tidy table, and one row of
    cost and general-set scores per run."""
    scores, runs = [], []
    for variant, seed, store in done:
        sm = store.summary("score_matrix")
        scores.append(sm.assign(variant=variant.name, method=variant.method, seed=seed))
        row = run_row(store)
        general = sm[sm["eval_task"] == "general"].sort_values("stage")["value"]
        runs.append({"variant": variant.name, "method": variant.method, "seed": seed,
                     "run": store.root.name, "tasks": ",".join(store.manifest()["tasks"]),
                     "router_accuracy": row["router_accuracy"],
                     "params_per_task": row["params_per_task"],
                     "training_seconds": row["training_seconds"],
                     "train_join_share": row["train_join_share"],
                     "general": float(general.iloc[-1]) if len(general) else np.nan,
                     "general_zero_shot": float(general.iloc[0]) if len(general) else np.nan})
    cols = ["variant", "method", "seed", "stage", "eval_task", "value"]
    scores = pd.concat(scores)[cols] if scores else pd.DataFrame(columns=cols)
    return scores.reset_index(drop=True), pd.DataFrame(runs)


def run_matrices(scores: pd.DataFrame, runs: pd.DataFrame):
    """Each run's row of ``runs`` with its (T+1, T) score matrix, rebuilt from ``scores``."""
    for r in runs.itertuples(index=False):
        sm = scores[(scores["variant"] == r.variant) & (scores["seed"] == r.seed)]
        yield r, matrix_from_scores(sm, r.tasks.split(","))


def run_metrics(scores: pd.DataFrame, runs: pd.DataFrame, bwt_divisor: str = "T-1",
                forgetting_mode: str = "first") -> pd.DataFrame:
    """One row per run (variant, seed): the metrics of docs/method.md section 4 under the chosen
    conventions, recomputed from the stored score matrices, plus general-set retention and
    cost."""
    rows = []
    for r, A in run_matrices(scores, runs):
        retention = (100.0 * r.general / r.general_zero_shot
                     if r.general_zero_shot and np.isfinite(r.general_zero_shot) else np.nan)
        rows.append({"variant": r.variant, "method": r.method, "seed": r.seed,
                     **summary(A, bwt_divisor, forgetting_mode), "General": r.general,
                     "Retention": retention, "params_per_task": r.params_per_task,
                     "training_seconds": r.training_seconds})
    return pd.DataFrame(rows)


def learned_counts(scores: pd.DataFrame, runs: pd.DataFrame,
                   margin: float = 10.0) -> pd.DataFrame:
    """Per run (variant, seed): how many tasks it learned in its own stage
    (:func:`~dmole_lab.analysis.metrics.learned_in_own_stage`)."""
    return pd.DataFrame([{"variant": r.variant, "seed": r.seed,
                          "learned": learned_in_own_stage(A, margin)}
                         for r, A in run_matrices(scores, runs)])


#: What :func:`sweep_changes` sets side by side, per variant (means over seeds, except the
#: router's accuracy: its lowest run, since one wrong router is what would matter).
CHANGE_COLUMNS = ("AVG", "Last", "BWT", "MFT", "learned", "router_accuracy", "training_seconds")


def sweep_changes(before: tuple[pd.DataFrame, pd.DataFrame],
                  after: tuple[pd.DataFrame, pd.DataFrame],
                  margin: float = 10.0) -> pd.DataFrame:
    """Two comparisons of the same variants, e.g. before and after a change of the preset:
    for every variant in both, each of :data:`CHANGE_COLUMNS` before and after (columns
    ``(name, "before" | "after")``), the seeds each has, and the ratio of the mean training
    time after over before. ``before`` and ``after`` are ``(scores, runs)`` as
    :func:`collect` writes them (:func:`dmole_lab.viz.results.open_comparison` reads them).
    """
    sides = {}
    for side, (scores, runs) in (("before", before), ("after", after)):
        per_run = run_metrics(scores, runs).merge(learned_counts(scores, runs, margin),
                                                  on=["variant", "seed"])
        per_run = per_run.merge(runs[["variant", "seed", "router_accuracy"]],
                                on=["variant", "seed"])
        g = per_run.groupby("variant", sort=False)
        agg = g[[c for c in CHANGE_COLUMNS if c != "router_accuracy"]].mean()
        agg["router_accuracy"] = g["router_accuracy"].min()
        agg["seeds"] = g.size()
        sides[side] = agg
    common = [v for v in sides["before"].index if v in sides["after"].index]
    if not common:
        raise ValueError("the two comparisons share no variant: before has "
                         f"{list(sides['before'].index)}, after {list(sides['after'].index)}")
    out = pd.concat({side: t.loc[common] for side, t in sides.items()}, axis=1)
    out = out.swaplevel(axis=1)[[(c, s) for c in (*CHANGE_COLUMNS, "seeds")
                                 for s in ("before", "after")]]
    out[("time_ratio", "")] = out[("training_seconds", "after")] / out[("training_seconds",
                                                                        "before")]
    return out


def method_table(per_run: pd.DataFrame, metrics: tuple[str, ...] = TABLE_METRICS,
                 order: list[str] | None = None) -> pd.DataFrame:
    """Mean, std and number of seeds per variant: columns (metric, mean|std) and ``seeds``."""
    g = per_run.groupby("variant", sort=False)
    table = g[list(metrics)].agg(["mean", "std"])
    table[("seeds", "")] = g.size()
    if order is not None:
        table = table.reindex([v for v in order if v in table.index])
    return table


def format_table(table: pd.DataFrame, digits: int = 1, sep: str = " +- ") -> pd.DataFrame:
    """"mean +- std" strings of :func:`method_table` (parameters and seconds as integers);
    ``sep`` joins mean and std (``dmole_lab.viz.plots.PM``, "±" between non-breaking spaces,
    keeps a notebook's table cell on one line)."""
    out = {}
    for metric in dict.fromkeys(c for c, _ in table.columns if c != "seeds"):
        d = 0 if metric in COST else digits
        out[metric] = [f"{m:.{d}f}{sep}{s:.{d}f}" if np.isfinite(s) else f"{m:.{d}f}"
                       for m, s in zip(table[(metric, "mean")], table[(metric, "std")])]
    out["seeds"] = table["seeds"].astype(int).tolist()
    return pd.DataFrame(out, index=table.index)


def markdown(table: pd.DataFrame) -> str:
    """A pipe table of ``table`` (index as the first column)."""
    head = [table.index.name or "", *map(str, table.columns)]
    rows = [[str(i), *map(str, r)] for i, r in zip(table.index, table.itertuples(index=False))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def write_tables(done: list[tuple[Variant, int, RunStore]], out: Path,
                 order: list[str] | None = None) -> tuple[dict[str, Path], pd.DataFrame]:
    """Write scores, runs and the method table of the finished runs under ``out``; returns
    the paths and the table (:func:`method_table`, rows in ``order``)."""
    out = Path(out)
    scores, runs = collect(done)
    paths = {"scores": out / "scores.parquet", "runs": out / "runs.parquet",
             "table": out / "table.parquet", "table_md": out / "table.md"}
    write_table(paths["scores"], scores)
    write_table(paths["runs"], runs)
    table = method_table(run_metrics(scores, runs), order=order)
    flat = table.copy()
    flat.columns = [f"{a}_{b}" if b else a for a, b in flat.columns]
    write_table(paths["table"], flat.reset_index())
    paths["table_md"].write_text(
        "Mean +- std over seeds (BWT divisor T-1, forgetting 'first'; "
        "docs/method.md section 4).\n\n"
        + markdown(format_table(table)) + "\n")
    return paths, table
