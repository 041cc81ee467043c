"""D-MoLE's inter-modal curriculum and dynamic layer-wise expert allocator (docs/method.md section
2).

Pure and torch-free: (per-module sensitivity of task t, budget fraction, vision floor,
curriculum mode, history) -> which candidate modules of which tower get a new expert of task t.
Fast enough to recompute live in a notebook widget.

Input: a per-module score table with columns tower, layer, module (alias), score, e.g. one
task's rows of the probe's sensitivity table at K+1 batches for the ``grad_norm`` proxy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dmole_lab.config import ALLOCATORS, CURRICULA, ROUNDING, TOWER_CHOICES, TOWERS


@dataclass(frozen=True)
class Split:
    """How task t's expert budget is split between the towers."""

    n_experts: int  # B, the number of new experts (the budget *fraction* is dmole.budget)
    k_vision: int
    k_llm: int
    s_vision: float
    s_llm: float
    rho_vision: float  # the share the curriculum computed before the floor was applied


@dataclass(frozen=True)
class Allocation:
    """Task t's new experts: the chosen module aliases per tower, and how the split was made."""

    task: str
    split: Split
    modules: dict[str, list[str]] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """Tidy rows: task, tower, layer, module (one per new expert)."""
        rows = [{"task": self.task, "tower": t, "layer": int(m.split(".")[1]), "module": m}
                for t in TOWERS for m in self.modules.get(t, [])]
        return pd.DataFrame(rows, columns=["task", "tower", "layer", "module"])


def _check(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


def round_count(x: float, rounding: str = "half_up") -> int:
    """``x`` >= 0 rounded to a count: "half_up" as the released code's ``int(x + 0.5)``, or
    "half_even" as Python's ``round`` (docs/method.md section 2 step 2). They differ only at
    exact halves: 2.5 gives 3 and 2."""
    _check("rounding", rounding, ROUNDING)
    return int(np.floor(x + 0.5)) if rounding == "half_up" else round(x)


def expert_count(n_candidates: int, fraction: float, rounding: str = "half_up") -> int:
    """B = fraction x number of candidate modules, rounded, at least 1 (docs/method.md
    section 2 step 2)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"budget fraction must be in (0, 1], got {fraction}")
    return max(1, round_count(fraction * n_candidates, rounding))


def split_budget(s_vision: float, s_llm: float, n_vision: int, n_llm: int, fraction: float = 0.5,
                 vision_floor: float = 0.25, curriculum: str = "current",
                 history: list[tuple[float, float]] | None = None,
                 towers: str = "both", rounding: str = "half_up") -> Split:
    """Split the budget between towers (docs/method.md section 2 step 2).

    ``s_vision``/``s_llm``: the task's summed sensitivity per tower; ``n_vision``/``n_llm``:
    candidate modules per tower; ``history``: (S_V, S_L) of earlier tasks (for "continual");
    ``rounding``: how B and B rho_V become counts (:func:`round_count`).
    """
    _check("curriculum", curriculum, CURRICULA)
    _check("towers", towers, TOWER_CHOICES)
    if not 0 <= vision_floor <= 1:
        raise ValueError(f"vision floor must be in [0, 1], got {vision_floor}")
    B = expert_count(n_vision + n_llm, fraction, rounding)
    if curriculum == "none":
        rho = n_vision / (n_vision + n_llm)
    elif curriculum == "continual" and history:
        d_v = s_vision / max(np.mean([h[0] for h in history]), 1e-12)
        d_l = s_llm / max(np.mean([h[1] for h in history]), 1e-12)
        rho = d_v / (d_v + d_l)
    else:
        rho = s_vision / (s_vision + s_llm) if s_vision + s_llm > 0 else 0.5
    if towers == "llm":
        k_v = 0
    elif towers == "vision":
        k_v = B
    else:
        floor_k = int(np.floor(vision_floor * B)) if curriculum != "none" else 0
        k_v = max(floor_k, round_count(B * rho, rounding))
    k_v = min(k_v, n_vision, B)
    k_l = min(B - k_v, n_llm)
    return Split(B, k_v, k_l, float(s_vision), float(s_llm), float(rho))


def _tie_key(seed: int, alias: str) -> int:
    """A seeded, platform-independent tie-breaker for equal scores."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{alias}".encode()).digest()[:8], "big")


def _top_k(scores: pd.DataFrame, k: int, seed: int) -> list[str]:
    keyed = scores.assign(_tie=[_tie_key(seed, a) for a in scores["module"]])
    return keyed.sort_values(["score", "_tie"], ascending=[False, True])["module"].head(k).tolist()


