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
# # 2. Where D-MoLE puts its experts: allocation heatmaps under a parameter budget
#
# For every new task t, D-MoLE (docs/method.md section 2) does three things before training:
#
# 1. **Probe.** The zero-cost sensitivity of every candidate module (notebook 01) on K+1
#    batches of task t, with the base model frozen and every expert off.
# 2. **Split the budget between the towers** (the inter-modal curriculum). The budget is
#    B = round(fraction x number of candidate modules) new experts. The released code gives the
#    vision encoder k_V = max(floor(0.25 B), round(B rho_V)) of them, rho_V being the vision
#    share of task t's summed sensitivity; the LLM gets the rest.
# 3. **Allocate within each tower.** The top-k_V vision modules and the top-k_L LLM modules by
#    sensitivity each get one new LoRA expert owned by task t. Experts accumulate over tasks;
#    an autoencoder per task later decides whose experts are switched on.
#
# This notebook draws the result as tasks x layers heatmaps per tower (the paper's Figure 3),
# recomputes it live from the stored sensitivity table while you move the budget, the vision
# floor and the curriculum, and shows what a stored run with those settings scored.

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
import statistics
import time

import pandas as pd

from dmole_lab.analysis import usage
from dmole_lab.analysis.summaries import headline
from dmole_lab.dmole.allocation import allocate_stream, allocation_table
from dmole_lab.viz import plots, results
from dmole_lab.viz.widgets import AllocationExplorer

pd.set_option("display.precision", 3)

# %% [markdown]
# ## Load (or recompute) a D-MoLE run and a sequential-LoRA run
#
# `dmole_run` is `dmole-lab run --preset tiny --method dmole`; `lora_run` is the same stream
# with one LoRA trained task after task (`--method seq-lora`). Both ship in `results/`.

# %%
dmole_run = results.open_or_run("dmole-tiny", "dmole", RECOMPUTE, PRESET, OVERRIDES)
lora_run = results.open_or_run("seq-lora-tiny", "seq-lora", RECOMPUTE, PRESET, OVERRIDES)

manifest = dmole_run.manifest()
tasks = manifest["tasks"]
cfg = manifest["config"]
settings = cfg["dmole"]
sens = dmole_run.summary("sensitivity")
stored = dmole_run.summary("allocation")
n_layers = (sens.groupby("tower")["layer"].max() + 1).to_dict()
print(f"{len(tasks)} tasks; candidate modules per tower: "
      f"{sens.drop_duplicates('module').groupby('tower').size().to_dict()}; "
      f"budget {settings['budget']}, vision floor {settings['vision_floor']}, "
      f"curriculum {settings['curriculum']!r}, expert rank {settings['r']}")

# %% [markdown]
# ## Figure 3: the allocation, live
#
# Each cell counts the modules of a layer (attention q, k, v, o) that hold an expert of the
# task. Read along a row for one task's architecture; compare rows for how tasks differ.
#
# The figure is an explorer that starts at the stored run's settings (below we check that it
# gives back exactly the run's allocation). Every change of the budget, the vision floor or the
# curriculum recomputes the allocation of all tasks and redraws the heatmaps. The note under
# the figure gives the recomputation time, the experts' parameters per task, and the scores of
# a stored D-MoLE run with exactly these settings (shipped in `results/`, or produced on this
# machine under `runs/`) - or the command that produces one.
#
# Curricula: `current` is the released code (task t's own tower scores); `continual` is our
# extension that weighs each tower's score against its history (docs/method.md section 2 step 2);
# `none` is ablation v3 (split in proportion to the towers' module counts).

# %%
def find(chosen):
    """Stored runs of the same stream with the chosen D-MoLE settings."""
    return results.find_runs({**chosen, "stream.tasks": tasks,
                              "stream.n_train": cfg["stream"]["n_train"]})


explorer = AllocationExplorer(sens, tasks, r=settings["r"], preset=PRESET, find=find,
                              fraction=settings["budget"],
                              vision_floor=settings["vision_floor"],
                              curriculum=settings["curriculum"], seed=manifest["seed"])
explorer

# %% [markdown]
# The curriculum's split and the size of each task's experts, as recorded during the run,
# next to the trainable parameters of sequential LoRA (one rank-`lora.r` adapter on every
# linear module of both towers, MLPs included, trained for every task):

# %%
stages = pd.DataFrame([{"task": s["task"], **{k: s[k] for k in
                        ("rho_vision", "k_vision", "k_llm", "expert_params")}}
                       for k, s in manifest["stages"].items() if int(k) >= 1])
lora_params = lora_run.manifest()["stages"]["1"]["trainable_params"]
stages["seq-lora params"] = lora_params
stages

