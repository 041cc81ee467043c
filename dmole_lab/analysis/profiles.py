"""Reading sensitivity tables: per-layer profiles, tower splits, and how different tasks are.

Torch-free (pandas, numpy, scipy) so notebooks and widgets load fast. Input is the tidy table
written by :func:`dmole_lab.engine.probe_stream.probe_stream` (task, tower, layer, module, proxy,
batches, score).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from dmole_lab.config import TOWERS

#: What the per-step recorders measure (docs/method.md section 5): (axis label, definition).
QUANTITIES = {
    "grad_norm": ("gradient norm",
                  "sqrt(sum ||grad||^2) over the tower's trainable parameters, before clipping"),
    "rel_update": ("||dW|| / ||W0||", "||Delta W||_F / ||W0||_F over the tower's LoRA modules"),
}
NORMALISATIONS = {
    "minmax": "per task and tower, (s - min) / (max - min) (the paper's Figure 1)",
    "share": "per task and tower, s / sum(s)",
    "rank": "per task and tower, rank of the layer (1 = least sensitive)",
    "none": "raw scores",
}


#: Layer scores read from a factors table (dmole_lab.probes.factors.layer_factors), each a sum
#: over the layer's candidate modules (docs/method.md section 5, "Why layer 0").
FACTOR_SCORES = {
    "grad_norm": "the paper's proxy: sum of ||grad||",
    "grad_norm/weight_norm": "each module's ||grad|| over its ||W||",
    "grad_norm*resid_rms": "||grad|| times the RMS of the hidden state entering the layer, "
                           "undoing the 1/sigma its normalisation puts on the gradient",
    "grad_norm/grad_out_rms": "||grad|| over the RMS of the gradient at the module's output",
}
#: Normalisations of a layer's score across the tasks of a stream (docs/method.md section 5).
ACROSS_TASKS = {
    "layer_mean": "the task's score over the layer's mean score over tasks",
    "layer_z": "z-score of the task's score among the tasks' scores of the layer",
}


def factor_scores(factors: pd.DataFrame) -> pd.DataFrame:
    """Every :data:`FACTOR_SCORES` per task, tower and layer from a factors table with a task
    column. Returns task, tower, layer, score_name, score."""
    f = factors.assign(**{
        "grad_norm/weight_norm": factors["grad_norm"] / factors["weight_norm"],
        "grad_norm*resid_rms": factors["grad_norm"] * factors["resid_rms"],
        "grad_norm/grad_out_rms": factors["grad_norm"] / factors["grad_out_rms"]})
    per_layer = f.groupby(["task", "tower", "layer"], sort=False)[list(FACTOR_SCORES)].sum()
    return (per_layer.reset_index()
            .melt(id_vars=["task", "tower", "layer"], var_name="score_name",
                  value_name="score"))


def across_tasks(profiles: pd.DataFrame, how: str = "layer_mean") -> pd.DataFrame:
    """Profiles (task, tower, layer, score) with each layer's score set against the same
    layer's scores of the other tasks (see :data:`ACROSS_TASKS`): what is left is what makes a
    task's profile its own, once what every task shares (a layer loud for all) is taken out."""
    if how not in ACROSS_TASKS:
        raise ValueError(f"unknown normalisation {how!r}; allowed: {', '.join(ACROSS_TASKS)}")
    g = profiles.groupby(["tower", "layer"], sort=False)["score"]
    if how == "layer_mean":
        score = profiles["score"] / g.transform("mean")
    else:
        score = (profiles["score"] - g.transform("mean")) / g.transform("std").replace(0, 1.0)
    return profiles.assign(score=score)


def agreement_with_oracle(profiles: pd.DataFrame, oracle: pd.DataFrame) -> pd.DataFrame:
    """Spearman over layers between ``profiles`` (task, tower, layer, score) and the oracle's
    mean gains (:func:`oracle_profiles` with column "gain"), per task and tower."""
    both = profiles.merge(oracle, on=["task", "tower", "layer"])
    rows = [{"task": task, "tower": tower,
             "spearman": float(spearmanr(d["score"], d["gain"]).statistic), "n_layers": len(d)}
            for (task, tower), d in both.groupby(["task", "tower"], sort=False)]
    return pd.DataFrame(rows)


