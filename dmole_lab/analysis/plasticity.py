"""Why D-MoLE learns each task less well in its own stage: one switch per candidate cause.

On the embedded stream D-MoLE's MFT (score right after a task's own stage) is far below
sequential LoRA's, and its LLM-only ablation v1 beats it. Each candidate cause is a comparison
variant that changes one setting (docs/method.md section 6), run over the same seeds as the
default; :func:`paired_effects` reads each switch against the default seed by seed. Torch-free.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The default and the reference the switches are read against.
BASE, REFERENCE = "dmole", "seq-lora"

#: label -> (comparison variant, what it changes). "(x)" marks the candidate cause it tests.
SWITCHES = {
    "D-MoLE": (BASE, "the paper's settings: 24 rank-8 experts, floor 0.25, voters' support"),
    "(a) capacity": ("dmole+dmole.r=18+dmole.alpha=36",
                     "rank 18 (alpha / r kept at 2): sequential LoRA's trainable parameters"),
    "(b) support over the batch": ("dmole+dmole.train_routing=batch",
                                   "an earlier task joins when >= 0.3 of the batch votes for it"),
    "(b) own experts only": ("dmole+dmole.train_routing=own",
                             "no earlier task's experts join while a task trains"),
    "(c) learning rate x2": ("dmole+train.lr=0.01", "lr 1e-2 instead of 5e-3"),
    "(d) vision floor 0": ("dmole+dmole.vision_floor=0", "no least vision share"),
    "(d) vision floor 0.1": ("dmole+dmole.vision_floor=0.1",
                             "at least floor(0.1 B) vision experts"),
    "v1 (LLM only)": ("dmole-v1", "ablation v1: experts only in the LLM"),
    "v1, own experts only": ("dmole+dmole.towers=llm+dmole.train_routing=own",
                             "v1 without the routing mismatch"),
    "sequential LoRA": (REFERENCE, "rank-4 LoRA on every linear module, no router"),
}


def switch_methods() -> str:
    """The ``--methods`` of the sweep: every switch's variant, comma-separated."""
    return ",".join(v for v, _ in SWITCHES.values())


def labelled(table: pd.DataFrame, column: str = "variant") -> pd.DataFrame:
    """``table`` with its variants renamed to their switch labels, in :data:`SWITCHES` order
    (variants that are not switches are dropped)."""
    names = {v: label for label, (v, _) in SWITCHES.items()}
    out = table[table[column].isin(names)].assign(**{column: lambda d: d[column].map(names)})
    order = {label: i for i, label in enumerate(SWITCHES)}
    return out.sort_values(column, key=lambda s: s.map(order), kind="stable")


def paired_effects(per_run: pd.DataFrame, metrics: tuple[str, ...] = ("MFT", "AVG", "Last"),
                   base: str = "D-MoLE") -> pd.DataFrame:
    """Each switch minus ``base`` at the same seed, per metric: mean, standard error and
    the number of seeds both have, and how many of those seeds the switch is ahead.

    ``per_run``: one row per run with variant (switch labels, :func:`labelled`), seed and the
    metrics (``compare.run_metrics``). Pairing by seed takes out what a seed does to both
    (its stream draw and initialisation), which is most of the spread between seeds."""
    b = per_run[per_run["variant"] == base].set_index("seed")
    rows = []
    for variant, d in per_run[per_run["variant"] != base].groupby("variant", sort=False):
        d = d.set_index("seed")
        seeds = d.index.intersection(b.index)
        for m in metrics:
            diff = (d.loc[seeds, m] - b.loc[seeds, m]).to_numpy(dtype=float)
            se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.nan
            rows.append({"variant": variant, "metric": m, "effect": diff.mean(), "se": se,
                         "seeds": len(diff), "ahead": int((diff > 0).sum())})
    return pd.DataFrame(rows)