# %% [markdown]
# **What to see** (shipped run). rho_V, the vision share of the gradient, stays between 0.03
# and 0.11 for every task, so the 0.25 floor decides: every task gets k_V = 6 vision experts
# and k_L = 18 LLM experts out of B = 24. The vision experts sit in the early layers 0-3 for
# every task (ocr also takes one in layer 4), as the proxy's vision profile is nearly the same
# for all tasks (notebook 01). In the LLM every task takes all four modules of layer 0, and the
# rest differ between tasks. Each task trains 46,080 parameters (rank-8 experts on 24
# attention modules), 45% of sequential LoRA's 102,912 (rank 4 on all 36 vision and 42 LLM
# linear modules).
#
# ## Recompute it from the stored sensitivity table
#
# The allocator is a pure function of the sensitivity table and the settings
# (`dmole_lab.dmole.allocation.allocate_stream`): recomputing the stream's allocation from the run's
# own table gives back exactly what the run used.

# %%
again = allocation_table(allocate_stream(
    sens, tasks, fraction=settings["budget"], vision_floor=settings["vision_floor"],
    curriculum=settings["curriculum"], towers=settings["towers"],
    allocator=settings["allocator"], seed=manifest["seed"]))
key = ["task", "tower", "layer", "module"]
same = again[key].sort_values(key).reset_index(drop=True).equals(
    stored[key].sort_values(key).reset_index(drop=True))
shown = explorer.allocation[key].sort_values(key).reset_index(drop=True)
print(f"recomputed allocation identical to the stored run's: {same}; the explorer's default "
      f"is it too: {shown.equals(stored[key].sort_values(key).reset_index(drop=True))}")

# %% [markdown]
# The explorer at the top of this section draws the same allocation from the same table.
#
# How fast is an update? Drive the controls from code over a grid of settings and time both
# the allocation (the computation) and the whole update (allocation + figure):

# %%
alloc_ms, update_ms = [], []
for fraction in (0.1, 0.25, 0.5, 0.75, 1.0):
    for mode in ("current", "continual", "none"):
        start = time.perf_counter()
        explorer.curriculum.value = mode
        explorer.fraction.value = fraction
        update_ms.append(1000 * (time.perf_counter() - start) / 2)  # two updates
        alloc_ms.append(1000 * explorer.seconds)
print(f"allocation of {len(tasks)} tasks: median {statistics.median(alloc_ms):.1f} ms, "
      f"max {max(alloc_ms):.1f} ms; whole update incl. figure: median "
      f"{statistics.median(update_ms):.0f} ms")
explorer.fraction.value, explorer.curriculum.value = settings["budget"], settings["curriculum"]

# %% [markdown]
# ## Which experts answer at test time?
#
# With no task id, every test sample votes for the task whose autoencoder reconstructs its
# routing features best (among those below their threshold); the batch's top task is switched
# on, plus the runner-up if it has at least 0.3 of the votes (docs/method.md section 2,
# "Inference"). The router's accuracy (top task = true task) after each stage, over the tasks
# learned so far:

# %%
routing = dmole_run.summary("routing")
usage.accuracy_by_stage(routing, tasks).set_index("stage").T

# %%
plots.routing_confusion(usage.confusion(routing, normalise=True, tasks=tasks),
                        title="routed task per evaluation set, after the last stage");

# %% [markdown]
# The top task is not the whole story: the runner-up's experts are switched on too when it
# has the support. For each evaluation set, the share of its samples during which each task's
# experts were on:

# %%
usage.task_activity(routing).reindex(columns=tasks).fillna(0.0)

# %% [markdown]
# And during training: the share of task t's training batches in which an earlier task's
# autoencoders had the support (>= 0.3 of the voting samples) and that task's frozen experts
# were switched on alongside t's own.

# %%
joined = dmole_run.summary("train_routing")
(joined.assign(joined=joined["joined"].replace("", "(none)"))
 .groupby("task", sort=False)["joined"].value_counts(normalize=True).unstack(fill_value=0)
 .reindex(tasks))

# %% [markdown]
# ## Scores: D-MoLE and sequential LoRA on the same stream
#
# a[t, i] is the score on task i after stage t (row 0 = zero-shot); AVG is the mean of the
# stage averages, Last the mean of the last row, BWT the mean change of each earlier task from
# right after its stage to the end (docs/method.md section 4).

# %%
fig, axes = plots.plt.subplots(1, 2, figsize=(plots.NOTEBOOK_WIDTH, 4.8))
for ax, (name, run) in zip(axes, (("D-MoLE", dmole_run), ("sequential LoRA", lora_run))):
    sm = run.summary("score_matrix")
    plots.score_matrix_heatmap(sm, tasks, ax=ax, title=name, general=False)
fig.tight_layout()

# %%
pd.DataFrame({"D-MoLE": headline(dmole_run),
              "sequential LoRA": headline(lora_run)}).T

