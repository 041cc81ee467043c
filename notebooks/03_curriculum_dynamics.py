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
# gradients and updates dwarf the vision encoder's on most tasks. D-MoLE's answer
# (docs/method.md section 2 step 2) is to decide, per task, how much of the expert budget each
# tower gets:
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
# and floor as the run). Bars are the vision tower's share k_V / B; the black mark across each
# `current` bar is rho_V, the vision share of the gradient: what `current` would give before
# the floor lifts it.

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
# vision tower twice as many experts as `current` does. `continual` divides each tower's score
# by its mean over the earlier tasks; on this stream it gives every task after the first more
# than the floor (7 to 16 of 24 vision experts), and ocr, arith_vqa and color_vqa a vision
# majority: count_mc's large LLM score raises the LLM's history, so later tasks look
# vision-heavy against it.
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
# laid end to end; the lower panel is the LLM / vision ratio (1 = balanced). D-MoLE's figure is
# an explorer: pick a task, a quantity or a smoothing window.

# %%
dmole_dyn = dmole_run.summary("dynamics")
lora_dyn = lora_run.summary("dynamics")
DynamicsExplorer(dmole_dyn, title="D-MoLE")

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
# **What we found** (shipped runs, seed 0). D-MoLE does not balance the towers' gradients on
# this stream: its LLM / vision gradient ratio is below sequential LoRA's on two of the nine
# tasks (grounding, ocr) and above it on the other seven (for `count_mc` about 23 against 17);
# the median over tasks is more than twice sequential LoRA's (8.1 against 3.5). The relative
# updates, which say how far each tower's weights actually move, are unbalanced under both
# methods (ratios 0.9 to 5.2 per task), and more so under D-MoLE (median over tasks 3.0
# against 2.2). Under D-MoLE the LLM moves its weights 2 to 4 times as far as the vision tower
# on every task; under sequential LoRA the two towers move about equally on the last two tasks
# (arith_vqa, color_vqa). Part of the difference is arithmetic: D-MoLE trains 6 vision and 18
# LLM rank-8 experts while sequential LoRA trains a rank-4 adapter on all 36 vision and 42 LLM
# linear modules, and a gradient norm over fewer modules is smaller. So on this stream the
# curriculum (which, with rho_V below the floor, is the floor) does not balance the towers'
# learning; the LLM still moves its weights further.
#
# ## Summary
#
# - The released curriculum splits the budget by the vision share of task t's gradient, with
#   a 0.25 floor. On the tiny model the gradient share is 3-11%, so the floor decides for
#   every task.
# - The `continual` extension and the `none` ablation split differently; the notebook's tables
#   show by how much per task.
# - D-MoLE lowers the LLM / vision gradient ratio on two tasks and raises it on seven; its
#   relative updates are more unbalanced than sequential LoRA's.
#
# ## Exercises
#
# In brackets, how long each exercise takes: "seconds" for those that read the stored runs;
# those that train give the time on 2 CPU cores, run from the project folder and write under
# `runs/`, never over `results/`. Where the answer is a number or a choice, set `answer` in the
# cell below the exercise and run it: `check` recomputes the right answer from the shipped runs
# (or from your own run, for an exercise that trains) and prints "right" or a hint.
#
# **1. Train with `continual`.** (about 2-3 minutes on 2 CPU cores, like the shipped D-MoLE
# run: 118 s of set-up and training, about 26 s of evaluation) From the project folder run
# `dmole-lab run --preset tiny --method=dmole --dmole.curriculum=continual`
# (`results.run_command("tiny", {...})` spells the command for any setting). Open the run with
# `results.find_runs({"method": "dmole", "dmole.curriculum": "continual"})[0]` and compute its
# median LLM / vision ratios over tasks, as in `ratios`. Do they move closer to 1 than the
# stored run's? Count a change of less than 10% in |log ratio| as "same": two runs of one
# config on different machines differ by about that much.

# %%
from dmole_lab.exercises import check

answer = None  # {"grad_norm": ..., "rel_update": ...}, each "closer", "same" or "farther"
check("03.1", answer)

# %% [markdown]
# **2. Who loses most without the floor?** (seconds) With the floor at 0 the `current`
# curriculum gives the vision tower very few experts (`no_floor` above). Which tasks lose the
# most vision experts against the run's split? Look up their zero-shot and final scores in the
# run's score matrix (`dmole_run.summary("score_matrix")`): do the tasks that lose most look
# like tasks that need the vision tower?

# %%
answer = None  # a list of task names: those that lose the most vision experts
check("03.2", answer)

# %% [markdown]
# **3. Normalise by the experts per tower.** (seconds) A tower's gradient norm is the square
# root of a sum over its trainable modules, so with n modules of similar gradients it grows
# like sqrt(n). Divide D-MoLE's gradient-norm ratios by sqrt(k_L / k_V), the run's split per
# task (`recorded[recorded.used]`), and sequential LoRA's by sqrt(42 / 36) (it trains a
# rank-4 adapter on all 42 LLM and 36 vision linear modules, MLPs included). What is D-MoLE's
# median over tasks now, and is it more balanced than sequential LoRA's? Why do the relative
# updates need no such correction?

# %%
answer = None  # a float: D-MoLE's median over tasks of ratio / sqrt(k_L / k_V)
check("03.3", answer)

# %% [markdown]
# **4. Ablation v3.** (about 2-3 minutes on 2 CPU cores: the shipped comparison's v3 runs
# trained in 114-118 s each, plus about 26 s of evaluation) `--dmole.curriculum=none` gives the
# vision tower half the budget, 12 of the 24 experts. Predict its median LLM / vision
# relative-update ratio (the stored run's is in `ratios`) and write it down as `answer`; then
# run `dmole-lab run --preset tiny --method=dmole --dmole.curriculum=none` and check. A
# prediction within 25% of your run's ratio counts as right.

# %%
answer = None  # a float: your prediction, written down before the run
check("03.4", answer)