def _uniform(scores: pd.DataFrame, k: int) -> list[str]:
    """k modules spread evenly over the layers: layer counts differ by at most one, the extra
    ones on evenly spaced layers; within a layer, modules in anatomy order."""
    layers = sorted(set(scores["layer"]))
    per = {layer: k // len(layers) for layer in layers}
    extra = k % len(layers)
    if extra:
        for i in np.linspace(0, len(layers) - 1, extra).round().astype(int):
            per[layers[i]] += 1
    out = []
    for layer in layers:
        mods = scores[scores["layer"] == layer]["module"].tolist()
        out += mods[: per[layer]]
    return out


def allocate(scores: pd.DataFrame, task: str, fraction: float = 0.5, vision_floor: float = 0.25,
             curriculum: str = "current", history: list[tuple[float, float]] | None = None,
             towers: str = "both", allocator: str = "dynamic", seed: int = 0,
             rounding: str = "half_up") -> Allocation:
    """Task ``task``'s new experts from its per-module ``scores`` (docs/method.md section 2 steps
    2-3).

    ``scores``: tower, layer, module, score for every candidate module of both towers.
    Ties in score are broken by a hash of (seed, alias), so the result is deterministic.
    """
    _check("allocator", allocator, ALLOCATORS)
    missing = {"tower", "layer", "module", "score"} - set(scores.columns)
    if missing:
        raise ValueError(f"score table lacks columns {sorted(missing)}")
    per = {t: scores[scores["tower"] == t] for t in TOWERS}
    split = split_budget(float(per["vision"]["score"].sum()), float(per["llm"]["score"].sum()),
                         len(per["vision"]), len(per["llm"]), fraction, vision_floor,
                         curriculum, history, towers, rounding)
    ks = {"vision": split.k_vision, "llm": split.k_llm}
    pick = (lambda d, k: _top_k(d, k, seed)) if allocator == "dynamic" else _uniform
    return Allocation(task, split, {t: pick(per[t], ks[t]) for t in TOWERS})


def module_scores(table: pd.DataFrame, task: str, proxy: str = "grad_norm",
                  batches: int | None = None) -> pd.DataFrame:
    """One task's per-module scores (tower, layer, module, score) from a sensitivity table."""
    t = table[(table["task"] == task) & (table["proxy"] == proxy)] if "task" in table else \
        table[table["proxy"] == proxy]
    if t.empty:
        raise ValueError(f"no {proxy!r} scores for task {task!r} in the table")
    b = int(t["batches"].max()) if batches is None else batches
    return t[t["batches"] == b][["tower", "layer", "module", "score"]].reset_index(drop=True)


def allocate_stream(table: pd.DataFrame, tasks: list[str], batches: int | None = None,
                    proxy: str = "grad_norm", **kwargs) -> list[Allocation]:
    """Allocations of every task in order, carrying the curriculum history along."""
    history: list[tuple[float, float]] = []
    out = []
    for task in tasks:
        a = allocate(module_scores(table, task, proxy, batches), task, history=list(history),
                     **kwargs)
        history.append((a.split.s_vision, a.split.s_llm))
        out.append(a)
    return out


def expert_params(allocation: pd.DataFrame, shapes: pd.DataFrame, r: int) -> pd.Series:
    """Trainable parameters of each task's new experts: sum over its modules of
    r * (in_features + out_features) (a LoRA pair A: r x in, B: out x r; docs/method.md section 2).

    ``allocation``: task, module rows; ``shapes``: module, in_features, out_features (e.g. a
    sensitivity table). Returns a Series indexed by task, in order of first appearance.
    """
    missing = {"module", "in_features", "out_features"} - set(shapes.columns)
    if missing:
        raise ValueError(f"shape table lacks columns {sorted(missing)} (probe tables written "
                         "before module shapes were recorded: re-run `dmole-lab probe`)")
    size = shapes.drop_duplicates("module").set_index("module")
    per = allocation["module"].map(r * (size["in_features"] + size["out_features"]))
    if per.isna().any():
        raise ValueError(f"modules without a shape: {sorted(allocation['module'][per.isna()])}")
    return per.groupby(allocation["task"], sort=False).sum().astype(int)


def mode_splits(scores: pd.DataFrame, fraction: float = 0.5, vision_floor: float = 0.25,
                history: list[tuple[float, float]] | None = None,
                towers: str = "both", rounding: str = "half_up") -> pd.DataFrame:
    """One task's budget split under every curriculum mode (docs/method.md section 2 step 2), from
    its per-module ``scores``: curriculum, n_experts, k_vision, k_llm, s_vision, s_llm,
    rho_vision. Lets a run record what each mode would have chosen next to what it used."""
    per = {t: scores[scores["tower"] == t] for t in TOWERS}
    rows = []
    for mode in CURRICULA:
        s = split_budget(float(per["vision"]["score"].sum()), float(per["llm"]["score"].sum()),
                         len(per["vision"]), len(per["llm"]), fraction, vision_floor, mode,
                         history, towers, rounding)
        rows.append({"curriculum": mode, "n_experts": s.n_experts, "k_vision": s.k_vision,
                     "k_llm": s.k_llm, "s_vision": s.s_vision, "s_llm": s.s_llm,
                     "rho_vision": s.rho_vision})
    return pd.DataFrame(rows)


def curriculum_splits(table: pd.DataFrame, tasks: list[str], modes=tuple(CURRICULA),
                      batches: int | None = None, proxy: str = "grad_norm",
                      **kwargs) -> pd.DataFrame:
    """Per task and curriculum mode, the budget split of the stream (docs/method.md section 2 step
    2): task, curriculum, n_experts, k_vision, k_llm, rho_vision, vision_share (= k_vision / B).
    ``kwargs`` go to :func:`allocate` (fraction, vision_floor, ...)."""
    rows = []
    for mode in modes:
        for a in allocate_stream(table, tasks, batches, proxy, curriculum=mode, **kwargs):
            s = a.split
            rows.append({"task": a.task, "curriculum": mode, "n_experts": s.n_experts,
                         "k_vision": s.k_vision, "k_llm": s.k_llm, "rho_vision": s.rho_vision,
                         "vision_share": s.k_vision / s.n_experts})
    return pd.DataFrame(rows)


def allocation_table(allocations: list[Allocation]) -> pd.DataFrame:
    """Tidy table of many allocations: stage, task, tower, layer, module."""
    df = pd.concat([a.table() for a in allocations], ignore_index=True)
    df["stage"] = df["task"].map({a.task: i for i, a in enumerate(allocations, 1)})
    return df