# %% [markdown]
# **What we found** (shipped runs, seed 0; the comparison sweep gives 3 seeds,
# `benchmarks/README.md`):
#
# - The batch-level router picks the right task for every learned task's evaluation set after
#   every stage, and no runner-up joins on them: per sample about 0.88 of the votes go to the
#   sample's own task (`benchmarks/bench_router.py`), enough for a batch's majority.
# - So D-MoLE forgets nothing: a task's frozen experts answer its test set after every later
#   stage exactly as they did after its own (BWT 0.0, against about -68 for sequential LoRA).
# - It learns less in each stage. Caption, the first task, trains with no other expert on and
#   still scores far below sequential LoRA: D-MoLE's experts cover less of the model. And the
#   table above shows the training-time rule at work: an earlier task's experts join a batch
#   when they win 0.3 of the votes of the samples that vote at all, and with a few samples of
#   every batch accepted by some earlier autoencoder, most tasks train with an earlier task's
#   experts on (grounding and relation_cap with caption's, color_mc with count_mc's) and are
#   tested with their own only. Some tasks survive it (ocr, color_vqa), others do not
#   (grounding, color_mc and arith_vqa score 0 right after their stage; relation_cap 8.3,
#   below its zero-shot 14.8).
#
# ## Summary
#
# - D-MoLE's allocation is a pure function of the sensitivity table and three settings
#   (budget, vision floor, curriculum): the stored run's allocation is recomputed exactly, in
#   milliseconds, so the heatmaps follow the sliders live.
# - On the tiny model the vision share of the gradient is below the floor for every task, so
#   the floor fixes the split; the LLM experts are where the tasks' architectures differ.
# - Routing is right per batch and nothing is forgotten, but during training the support rule
#   switches on experts of earlier tasks that are off at test time.
#
# ## Exercises
#
# In brackets, how long each exercise takes: "seconds" for those that read the stored runs;
# those that train give the time on 2 CPU cores, run from the project folder and write under
# `runs/`, never over `results/`. Where the answer is a number or a choice, set `answer` in the
# cell below the exercise and run it: `check` recomputes the right answer from the shipped runs
# (or from your own run, for an exercise that trains) and prints "right" or a hint.
#
# **1. No vision floor.** (seconds) Set the vision floor to 0 (the slider, or
# `explorer.vision_floor.value = 0.0`). How many vision experts does each task get now? In
# which vision layers? From code: `allocate_stream(sens, tasks, fraction=settings["budget"],
# vision_floor=0.0, seed=manifest["seed"])`, then `allocation_table`.

# %%
from dmole_lab.exercises import check

answer = None  # a list of ints: the vision layers that hold an expert of any task
check("02.1", answer)

# %% [markdown]
# **2. The `continual` curriculum.** (seconds) Switch the curriculum to `continual`. Which
# tasks gain vision experts, and why? `continual` reads each tower's score against that
# tower's mean over the earlier tasks; the run recorded every task's tower scores in
# `dmole_run.summary("curriculum")` (columns `s_vision` and `s_llm`, on the rows with `used`).

# %%
answer = None  # a list of task names: those that get more vision experts than with `current`
check("02.2", answer)

# %% [markdown]
# **3. Half the budget.** (about 2-3 minutes on 2 CPU cores, like the shipped run: its
# manifest records 118 s of set-up and training, and evaluation takes about 26 s) Set the
# budget to 0.25 and run the command the note prints, from the project folder; it writes the
# run under `runs/`. Come back and run the explorer's cell again: does the note now show the
# run's scores, and is its Last lower than the stored run's?

# %%
answer = None  # True or False: is the half-budget run's Last lower?
check("02.3", answer)

# %% [markdown]
# **4. Per-sample routing.** (about 2-3 minutes on 2 CPU cores: the training is the shipped
# run's, the evaluation a little longer) `dmole-lab run --preset tiny --method=dmole
# --dmole.routing=sample` switches experts per test sample instead of per batch. Open the run
# with `run = results.find_runs({"method": "dmole", "dmole.routing": "sample", "seed": 0})[0]`
# and compare its score matrix and confusion with those above. What share of the nine tasks'
# test samples goes to its own task after the last stage (`usage.router_accuracy(routes,
# tasks)` with `routes = run.summary("routing")`)? Where do the others go, and what does that
# cost the scores?

# %%
answer = None  # a float: the share routed to their own task, with per-sample routing
check("02.4", answer)

# %% [markdown]
# **5. Earlier experts during training.** (seconds; the change: about 2-3 minutes on 2 CPU
# cores) Which tasks trained with an earlier task's experts on in at least half of their
# batches (the table of `joined` above)? Then count the support over the whole batch instead
# of over the voting samples: change `Router.route_training` in `dmole_lab/dmole/router.py`,
# and train into a folder of its own, since the changed code has the same config as a finished
# run in `runs/` and would reuse it: `dmole-lab run --preset tiny --method=dmole
# --runs_dir=runs/exercise-02.5` (undo the change afterwards). How often do experts join now
# (the run's `train_routing` table), and does each task's own-stage score rise?

# %%
answer = None  # a list of task names: earlier experts on in at least half of their batches
check("02.5", answer)
