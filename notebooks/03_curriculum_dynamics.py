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
# # 3. The inter-modal curriculum: does D-MoLE balance the two towers?
#
# Notebook 01 showed the modality imbalance: when a LoRA trains both towers, the LLM's
# gradients and updates dwarf the vision encoder's. D-MoLE's answer (docs/method.md section 2
# step 2) is to decide, per task, how much of the expert budget each tower gets:
#
# - `current` (the released code): rho_V = S_V / (S_V + S_L) from task t's own summed
#   sensitivities, and k_V = max(floor(0.25 B), round(B rho_V));
# - `continual` (our extension, off by default): each tower's score is first divided by its
#   mean over the earlier tasks, so a tower gets more experts when the new task is harder *for
#   it* than what came before;
# - `none` (ablation v3): the budget split in proportion to the towers' numbers of modules.
#
# Here we look at the split each mode chooses per task, and at the per-tower gradient and
# update magnitudes while D-MoLE trains, against sequential LoRA on the same stream.

# %% tags=["parameters"]
import os
import tempfile

SMOKE = os.environ.get("DMOLE_SMOKE", "0") == "1"  # CI: seconds-long recompute on 3 tasks
RECOMPUTE = SMOKE  # True: train D-MoLE and sequential LoRA here instead of reading results/
PRESET = "smoke" if SMOKE else "tiny"
OVERRIDES = {"runs_dir": tempfile.mkdtemp(), "dmole.router_epochs": 5} if SMOKE else {}
# Your own data: DMOLE_STREAM_FILE=path/to/stream.yaml (docs/data.md) recomputes every
# figure on that stream with the same code (`dmole-lab export` writes one to try).
STREAM_FILE = os.environ.get("DMOLE_STREAM_FILE", "")
if STREAM_FILE:
    RECOMPUTE, OVERRIDES = True, {**OVERRIDES, "stream.file": STREAM_FILE}

# %%
import pandas as pd

from dmole_lab.analysis.profiles import tower_ratio
from dmole_lab.dmole.allocation import curriculum_splits
from dmole_lab.viz import plots, results
from dmole_lab.viz.widgets import DynamicsExplorer

pd.set_option("display.precision", 3)

# %% [markdown]
# ## Load (or recompute) the runs
#
# The same two runs as notebook 02: `dmole-lab run --preset tiny --method dmole` and
# `--method seq-lora`, both with the per-step recorders on.

# %%
dmole_run = results.open_or_run("dmole-tiny", "dmole", RECOMPUTE, PRESET, OVERRIDES)
lora_run = results.open_or_run("seq-lora-tiny", "seq-lora", RECOMPUTE, PRESET, OVERRIDES)

manifest = dmole_run.manifest()
tasks = manifest["tasks"]
settings = manifest["config"]["dmole"]
sens = dmole_run.summary("sensitivity")

# %% [markdown]
# ## The split each curriculum chooses
#
# From the run's stored sensitivity table, the stream's split under each mode (the same budget
# and floor as the run). Bars are the vision tower's share k_V / B; the black marks are rho_V,
# the vision share of the gradient before the floor is applied.

# %%
splits = curriculum_splits(sens, tasks, fraction=settings["budget"],
                           vision_floor=settings["vision_floor"], seed=manifest["seed"])
plots.curriculum_split_bars(splits, title=f"budget {settings['budget']}, vision floor "
                            f"{settings['vision_floor']}");

# %%
splits.pivot(index="task", columns="curriculum", values="k_vision").reindex(tasks)

# %% [markdown]
# The run itself records, per task, the split every mode would have chosen at that point of
# the stream (with the history it had), and marks the one it used. It agrees with the
# recomputation above:

# %%
recorded = dmole_run.summary("curriculum")
print("recorded == recomputed:",
      recorded.pivot(index="task", columns="curriculum", values="k_vision").reindex(tasks)
      .equals(splits.pivot(index="task", columns="curriculum", values="k_vision")
              .reindex(tasks)))
recorded[recorded.used].set_index("task")[["curriculum", "s_vision", "s_llm", "rho_vision",
                                           "k_vision", "k_llm"]]

# %% [markdown]
# **What to see** (shipped run). rho_V is 0.03 to 0.11, below the 0.25 floor for every task,
# so `current` gives every task the floor: 6 vision and 18 LLM experts. `none` splits by
# module counts (half each here: both towers have 24 candidate modules), so it gives the
# vision tower twice as many experts as the curriculum does. `continual` compares each task
# with the earlier ones; it gives the vision tower more than the floor where a task's vision
# score is high relative to its LLM score, against their histories.
#
# What happens without the floor? The split then follows the gradient alone:

