"""``dmole-lab plan``: what a preset costs before anything trains (or any GPU is rented).

Three tables, for the preset's model (its checkpoint folder, or the real-size shape
``model.shape`` names, built on the meta device: no weights, no memory):

* ``towers``: parameters per tower (vision, projector, LLM, other), linear modules and candidate
  modules (docs/method.md section 2 step 1);
* ``methods``: trainable parameters per task for each method, counted on the adapters the method
  itself puts on the skeleton (D-MoLE's depend on the probe: the range over every allocation the
  budget and vision floor allow);
* ``memory``: estimated GPU memory at the preset's batch size and dtype: weights, the trainable
  parameters with their gradients and AdamW's two moments, and activations at the peak (what
  autograd saves, plus the loss's float32 softmax and gradient when the backward pass starts).
  What autograd saves is measured, not modelled: a copy of the architecture at real width with
  two layers per tower runs one training step of a sample of the shape's size (image and text
  tokens) on the CPU, :func:`dmole_lab.probes.memory.saved_bytes` counts what autograd keeps per
  layer, and the figure is scaled to the full depth and the batch.

Memory a framework adds on top (the CUDA context, allocator fragmentation, temporary buffers
of a kernel) is not in the estimate; benchmarks/README.md compares it with measured peaks.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import pandas as pd
from tqdm.auto import tqdm

from dmole_lab.config import METHOD_NAMES, RunConfig, check_config
from dmole_lab.dmole.allocation import expert_count
from dmole_lab.methods import make_method
from dmole_lab.methods.branchlora import branch_modules
from dmole_lab.models.anatomy import Anatomy, anatomy_of
from dmole_lab.models.loading import DTYPES
from dmole_lab.models.shapes import architecture_config, cut_down, dummy_batch, skeleton
from dmole_lab.probes.memory import saved_bytes

GIB = 1 << 30
#: Methods whose adapters are measured for activations, and the methods each one stands for
#: (the same adapters on the same modules: their activations differ by less than a percent).
ACTIVATION_FAMILIES = {"seq-lora": ("seq-ft", "seq-lora", "multitask", "lwf", "ewc", "o-lora"),
                       "moelora": ("moelora", "mole", "mola"), "dmole": ("dmole",),
                       "branchlora": ("branchlora",)}


@dataclass
class Plan:
    """The three tables of a plan, and what they were computed on."""

    model_type: str
    source: str  # the checkpoint folder or the shape
    towers: pd.DataFrame
    methods: pd.DataFrame
    memory: pd.DataFrame


def tower_table(model, anatomy: Anatomy) -> pd.DataFrame:
    """Parameters, linear modules and candidate modules per tower (and projector / other)."""
    params: dict[str, int] = {}
    for name, p in model.named_parameters():
        params[anatomy.tower_of(name)] = params.get(anatomy.tower_of(name), 0) + p.numel()
    rows = []
    for tower in ("vision", "projector", "llm", "other"):
        mods = [m for m in anatomy.modules if m.tower == tower]
        cands = [m for m in mods if m.candidate]
        rows.append({"tower": tower, "parameters": params.get(tower, 0),
                     "layers": anatomy.n_layers(tower) if mods else 0,
                     "linear_modules": len(mods), "candidate_modules": len(cands),
                     "candidate_parameters": sum(m.n_params for m in cands)})
    return pd.DataFrame(rows)


def dmole_range(cfg: RunConfig, anatomy: Anatomy) -> tuple[int, int]:
    """(fewest, most) trainable parameters of one D-MoLE task: B = budget x candidates experts
    of rank r, k_V of them in the vision tower with floor(floor x B) <= k_V, placed on the
    smallest (largest) candidates (docs/method.md section 2 steps 2-3)."""
    c = cfg.dmole
    sizes = {t: sorted(c.r * (m.in_features + m.out_features) for m in anatomy.candidates(t))
             for t in ("vision", "llm")}
    n_v, n_l = len(sizes["vision"]), len(sizes["llm"])
    budget = expert_count(n_v + n_l, c.budget, c.rounding)
    floor_k = math.floor(c.vision_floor * budget)
    towers = {"both": (True, True), "llm": (False, True), "vision": (True, False)}[c.towers]
    splits = [k for k in range(0, budget + 1)
              if k <= n_v and budget - k <= n_l and k >= (floor_k if all(towers) else 0)
              and (towers[0] or k == 0) and (towers[1] or k == budget)]
    lo = min(sum(sizes["vision"][:k]) + sum(sizes["llm"][:budget - k]) for k in splits)
    hi = max(sum(sizes["vision"][::-1][:k]) + sum(sizes["llm"][::-1][:budget - k])
             for k in splits)
    return lo, hi


def with_adapters(method: str, cfg: RunConfig, model, anatomy: Anatomy, batch_size: int = 1,
                  dmole_paths: list[str] | None = None):
    """``model`` with the adapters ``method`` trains on task 1, routed for batches of
    ``batch_size``; returns (model, trainable parameters). D-MoLE's experts go on
    ``dmole_paths`` (default: every candidate, the largest allocation per module)."""
    run = replace(cfg, method=method)
    if method == "dmole":
        from dmole_lab.experts.base import AdapterShape
        from dmole_lab.experts.model import Experts

        ex = Experts(model, AdapterShape.of(cfg.dmole, "dmole"))
        ex.add("t1", dmole_paths or [m.path for m in anatomy.candidates()])
        ex.activate(["t1"])
        return model, ex.train_only("t1")
    if method == "branchlora":
        from dmole_lab.experts.branch import BranchSelector, add_branches

        selector = BranchSelector()
        layers = add_branches(model, branch_modules(anatomy, cfg.lora.modules), selector,
                              cfg.branch)
        for layer in layers.values():
            layer.add_router("t1")
        selector.set(["t1"] * batch_size, None)
        return model, [p for layer in layers.values() for n, p in layer.named_parameters()
                       if not n.startswith("base_layer")]
    m = make_method(run, anatomy)
    model = m.begin_task(model, 1, "t1", None)
    return model, m.trainable_parameters(model)


def method_table(cfg: RunConfig, base, anatomy: Anatomy,
                 methods=METHOD_NAMES) -> pd.DataFrame:
    """Trainable parameters (and their bytes) of one task for each method, on the skeleton."""
    rows = []
    for method in methods:
        if method == "dmole":
            lo, hi = dmole_range(cfg, anatomy)
            width = DTYPES[cfg.model.dtype].itemsize
            rows.append({"method": method, "trainable": hi, "trainable_min": lo,
                         "trainable_bytes": hi * width})
            continue
        model, params = with_adapters(method, cfg, copy.deepcopy(base), anatomy)
        n = sum(p.numel() for p in params)
        rows.append({"method": method, "trainable": n, "trainable_min": n,
                     "trainable_bytes": sum(p.numel() * p.element_size() for p in params)})
    return pd.DataFrame(rows)


def activation_table(cfg: RunConfig, shape: dict | None, config, progress: bool = True,
                     families=tuple(ACTIVATION_FAMILIES)) -> pd.DataFrame:
    """Activation bytes of one training sample per method family, measured on a real-width
    copy with two layers per tower and scaled to the full depth: other + first layer + (n - 1)
    x the second layer, per tower. Needs the shape's sample size (``shape``)."""
    if shape is None:
        raise ValueError("activations need the size of one sample: set model.shape to the "
                         "shape of this checkpoint")
    depth = {"vision": _depth(config.vision_config), "llm": config.text_config.num_hidden_layers}
    rows = []
    built = cut_down(shape, (2, 2), cfg.model.dtype)
    anatomy = anatomy_of(built)
    for family in tqdm(families, desc="measuring activations", disable=not progress,
                       leave=False):
        model, _ = with_adapters(family, cfg, copy.deepcopy(built), anatomy)
        counted = saved_bytes(model, anatomy, dummy_batch(shape, model.config))
        per_sample = counted.get("other", 0.0) + sum(
            counted.get(f"{t}.0", 0.0) + (depth[t] - 1) * counted.get(f"{t}.1", 0.0)
            for t in ("vision", "llm"))
        for method in ACTIVATION_FAMILIES[family]:
            rows.append({"method": method, "activation_bytes_per_sample": per_sample,
                         "loss_bytes_per_sample": loss_peak_bytes(shape, config),
                         "measured_on": family})
    return pd.DataFrame(rows)


