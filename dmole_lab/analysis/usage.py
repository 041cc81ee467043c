"""Reading D-MoLE's routing tables: router confusion and accuracy, expert usage per module.

Torch-free, so notebooks can read stored runs without loading a model. The inputs are the
tables a D-MoLE run stores per stage (docs/method.md section 2, "Inference"):

- ``routing``: stage, eval_task, routed (the top task of the router, "" when no autoencoder
  accepted the sample and the base model answered), active (every task whose experts were on,
  joined by "+"), count (evaluation samples).
- ``allocation``: task, tower, layer, module (which modules hold an expert of which task).
"""

from __future__ import annotations

import pandas as pd

NONE = ""  # routed/active value of a sample answered by the base model alone
ACTIVE_SEP = "+"


def _stage(table: pd.DataFrame, stage: int | None) -> pd.DataFrame:
    if stage is None:
        stage = int(table["stage"].max())
    if stage not in set(table["stage"]):
        raise ValueError(f"no stage {stage} in the routing table; stages: "
                         f"{sorted(set(table['stage']))}")
    return table[table["stage"] == stage]


BASE = "(base)"  # confusion column of the samples no autoencoder accepted


def confusion(routing: pd.DataFrame, stage: int | None = None, normalise: bool = False,
              tasks: list[str] | None = None) -> pd.DataFrame:
    """Eval set x routed task sample counts at ``stage`` (default: the last).

    The column ``"(base)"`` counts samples no autoencoder accepted. ``normalise`` turns each
    row into shares. ``tasks`` (the stream's order) orders rows and columns: tasks first,
    then the other evaluation sets; columns end with ``"(base)"``.
    """
    r = _stage(routing, stage)
    m = (r.assign(routed=r["routed"].replace(NONE, BASE))
         .pivot_table(index="eval_task", columns="routed", values="count", aggfunc="sum",
                      fill_value=0))
    if tasks is not None:
        rows = [t for t in tasks if t in m.index] + sorted(set(m.index) - set(tasks))
        cols = [t for t in tasks if t in m.columns] + sorted(set(m.columns) - {*tasks, BASE})
        m = m.reindex(index=rows, columns=cols + ([BASE] if BASE in m.columns else []))
    m.columns.name, m.index.name = "routed", "eval_task"
    return m.div(m.sum(axis=1), axis=0) if normalise else m


def router_accuracy(routing: pd.DataFrame, learned: list[str],
                    stage: int | None = None) -> float:
    """Share of the evaluation samples of the ``learned`` tasks whose top routed task is their
    own task (the router's accuracy with no task id)."""
    r = _stage(routing, stage)
    r = r[r["eval_task"].isin(learned)]
    total = r["count"].sum()
    if total == 0:
        raise ValueError(f"no evaluation samples of the learned tasks {learned}")
    return float(r.loc[r["routed"] == r["eval_task"], "count"].sum() / total)


def routing_counts(routes: list[dict], learned: list[str]) -> tuple[pd.DataFrame, float | None]:
    """One evaluation's per-sample routes (dicts with eval_task, routed, active) as a
    ``routing`` table of counts, and the router accuracy over the ``learned`` tasks' own sets
    (None while no task is learned)."""
    table = (pd.DataFrame(routes).groupby(["eval_task", "routed", "active"]).size()
             .rename("count").reset_index())
    accuracy = router_accuracy(table.assign(stage=0), learned, 0) if learned else None
    return table, accuracy


def accuracy_by_stage(routing: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Router accuracy after each stage t >= 1 over the tasks learned so far (tasks[:t])."""
    stages = sorted(s for s in set(routing["stage"]) if s >= 1)
    return pd.DataFrame({"stage": stages,
                         "router_accuracy": [router_accuracy(routing, tasks[:s], s)
                                             for s in stages]})


def task_activity(routing: pd.DataFrame, stage: int | None = None) -> pd.DataFrame:
    """Eval set x task: share of the set's samples during which that task's experts were on."""
    r = _stage(routing, stage)
    rows = [{"eval_task": e, "task": t, "count": c}
            for e, a, c in zip(r["eval_task"], r["active"], r["count"])
            for t in (a.split(ACTIVE_SEP) if a else ())]
    sizes = r.groupby("eval_task")["count"].sum()
    if not rows:
        return pd.DataFrame(0.0, index=sizes.index, columns=pd.Index([], name="task"))
    m = pd.DataFrame(rows).pivot_table(index="eval_task", columns="task", values="count",
                                       aggfunc="sum", fill_value=0)
    return m.reindex(sizes.index, fill_value=0).div(sizes, axis=0)


def expert_usage(routing: pd.DataFrame, allocation: pd.DataFrame,
                 stage: int | None = None) -> pd.DataFrame:
    """Per module and owning task: the share of all evaluation samples at ``stage`` during
    which that expert was on. Columns: task, tower, layer, module, usage."""
    r = _stage(routing, stage)
    total = r["count"].sum()
    on: dict[str, int] = {}
    for a, c in zip(r["active"], r["count"]):
        for t in a.split(ACTIVE_SEP) if a else ():
            on[t] = on.get(t, 0) + int(c)
    alloc = allocation[["task", "tower", "layer", "module"]].drop_duplicates()
    usage = alloc["task"].map(lambda t: on.get(t, 0) / total if total else 0.0)
    return alloc.assign(usage=usage.astype(float)).reset_index(drop=True)