# %%
no_floor = curriculum_splits(sens, tasks, modes=("current", "continual"),
                             fraction=settings["budget"], vision_floor=0.0,
                             seed=manifest["seed"])
no_floor.pivot(index="task", columns="curriculum", values="k_vision").reindex(tasks)

# %% [markdown]
# ## Per-tower gradient and update magnitudes: D-MoLE vs sequential LoRA
#
# The recorders store, at every step and for each tower, the norm of the gradient over the
# tower's trainable parameters and the relative update ||Delta W|| / ||W0|| of its trained
# adapters (notebook 01). For D-MoLE these are the current task's experts only. Stages are
# laid end to end; the lower panel is the LLM / vision ratio (1 = balanced).

# %%
dmole_dyn = dmole_run.summary("dynamics")
lora_dyn = lora_run.summary("dynamics")
plots.tower_dynamics(dmole_dyn, "grad_norm", title="D-MoLE: gradient norm per tower");

# %%
plots.tower_dynamics(lora_dyn, "grad_norm", title="sequential LoRA: gradient norm per tower");

# %% [markdown]
# Per task, the median over its stage of the LLM / vision ratio, for both methods:

# %%
for quantity, label in (("grad_norm", "LLM / vision gradient norm"),
                        ("rel_update", "LLM / vision relative update")):
    plots.tower_ratio_bars({"D-MoLE": tower_ratio(dmole_dyn, quantity),
                            "sequential LoRA": tower_ratio(lora_dyn, quantity)},
                           label=f"{label} (median)", title=label)

# %%
ratios = pd.concat({(m, q): tower_ratio(d, q).set_index("task")["median"]
                    for m, d in (("D-MoLE", dmole_dyn), ("seq-LoRA", lora_dyn))
                    for q in ("grad_norm", "rel_update")}, axis=1).reindex(tasks)
ratios.loc["median over tasks"] = ratios.median()
ratios

# %% [markdown]
# Pick a task, a quantity or a smoothing window for D-MoLE's curves:

# %%
DynamicsExplorer(dmole_dyn)

# %% [markdown]
# **What we found** (shipped runs, seed 0). D-MoLE does not balance the towers' gradients on
# this stream: its LLM / vision gradient ratio is below sequential LoRA's on four of the nine
# tasks (grounding, ocr, color_mc, arith_vqa) and above it on the other five (for `count_mc`
# about 41 against 9); the medians over tasks are about the same (7.4 against 8.0). The
# relative updates, which say how far each tower's weights actually move, are about as
# unbalanced under both methods (ratios 1.3 to 5.7 per task). Part of any difference is
# arithmetic: D-MoLE trains 6 vision and 18 LLM experts while sequential LoRA trains all 24
# modules of each tower, and a gradient norm over fewer modules is smaller. So on this stream
# the curriculum (which, with rho_V below the floor, is the floor) does not balance the towers'
# learning; the LLM still moves its weights further.
#
# ## Summary
#
# - The released curriculum splits the budget by the vision share of task t's gradient, with
#   a 0.25 floor. On the tiny model the gradient share is 3-11%, so the floor decides for
#   every task.
# - The `continual` extension and the `none` ablation split differently; the notebook's tables
#   show by how much per task.
# - D-MoLE lowers the LLM / vision gradient ratio on some tasks and raises it on others; the
#   relative updates stay about as unbalanced as with sequential LoRA.
#
# ## Exercises
#
# 1. Run D-MoLE with `--dmole.curriculum=continual` (notebook 02 prints the exact command for
#    any setting). Do the tower ratios move closer to 1?
# 2. With the floor at 0 the `current` curriculum gives the vision tower very few experts.
#    Which tasks would lose most? Check their zero-shot and final scores in notebook 02.
# 3. The gradient norm of a tower grows with the number of trainable parameters in it.
#    Normalise the ratios above by the experts per tower (k_L / k_V) for D-MoLE and by the
#    module counts for sequential LoRA. Does D-MoLE still look more balanced?
# 4. Ablation v3 (`--dmole.curriculum=none`) gives the vision tower half the budget. Predict
#    its LLM / vision update ratio, then run it and check.