def score_agreement(scores: pd.DataFrame, oracle: pd.DataFrame
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spearman with the oracle (:func:`agreement_with_oracle`) of every named layer score in
    ``scores`` (task, tower, layer, score_name, score; benchmarks/bench_layer_scores.py).
    Returns the per-task table (task, tower, spearman, n_layers, score_name) and the pooled
    one (score_name, tower, mean, std, count over tasks)."""
    per_task = pd.concat([agreement_with_oracle(d.drop(columns="score_name"), oracle)
                          .assign(score_name=name)
                          for name, d in scores.groupby("score_name", sort=False)],
                         ignore_index=True)
    pooled = (per_task.groupby(["score_name", "tower"], sort=False)["spearman"]
              .agg(["mean", "std", "count"]).reset_index())
    return per_task, pooled


def _pick(table: pd.DataFrame, column: str, value):
    allowed = sorted(set(table[column]))
    if value not in allowed:
        raise ValueError(f"{column} {value!r} is not in the table; available: {allowed}")
    return table[table[column] == value]


def layer_profiles(table: pd.DataFrame, proxy: str = "grad_norm",
                   batches: int | None = None) -> pd.DataFrame:
    """Per-layer score (sum over the layer's candidate modules, docs/method.md section 2 step 1).

    ``batches`` defaults to the largest stored count. Returns task, tower, layer, score.
    """
    t = _pick(table, "proxy", proxy)
    t = _pick(t, "batches", int(t["batches"].max()) if batches is None else batches)
    return (t.groupby(["task", "tower", "layer"], sort=False)["score"].sum()
            .reset_index())


def oracle_profiles(oracle: pd.DataFrame, column: str = "score") -> pd.DataFrame:
    """The oracle's per-layer profile of every task: its gains (``oracle``: task, seed, tower,
    layer, gain, as benchmarks/bench_proxy_oracle.py stores them) averaged over its seeds.
    Returns task, tower, layer and the mean gain as ``column`` ("score": shaped like
    :func:`layer_profiles`; "gain": as :func:`proxy_vs_oracle` reads it)."""
    return (oracle.groupby(["task", "tower", "layer"], sort=False)["gain"].mean()
            .rename(column).reset_index())


def oracle_ceiling(oracle: pd.DataFrame) -> pd.DataFrame:
    """How far the oracle agrees with itself, per task and tower.

    ``spearman``: Spearman between the mean gains of the even and of the odd seeds (two
    independent oracles of ``seeds_per_half`` seeds each; with two seeds, seed 0 against seed
    1). The oracle that proxies are compared with averages all seeds, so it is at least this
    reliable. ``single``: mean Spearman over every pair of single seeds."""
    from itertools import combinations

    rows = []
    for (task, tower), d in oracle.groupby(["task", "tower"], sort=False):
        w = d.pivot(index="layer", columns="seed", values="gain")
        if w.shape[1] < 2:
            continue
        seeds = list(w.columns)
        halves = w[seeds[0::2]].mean(axis=1), w[seeds[1::2]].mean(axis=1)
        pairs = [spearmanr(w[a], w[b]).statistic for a, b in combinations(seeds, 2)]
        rows.append({"task": task, "tower": tower,
                     "spearman": float(spearmanr(*halves).statistic),
                     "single": float(pd.Series(pairs).mean()),
                     "seeds_per_half": len(seeds) // 2})
    return pd.DataFrame(rows)



def _first_seeds(oracle: pd.DataFrame):
    """(n, the oracle's rows of seeds 0 .. n - 1) for n = 2, 4, ... up to its seed count."""
    for n in range(2, int(oracle["seed"].nunique()) + 1, 2):
        yield n, oracle[oracle["seed"] < n]

def ceiling_by_seeds(oracle: pd.DataFrame) -> pd.DataFrame:
    """The oracle's agreement with itself as seeds are added: :func:`oracle_ceiling` of its
    first n = 2, 4, ... seeds, mean over tasks. Returns tower, seeds, split_half (even seeds'
    mean against odd seeds' mean) and single (mean over pairs of single seeds)."""
    rows = []
    for n, first in _first_seeds(oracle):
        c = oracle_ceiling(first)
        for tower, d in c.groupby("tower", sort=False):
            rows.append({"tower": tower, "seeds": n, "split_half": float(d["spearman"].mean()),
                         "single": float(d["single"].mean())})
    return pd.DataFrame(rows)


def proxy_by_seeds(sensitivity: pd.DataFrame, oracle: pd.DataFrame,
                   batches: int | None = None) -> pd.DataFrame:
    """Each proxy's Spearman with the oracle of the first n = 2, 4, ... seeds (mean over the
    oracle's tasks; :func:`proxy_vs_oracle`): does the proxy agree more with an oracle that
    agrees more with itself? Returns tower, seeds, proxy, spearman."""
    sensitivity = sensitivity[sensitivity["task"].isin(set(oracle["task"]))]
    parts = []
    for n, first in _first_seeds(oracle):
        _, pooled = proxy_vs_oracle(sensitivity, oracle_profiles(first, "gain"), batches)
        parts.append(pooled.rename(columns={"mean": "spearman"})
                     [["tower", "proxy", "spearman"]].assign(seeds=n))
    return pd.concat(parts, ignore_index=True)[["tower", "seeds", "proxy", "spearman"]]


def normalise(profiles: pd.DataFrame, how: str = "minmax") -> pd.DataFrame:
    """Profiles with ``score`` normalised per task and tower (see :data:`NORMALISATIONS`)."""
    if how not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {how!r}; allowed: {', '.join(NORMALISATIONS)}")
    if how == "none":
        return profiles.copy()
    g = profiles.groupby(["task", "tower"], sort=False)["score"]
    if how == "minmax":
        lo, hi = g.transform("min"), g.transform("max")
        score = (profiles["score"] - lo) / (hi - lo).where(hi > lo, 1.0)
    elif how == "share":
        score = profiles["score"] / g.transform("sum")
    else:
        score = g.rank(method="average")
    return profiles.assign(score=score)


def profile_matrix(profiles: pd.DataFrame, tower: str, tasks: list[str] | None = None):
    """tasks x layers matrix of one tower (rows in ``tasks`` order if given)."""
    piv = _pick(profiles, "tower", tower).pivot(index="task", columns="layer", values="score")
    return piv.reindex(tasks) if tasks is not None else piv


def tower_split(table: pd.DataFrame, proxy: str = "grad_norm",
                batches: int | None = None) -> pd.DataFrame:
    """Per task S_V, S_L and rho_V = S_V / (S_V + S_L) (docs/method.md section 2 step 2)."""
    prof = layer_profiles(table, proxy, batches)
    s = prof.groupby(["task", "tower"], sort=False)["score"].sum().unstack("tower")
    out = pd.DataFrame({"S_V": s["vision"], "S_L": s["llm"]})
    out["rho_V"] = out["S_V"] / (out["S_V"] + out["S_L"])
    return out.reset_index()


def vision_share(profiles: pd.DataFrame) -> pd.Series:
    """Per task, the vision tower's share of the (non-negative part of the) per-layer scores.

    For proxy profiles this is rho_V of :func:`tower_split`; for oracle gains (``gain`` renamed
    ``score``) it says how much of what single layers can buy lies in the vision tower.
    """
    pos = profiles.assign(score=profiles["score"].clip(lower=0))
    by = pos.groupby(["task", "tower"], sort=False)["score"].sum().unstack("tower")
    return (by["vision"] / by[list(TOWERS)].sum(axis=1)).rename("vision_share")


def task_correlations(profiles: pd.DataFrame, tower: str,
                      tasks: list[str] | None = None) -> pd.DataFrame:
    """Spearman rank correlation between tasks' per-layer profiles of one tower (tasks x tasks).

    Low or negative values mean the tasks want different layers: task architecture conflict
    (docs/method.md section 1).
    """
    m = profile_matrix(profiles, tower, tasks)
    if len(m) < 2:  # one task: nothing to compare it with
        return pd.DataFrame(np.ones((len(m), len(m))), index=m.index, columns=m.index)
    rho = spearmanr(m.to_numpy(dtype=float), axis=1).statistic
    rho = np.atleast_2d(rho) if len(m) > 2 else np.array([[1.0, rho], [rho, 1.0]])
    return pd.DataFrame(rho, index=m.index, columns=m.index)


def depth_centre(profiles: pd.DataFrame) -> pd.DataFrame:
    """Where in depth each task's sensitivity sits, per tower: 0 = first layer, 1 = last.

    The centre of mass of the layer profile (raw scores as weights) over layer / (n - 1).
    """
    def centre(d):
        w = d["score"].to_numpy(dtype=float)
        pos = d["layer"].to_numpy(dtype=float) / max(1, d["layer"].max())
        return float((w * pos).sum() / w.sum()) if w.sum() > 0 else float("nan")

    rows = [{"task": task, "tower": tower, "centre": centre(d)}
            for (task, tower), d in profiles.groupby(["task", "tower"], sort=False)]
    return pd.DataFrame(rows)


def mean_offdiagonal(corr: pd.DataFrame) -> float:
    """Mean of a correlation matrix's off-diagonal entries (one number for 'how alike')."""
    a = corr.to_numpy(dtype=float)
    mask = ~np.eye(len(a), dtype=bool)
    return float(a[mask].mean()) if mask.any() else float("nan")


def proxy_vs_oracle(table: pd.DataFrame, oracle: pd.DataFrame,
                    batches: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spearman between each proxy's per-layer scores and the oracle gains, per task and tower.

    ``oracle`` has columns task, tower, layer, gain. Returns task, tower, proxy, spearman,
    n_layers, and the pooled view (tower, proxy, mean, std, count over tasks).
    """
    parts = [agreement_with_oracle(layer_profiles(table, proxy, batches), oracle)
             .assign(proxy=proxy) for proxy in sorted(set(table["proxy"]))]
    out = pd.concat(parts, ignore_index=True)[["task", "tower", "proxy", "spearman", "n_layers"]]
    pooled = (out.groupby(["tower", "proxy"], sort=False)["spearman"]
              .agg(["mean", "std", "count"]).reset_index())
    return out, pooled


def tower_ratio(dynamics: pd.DataFrame, quantity: str = "grad_norm") -> pd.DataFrame:
    """Per task, the LLM / vision ratio of a recorded quantity over its stage's steps.

    ``dynamics``: the recorders' table (stage, task, step, tower, quantity, value). Returns
    task, median, min, max and last (the ratio at the stage's last recorded step).
    """
    d = _pick(dynamics, "quantity", quantity)
    wide = d.pivot_table(index=["stage", "task", "step"], columns="tower", values="value")
    ratio = (wide["llm"] / wide["vision"]).rename("ratio").reset_index()
    g = ratio.groupby(["stage", "task"], sort=True)["ratio"]
    return g.agg(["median", "min", "max", "last"]).reset_index("stage", drop=True).reset_index()
