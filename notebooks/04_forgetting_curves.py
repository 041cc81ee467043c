# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Forgetting curves: D-MoLE against its peers
#
# Every method of the comparison (method.md sections 2-3) trains the same model on the same
# nine-task stream, three seeds each, and is scored on every task after every stage. From
# each run's score matrix a[t, i] (score on task i after stage t, row 0 = zero-shot) we read:
#
# - **forgetting curves**: a column of the matrix, i.e. one task's score from before it is
#   learned to the end of the stream;
# - **AVG** (mean score on the tasks seen so far, averaged over stages), **Last** (mean score
#   after the last stage), **BWT** (mean change of each earlier task from right after its
#   stage to the end), **Forgetting**, **FWT**, **MFT** (mean score right after learning);
# - **retention** of general ability: the held-out general set after the last stage, as a
#   percentage of its zero-shot score.
#
# The runs come from `python benchmarks/bench_compare.py --ship compare-tiny` (which calls
# `dmole-lab compare --preset tiny` over shards) and ship in `results/compare-tiny`, so this
# notebook trains nothing. The metrics are recomputed here from the stored matrices, so the
# conventions can be switched.

# %% tags=["parameters"]
import os

SMOKE = os.environ.get("DMOLE_SMOKE", "0") == "1"  # CI: seconds-long recompute
RECOMPUTE = SMOKE  # True: run the comparison here instead of reading results/
PRESET = "smoke" if SMOKE else "tiny"
METHODS = "seq-lora,dmole,dmole-v1" if SMOKE else None  # None: every peer and ablation
SEEDS = "0,1" if SMOKE else "0,1,2"
OVERRIDES = {"dmole.router_epochs": 5} if SMOKE else {}

# %%
import pandas as pd

from dmole_lab import plots, results
from dmole_lab.compare import (
    ABLATION_VARIANTS,
    PEERS,
    format_table,
    method_table,
    run_metrics,
)
from dmole_lab.widgets import ComparisonExplorer

pd.set_option("display.precision", 2)
pd.set_option("display.width", 200)

# %% [markdown]
# ## Load (or recompute) the comparison

# %%
if RECOMPUTE:
    import tempfile

    OVERRIDES = {**OVERRIDES, "runs_dir": tempfile.mkdtemp()}
scores, runs = results.open_or_compare("compare-tiny", RECOMPUTE, PRESET, OVERRIDES, METHODS,
                                       SEEDS)
tasks = runs["tasks"].iloc[0].split(",")
variants = list(dict.fromkeys(runs["variant"]))
peers = [v for v in (*PEERS, *variants) if v in variants and v not in ABLATION_VARIANTS]
peers = list(dict.fromkeys(peers))
ablations = [v for v in ("dmole", *ABLATION_VARIANTS) if v in variants]
print(f"{len(runs)} runs: {len(variants)} variants x seeds {sorted(runs.seed.unique())}; "
      f"stream: {', '.join(tasks)}")

# %% [markdown]
# ## The method table
#
# Mean +- std over seeds, BWT divided by T-1 and forgetting measured from the score right
# after learning ("first"); `params_per_task` is the number of parameters each task trains,
# `training_seconds` the set-up + training + wrap-up time of the whole stream (evaluation
# excluded).

# %%
per_run = run_metrics(scores, runs)
table = method_table(per_run, order=peers)
format_table(table)

# %%
plots.metric_bars(table, ("AVG", "Last", "BWT"), title="AVG, Last and BWT (mean +- std)");

# %% [markdown]
# ## Score matrices side by side
#
# Seed-mean matrices. A bright diagonal that stays bright below it is a method that learns
# each task and keeps it; a diagonal that fades below is forgetting; a dim diagonal is a
# method that does not learn the task in its stage.

# %%
plots.score_matrix_grid(scores, tasks, peers);

# %% [markdown]
# ## Forgetting curves
#
# The first task of the stream, `caption`, is the one every later stage can overwrite: its
# score after each stage, per method (mean over seeds, band = +- std).

# %%
plots.task_curves_by_method(scores, tasks[0], tasks, peers);

# %% [markdown]
# ## Explore: forgetting curves and the conventions
#
# Pick methods and a task; the curve is the task's score after every stage (the dotted line
# marks the stage that trains it). The table below follows the chosen conventions: CoIN
# divides BWT by T instead of T-1; "max" forgetting measures from a task's best score over
# the stream (Chaudhry et al.), "first" from its score right after its stage (Avalanche).

# %%
explorer = ComparisonExplorer(scores, runs, variants=peers, task=tasks[0])
explorer

# %% [markdown]
# ## D-MoLE's ablations
#
# v1: experts only in the LLM; v2: only in the vision encoder; v3: no curriculum (budget
# split by the towers' module counts); v4: no dynamic allocator (the same budget spread
# uniformly over layers). method.md section 2.

# %%
format_table(method_table(per_run, order=ablations))

# %% [markdown]
# ## General ability
#
# The held-out general set (object listing, not in the stream) before any tuning and after
# the last stage. Retention = final / zero-shot x 100.

# %%
general = (per_run.groupby("variant", sort=False)[["General", "Retention"]].agg(["mean", "std"])
           .reindex(peers))
general[("zero-shot", "")] = runs.groupby("variant")["general_zero_shot"].mean()
general

# %% [markdown]
# ## What we found
#
# The shipped comparison is partial: seed 0 of five methods (sequential LoRA, Seq-FT, LwF,
# EWC, D-MoLE); the other methods, the ablations and seeds 1-2 are still to run (each run
# takes 7-9 minutes on the 2-core machine; `python benchmarks/bench_compare.py --resume-from
# compare-tiny --ship compare-tiny` continues the sweep from the shipped runs). On what is there:
#
# - D-MoLE is the only method that keeps its earlier tasks: BWT -7.5 against -41 (LwF) to
#   -74 (EWC), and the highest Last (27.0 against about 10 for every other method).
# - It learns each task less well in its own stage (MFT 33.7 against 46-76), so its AVG (17.4)
#   is below sequential LoRA's (19.5) and EWC's (22.0): the paper's AVG ranking does not hold
#   here, its BWT ranking does.
# - LwF lowers forgetting (BWT -41) by learning less (MFT 46), and ends at the same Last as
#   sequential LoRA. EWC's Fisher penalty does not stop forgetting at the
#   default weight (BWT -74) while learning each task best (MFT 76).
# - No method keeps the general ability: the held-out set falls from 86 to 9-10 for all, D-MoLE
#   included (its router sends the general set to some task's experts).
#
# ## Summary
#
# - A forgetting curve is a column of the score matrix; AVG, Last, BWT, Forgetting, FWT and
#   MFT are all pure functions of that matrix (`dmole_lab.metrics`), recomputed here from the
#   stored runs under either convention.
# - The comparison is one command (`dmole-lab compare`), resumable and shardable; its tidy
#   tables are all a notebook needs.
#
# ## Exercises
#
# 1. Switch the BWT divisor to T. Which methods' ranking by BWT changes, and why can it not?
# 2. With forgetting "max", which method's forgetting grows most over "first"? What does that
#    say about its curves (look at them in the explorer)?
# 3. Pick `grounding`: which methods ever learn it, and which keep it to the end?
# 4. Multi-task trains on every task seen so far at the same compute. Is it an upper bound on
#    Last here? On MFT?
# 5. Rerun the comparison with `--dmole.routing=sample` added to the D-MoLE variants
#    (`dmole-lab compare --methods dmole,dmole+dmole.routing=sample`). Does per-sample routing
#    change D-MoLE's BWT?