def loss_peak_bytes(shape: dict, config) -> int:
    """Bytes the backward pass of the loss adds at its start, per sample, on top of what is
    saved: the cross-entropy's softmax and the logits' gradient, both float32 over every
    position and the whole vocabulary (transformers computes the loss in float32)."""
    tokens = shape["image_tokens"] + shape["text_tokens"]
    return 2 * tokens * config.text_config.vocab_size * 4


def _depth(vision_config) -> int:
    return getattr(vision_config, "depth", None) or vision_config.num_hidden_layers


def memory_table(cfg: RunConfig, n_params: int, methods: pd.DataFrame,
                 activations: pd.DataFrame | None) -> pd.DataFrame:
    """GiB per method at ``train.batch_size``: weights, trainable state (the parameters, their
    gradients, AdamW's two moments: 4 x their bytes), activations (what autograd saves, plus
    the loss's float32 softmax and gradient at the start of the backward pass: the peak) and
    the total."""
    weights = n_params * DTYPES[cfg.model.dtype].itemsize
    out = methods[["method"]].copy()
    out["weights_gib"] = weights / GIB
    out["trainable_state_gib"] = 4 * methods["trainable_bytes"] / GIB
    if activations is not None:
        act = methods[["method"]].merge(activations, on="method", how="left")
        out["activations_gib"] = ((act["activation_bytes_per_sample"]
                                   + act["loss_bytes_per_sample"]) * cfg.train.batch_size / GIB)
    else:
        out["activations_gib"] = float("nan")
    out["total_gib"] = out[["weights_gib", "trainable_state_gib", "activations_gib"]].sum(
        axis=1, min_count=3)
    return out


def plan(cfg: RunConfig, methods=METHOD_NAMES, activations: bool = True,
         progress: bool = True) -> Plan:
    """The plan of ``cfg`` (module docstring). ``activations=False`` skips the measurement
    (seconds to minutes on a CPU for a 7B shape)."""
    check_config(cfg)
    config, shape = architecture_config(cfg.model)
    base = skeleton(config)
    anatomy = anatomy_of(base)
    towers = tower_table(base, anatomy)
    table = method_table(cfg, base, anatomy, methods)
    wanted = [f for f, ms in ACTIVATION_FAMILIES.items() if set(ms) & set(methods)]
    act = activation_table(cfg, shape, config, progress, wanted) if activations else None
    n_params = sum(p.numel() for p in base.parameters())
    source = cfg.model.shape if shape is not None and cfg.model.shape else cfg.model.path
    return Plan(config.model_type, source, towers, table,
                memory_table(cfg, n_params, table, act))


__all__ = ["ACTIVATION_FAMILIES", "Plan", "activation_table", "dmole_range", "memory_table",
           "method_table", "plan", "tower_table", "with_adapters"]
