"""Typed run configuration: frozen dataclasses, YAML presets and strict dotted overrides.

A preset (``configs/<name>.yaml``) and command-line overrides (``--train.lr=1e-4``) are both
applied through :func:`apply_overrides`, which refuses unknown keys and values of the wrong
type instead of silently ignoring them, and then checks every key against its rule
(:data:`RULES`: ranges, choices, and the rules that tie keys together), so that a bad setting
fails with a one-line :class:`ConfigError` before a model is loaded or a folder written.
"""

from __future__ import annotations

import hashlib
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PRESETS_DIR = PROJECT_ROOT / "configs"
#: Real-size architectures without weights (dmole_lab.models.shapes), named by model.shape.
SHAPES_DIR = Path(__file__).resolve().parent / "models" / "shapes"

#: Default stream order: the paper's order of task types (docs/method.md section 2), except that the
#: two colour tasks are swapped: right after colour VQA, colour multiple choice was not learnable
#: within its stage (8% in the 9th position, 62% in the 7th; benchmarks/README.md).
DEFAULT_TASKS = (
    "caption",
    "grounding",
    "textcap",
    "count_mc",
    "ocr",
    "relation_cap",
    "color_mc",
    "arith_vqa",
    "color_vqa",
)


#: The two towers of a vision-language model, in the order every table and figure uses.
TOWERS = ("vision", "llm")
#: Budget split between towers (docs/method.md section 2 step 2).
CURRICULA = {
    "current": "released code: k_V = max(floor(floor * B), round(B * rho_V)) from task t alone",
    "continual": "our extension: split by each tower's difficulty relative to its history, "
                 "d = S(t) / mean of S over earlier tasks (first task: as 'current')",
    "none": "ablation v3: split in proportion to the towers' numbers of candidate modules",
}
#: Which towers may get experts (ablations v1 = llm only, v2 = vision only).
TOWER_CHOICES = ("both", "llm", "vision")
#: How modules are chosen within a tower (ablation v4 = uniform).
ALLOCATORS = {
    "dynamic": "top-k modules of the tower by sensitivity",
    "uniform": "ablation v4: the same k spread evenly over the tower's layers",
}
#: The paper's ablations as switch settings (docs/method.md section 2, "Ablations").
ABLATIONS = {
    "v1": {"towers": "llm"},
    "v2": {"towers": "vision"},
    "v3": {"curriculum": "none"},
    "v4": {"allocator": "uniform"},
}
#: How the allocator rounds B and B rho_V to counts (docs/method.md section 2 step 2).
ROUNDING = {
    "half_up": "released code: int(x + 0.5), so 2.5 -> 3",
    "half_even": "Python's round, so 2.5 -> 2",
}

#: Facts that live in higher layers, restated here so that a config is checked in full before
#: anything heavy is imported (this module stays torch-free). tests/test_validation.py asserts
#: that each equals its registry, so they cannot drift apart.
#: The continual methods (dmole_lab.methods.METHODS).
METHOD_NAMES = ("seq-ft", "seq-lora", "multitask", "lwf", "ewc", "o-lora", "moelora", "mole",
                "mola", "dmole", "branchlora")
#: The stream's tasks (dmole_lab.data.tasks.TASKS) and held-out general sets (GENERAL_SETS).
TASK_NAMES = ("caption", "grounding", "textcap", "count_mc", "ocr", "relation_cap", "color_vqa",
              "arith_vqa", "color_mc")
GENERAL_SET_NAMES = ("general", "pope")
#: Sensitivity proxies (dmole_lab.probes.sensitivity.PROXIES).
PROXY_NAMES = ("grad_norm", "grad_norm_per_param", "snip", "fisher")
#: Weight dtypes a model loads in (dmole_lab.models.loading.DTYPES).
DTYPE_NAMES = ("float32", "bfloat16", "float16")
#: Module selections of lora.modules (dmole_lab.models.anatomy.Anatomy.select).
MODULE_SELECTIONS = ("all", "candidates")
#: What a BranchLoRA router reads (dmole_lab.methods.branchlora.ROUTER_INPUTS).
BRANCH_ROUTER_INPUTS = ("summary", "first")
#: Largest seed: NumPy seeds with ``seed % 2**32``, so larger seeds would repeat smaller ones.
SEED_MAX = 2**32 - 1

#: Autocast modes of training and evaluation (dmole_lab.training.distributed).
MIXED_PRECISION = ("no", "bf16", "fp16")

#: Metadata of a key added after runs were shipped: at its default it stays out of the config
#: hash, so existing run folders keep their names (and a resumed sweep finds them).
LATER = {"hash_default": False}


class ConfigError(ValueError):
    """A preset or override names an unknown key, or gives a value of the wrong type or one
    its key does not allow."""


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class ModelConfig:
    """Which checkpoint to tune and where it runs."""

    path: str = field(
        default="data/tiny-llava",
        metadata=_help("local folder of a Hugging Face vision-language checkpoint"),
    )
    dtype: str = field(default="float32", metadata=_help("float32, bfloat16 or float16"))
    device: str = field(default="auto", metadata=_help("auto, cpu, cuda or cuda:N"))
    shape: str = field(default="", metadata={**LATER, **_help(
        "a shipped real-size architecture (models/shapes) that `dmole-lab plan` sizes when "
        "model.path is not a checkpoint folder here")})


@dataclass(frozen=True)
class StreamConfig:
    """The continual stream: the synthetic one made in code (dmole_lab.data.tasks), or the
    field's data formats read from a stream file (``file``; docs/data.md)."""

    tasks: tuple[str, ...] = field(default=DEFAULT_TASKS, metadata=_help("stream order"))
    n_train: int = field(default=384, metadata=_help("training samples per task"))
    n_test: int = field(default=48, metadata=_help("test samples per task"))
    n_general: int = field(default=96, metadata=_help("samples of each held-out general set"))
    general: tuple[str, ...] = field(
        default=("general",),
        metadata=_help("held-out general sets to score: general (object listing), pope"),
    )
    seed: int = field(default=0, metadata=_help("seed of the data generator"))
    file: str = field(default="", metadata={**LATER, **_help(
        "stream YAML of real data (docs/data.md); set, it replaces the synthetic stream "
        "(tasks, n_train, n_test, n_general, general and seed are then not read)")})


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of each stage (docs/method.md section 2, training)."""

    lr: float = field(default=2e-3, metadata=_help("peak learning rate"))
    epochs: int = field(default=2, metadata=_help("epochs over each task's training set"))
    batch_size: int = field(default=16, metadata=_help("samples per optimiser step"))
    warmup_ratio: float = field(default=0.03, metadata=_help("share of steps of linear warm-up"))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay"))
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping; 0 disables"))
    max_steps: int = field(default=0, metadata=_help("cap on steps per stage; 0 = no cap"))
    mixed_precision: str = field(default="no", metadata={**LATER, **_help(
        "autocast of forward passes over float32 weights: no, bf16 or fp16 (fp16 with a "
        "gradient scaler); docs/scale.md")})
    grad_accum: int = field(default=1, metadata={**LATER, **_help(
        "micro-batches each process splits its share of a batch into (less memory; the step's "
        "gradient is the same up to float rounding)")})
    grad_checkpointing: bool = field(default=False, metadata={**LATER, **_help(
        "recompute activations in the backward pass (less memory, about a third more time)")})


@dataclass(frozen=True)
class LoraConfig:
    """LoRA shape used by the sequential-LoRA baseline (docs/method.md section 2)."""

    r: int = field(default=4, metadata=_help("rank"))
    alpha: float = field(default=8.0, metadata=_help("scaling numerator: delta W = alpha/r B A"))
    dropout: float = field(default=0.05, metadata=_help("dropout on the LoRA input"))
    modules: str = field(
        default="all",
        metadata=_help("which per-layer linear modules get LoRA: all or candidates"),
    )


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation after every stage."""

    batch_size: int = field(default=96, metadata=_help("samples per generation batch"))
    max_new_tokens: int = field(default=24, metadata=_help("generation length cap"))
    cider_scale: float = field(
        default=10.0,
        metadata=_help("CIDEr-D is multiplied by this; 10 puts a perfect caption at 100"),
    )
    general: bool = field(default=True, metadata=_help("also score the held-out general set"))


@dataclass(frozen=True)
class PretrainConfig:
    """Pre-training of the embedded tiny model on the base mix (dmole_lab.models.pretrain)."""

    vision_steps: int = field(default=1200, metadata=_help("phase 1: vision-tower steps"))
    vision_lr: float = field(default=2e-3, metadata=_help("phase 1: peak learning rate"))
    vision_batch_size: int = field(default=64, metadata=_help("phase 1: images per step"))
    steps: int = field(default=5000, metadata=_help("phase 2: projector + LM steps"))
    batch_size: int = field(default=32, metadata=_help("phase 2: samples per step"))
    lr: float = field(default=1e-3, metadata=_help("phase 2: peak learning rate"))
    n_samples: int = field(default=32000, metadata=_help("size of the base-mix training set"))
    out: str = field(default="data/tiny-llava", metadata=_help("where the checkpoint goes"))


@dataclass(frozen=True)
class ProbeConfig:
    """Sensitivity probing (docs/method.md section 2 step 1) and per-step recording (section 5)."""

    proxies: tuple[str, ...] = field(
        default=("grad_norm", "grad_norm_per_param", "snip", "fisher"),
        metadata=_help("proxies: grad_norm (the paper's), grad_norm_per_param, snip, fisher"),
    )
    batches: int = field(default=0, metadata=_help("K+1 probe batches; 0 = K from probe.share"))
    share: float = field(default=0.01, metadata=_help("K = max(1, round(share x task batches))"))
    sweep: tuple[int, ...] = field(
        default=(1, 2, 4, 8, 16),
        metadata=_help("batch counts also stored by `dmole-lab probe` (for comparisons)"),
    )
    batch_size: int = field(default=0, metadata=_help("probe batch size; 0 = train.batch_size"))
    record_training: bool = field(
        default=True, metadata=_help("record per-tower grad norm and update size every step"))
    record_every: int = field(default=1, metadata=_help("record every N-th training step"))


#: How the router picks experts at test time (docs/method.md section 2, "Inference").
ROUTING_MODES = ("batch", "sample")
#: How training batches count an earlier task's support (dmole_lab.dmole.router.Router).
TRAIN_ROUTING = {
    "voters": "released code: votes / votes cast (samples no earlier autoencoder accepts abstain)",
    "batch": "votes / batch size (abstaining samples count against joining)",
    "own": "only the current task's experts train and run (no earlier task joins)",
}

#: How a router autoencoder's output bias starts (dmole_lab.dmole.router.train_autoencoder).
OUTPUT_BIAS = ("mean", "default")


@dataclass(frozen=True)
class DMoleConfig:
    """D-MoLE's experts, curriculum, allocator and router (docs/method.md section 2)."""

    r: int = field(default=8, metadata=_help("rank of every expert"))
    alpha: float = field(default=16.0, metadata=_help("expert scaling numerator (alpha / r)"))
    dropout: float = field(default=0.05, metadata=_help("dropout on an expert's input"))
    budget: float = field(default=0.5, metadata=_help("experts per task / candidate modules"))
    vision_floor: float = field(default=0.25, metadata=_help("least vision share of budget"))
    curriculum: str = field(default="current", metadata=_help(
        "budget split: current (released), continual (extension), none (ablation v3)"))
    towers: str = field(default="both", metadata=_help(
        "towers given experts: both, llm (ablation v1), vision (ablation v2)"))
    allocator: str = field(default="dynamic", metadata=_help(
        "dynamic (top-k by sensitivity) or uniform (ablation v4)"))
    proxy: str = field(default="grad_norm", metadata=_help("sensitivity proxy that allocates"))
    router_hidden: int = field(default=128, metadata=_help("autoencoder hidden width"))
    router_quantile: float = field(default=0.95, metadata=_help("threshold quantile"))
    router_support: float = field(default=0.3, metadata=_help("least vote share to activate"))
    router_epochs: int = field(default=200, metadata=_help("autoencoder epochs (early stop)"))
    # Full batch at 3e-3 with the mean-initialised output bias: measured against mini-batches
    # of 64 at 1e-3 in benchmarks/README.md (router section): better routing, ~4x cheaper fit.
    router_batch_size: int = field(default=0, metadata=_help(
        "autoencoder samples per step; 0 = all of them (full batch)"))
    router_lr: float = field(default=3e-3, metadata=_help("autoencoder Adam learning rate"))
    router_output_bias: str = field(default="mean", metadata=_help(
        "autoencoder decoder bias start: mean (logit of the feature mean) or default"))
    routing: str = field(default="batch", metadata=_help(
        "inference routing: batch (released code) or sample"))
    train_routing: str = field(default="voters", metadata={**LATER, **_help(
        "training-time support: voters (released code), batch, or own (no earlier task joins)")})
    rounding: str = field(default="half_up", metadata={**LATER, **_help(
        "counts B and B rho_V: half_up (released code, int(x + 0.5)) or half_even (round)")})


@dataclass(frozen=True)
class LwfConfig:
    """LwF-LoRA: distillation from the model after the previous task (docs/method.md section 3)."""

    weight: float = field(default=1.0, metadata=_help("lambda on the distillation term"))
    temperature: float = field(default=2.0, metadata=_help("softmax temperature T"))


@dataclass(frozen=True)
class EwcConfig:
    """EWC-LoRA: quadratic penalty weighted by an online diagonal Fisher (docs/method.md section
    3)."""

    weight: float = field(default=5000.0, metadata=_help(
        "lambda in (lambda/2) sum F (theta - theta*)^2"))
    decay: float = field(default=1.0, metadata=_help("online Fisher: F = decay * F_old + F_task"))
    fisher_batches: int = field(default=8, metadata=_help("batches that estimate the Fisher"))


@dataclass(frozen=True)
class OLoraConfig:
    """O-LoRA: a LoRA per task kept orthogonal to the earlier ones (docs/method.md section 3)."""

    orth: float = field(default=0.5, metadata=_help("lambda1 on sum_i ||A_i A_t^T||_F^2"))
    l2: float = field(default=0.0, metadata=_help("lambda2 on ||theta_t||^2"))


@dataclass(frozen=True)
class MixtureConfig:
    """A mixture of LoRA experts on every LoRA module (MoELoRA, sparse MoLE, MoLA; docs/method.md
    section 3). Defaults keep the trainable budget of sequential LoRA: E experts of rank r/E."""

    experts: int = field(default=4, metadata=_help("experts per module (E)"))
    r: int = field(default=1, metadata=_help("rank of each expert"))
    alpha: float = field(default=8.0, metadata=_help(
        "scaling numerator: alpha / (E r) with E = experts, in every MoLA slice too"))
    dropout: float = field(default=0.05, metadata=_help("dropout on the experts' input"))
    top_k: int = field(default=0, metadata=_help("experts per token; 0 = dense softmax"))
    balance: float = field(default=0.0, metadata=_help("load-balancing loss weight"))
    layer_experts: tuple[int, ...] = field(default=(), metadata=_help(
        "experts per depth slice, shallow to deep (MoLA: 2,4,6,8); empty = E everywhere"))


@dataclass(frozen=True)
class BranchConfig:
    """BranchLoRA: shared trunk A, N branches B_i, per-task routers and keys (docs/method.md
    section 3)."""

    branches: int = field(default=8, metadata=_help("up-projections B_i per module (N)"))
    top_k: int = field(default=2, metadata=_help("branches per sample"))
    r: int = field(default=4, metadata=_help("rank of the shared trunk A"))
    alpha: float = field(default=8.0, metadata=_help("scaling numerator s = alpha / r"))
    dropout: float = field(default=0.05, metadata=_help("dropout on the trunk's input"))
    freeze: int = field(default=2, metadata=_help("most-used branches frozen after each task"))
    train_trunk: bool = field(default=True, metadata=_help(
        "keep training the shared A after the first task"))
    router_input: str = field(default="summary", metadata=_help(
        "what a router reads per sample: summary (LLM: the last prompt token; vision: the mean "
        "over the image) or first (the first position, docs/method.md; constant behind a "
        "BOS token)"))


@dataclass(frozen=True)
class RunConfig:
    """Everything a continual run depends on; its hash names the run folder."""

    method: str = field(default="seq-lora", metadata=_help("continual method"))
    seed: int = field(default=0, metadata=_help("seed of training (data has stream.seed)"))
    runs_dir: str = field(default="runs", metadata=_help("parent folder of run folders"))
    model: ModelConfig = field(default_factory=ModelConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    dmole: DMoleConfig = field(default_factory=DMoleConfig)
    lwf: LwfConfig = field(default_factory=LwfConfig)
    ewc: EwcConfig = field(default_factory=EwcConfig)
    olora: OLoraConfig = field(default_factory=OLoraConfig)
    moelora: MixtureConfig = field(default_factory=MixtureConfig)
    mole: MixtureConfig = field(default_factory=lambda: MixtureConfig(top_k=2, balance=0.01))
    mola: MixtureConfig = field(default_factory=lambda: MixtureConfig(
        top_k=2, balance=0.01, layer_experts=(2, 4, 6, 8)))
    branch: BranchConfig = field(default_factory=BranchConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


# ----------------------------------------------------------------------------- conversion


def to_dict(cfg: Any) -> dict:
    """Nested plain-dict view of a config (tuples become lists), for JSON and YAML."""
    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _hashed(cfg: Any) -> dict:
    """:func:`to_dict` without the :data:`LATER` keys that are at their default."""
    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            out[f.name] = _hashed(value)
        elif f.metadata.get("hash_default", True) or value != f.default:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def config_hash(cfg: RunConfig, exclude: tuple[str, ...] = ("runs_dir", "pretrain")) -> str:
    """Short stable hash of what determines a run's results (not where it is stored).

    Keys marked :data:`LATER` count only when set away from their default, so a key added to
    the config does not rename the runs made before it existed."""
    d = {k: v for k, v in _hashed(cfg).items() if k not in exclude}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def _resolve_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (from YAML or the command line) to ``tp`` or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(f"{key} expects a comma-separated list, got {value!r}")
        return tuple(_coerce(key, v, item_tp) for v in items)
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: union types are not supported in configs")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key} expects bool (true/false), got {value!r}")
    if tp in (int, float):
        # bools are ints to Python but never a number here; an int field refuses 1.5 and "1.5"
        ok = isinstance(value, (int, str)) or (tp is float and isinstance(value, float))
        if ok and not isinstance(value, bool):
            try:
                return tp(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} expects {tp.__name__}, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} expects str, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def allowed_keys(cfg_cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key a preset or override may set."""
    keys = []
    hints = _resolve_types(cfg_cls)
    for f in fields(cfg_cls):
        tp = hints[f.name]
        if is_dataclass(tp):
            keys += allowed_keys(tp, prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def _set(cfg: Any, parts: list[str], value: Any, full_key: str) -> Any:
    hints = _resolve_types(type(cfg))
    names = [f.name for f in fields(cfg)]
    head = parts[0]
    if head not in names:
        where = full_key[: len(full_key) - len(".".join(parts))].rstrip(".") or "the top level"
        raise ConfigError(
            f"unknown config key {full_key!r}: {head!r} is not a field of {where}; "
            f"allowed: {', '.join(names)}"
        )
    tp = hints[head]
    current = getattr(cfg, head)
    if is_dataclass(tp):
        if len(parts) == 1:
            if not isinstance(value, dict):
                raise ConfigError(f"{full_key} is a section; set its fields, e.g. {full_key}.x=...")
            new = current
            for k, v in value.items():
                new = _set(new, [k], v, f"{full_key}.{k}")
            return replace(cfg, **{head: new})
        return replace(cfg, **{head: _set(current, parts[1:], value, full_key)})
    if len(parts) > 1:
        raise ConfigError(f"unknown config key {full_key!r}: {head!r} has no sub-keys")
    return replace(cfg, **{head: _coerce(full_key, value, tp)})


def _apply(cfg: Any, overrides: dict[str, Any]) -> Any:
    """``cfg`` with dotted ``overrides`` applied (keys and types checked, ranges not yet)."""
    for key, value in overrides.items():
        cfg = _set(cfg, key.split("."), value, key)
    return cfg


def apply_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """Return ``cfg`` with dotted ``overrides`` applied; raise ConfigError on any bad key, type
    or value. A whole :class:`RunConfig` is checked once all overrides are in
    (:func:`check_config`), so overrides may move related keys together in any order."""
    cfg = _apply(cfg, overrides)
    if isinstance(cfg, RunConfig):
        check_config(cfg)
    return cfg


# ----------------------------------------------------------------------------- validation
#
# Every key has a rule: the range or the choices the code that reads it can work with. The
# modules that read a key keep their own checks (defence in depth for configs built in code);
# tests/test_validation.py holds the two in agreement. A rule's ``allowed`` text is what the
# one-line error message and ``dmole-lab config --keys`` show.


@dataclass(frozen=True)
class Rule:
    """What one key may hold: ``ok(value)`` decides, ``allowed`` says it in words."""

    allowed: str
    ok: Callable[[Any], bool]
    #: choice rules report as "KEY 'value' is not one of a, b" (the existing message form)
    choices: tuple[str, ...] = ()
    #: (key, value) -> message, for rules that say more precisely what is wrong
    explain: Callable[[str, Any], str] | None = None

    def problem(self, key: str, value: Any) -> str | None:
        """The one-line error message for ``value`` at ``key``, or None if it is allowed."""
        if self.ok(value):
            return None
        if self.explain is not None:
            return self.explain(key, value)
        if self.choices:
            return f"{key} {value!r} is not one of {', '.join(self.choices)}"
        return f"{key} must be {self.allowed}, got {_show(value)}"


def _show(value: Any) -> str:
    """A value as the user typed it: tuples as comma lists, strings quoted."""
    if isinstance(value, tuple):
        return repr(",".join(map(str, value)))
    return repr(value)


def _int(lo: int, hi: int | None = None, note: str = "") -> Rule:
    text = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
    return Rule(text + note, lambda v: v >= lo and (hi is None or v <= hi))


def _num(lo: float, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
         note: str = "") -> Rule:
    """A finite number above ``lo`` (and up to ``hi``), each bound open or closed."""
    if hi is None:
        text = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        text = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def ok(v: float) -> bool:
        return (math.isfinite(v) and (v > lo if lo_open else v >= lo)
                and (hi is None or (v < hi if hi_open else v <= hi)))

    return Rule(text + note, ok)


def _choice(values) -> Rule:
    values = tuple(values)
    return Rule(f"one of {', '.join(values)}", lambda v: v in values, choices=values)


def _names(values, noun: str, nouns: str, empty_ok: bool) -> Rule:
    """A comma list of distinct names from ``values`` (at least one unless ``empty_ok``);
    ``noun`` names unknown items ("task(s)"), ``nouns`` the allowed ones ("tasks")."""
    values = tuple(values)
    allowed = ", ".join(values)
    text = f"a comma list of distinct {nouns} from {allowed}" + (
        " (may be empty)" if empty_ok else " (at least one)")

    def explain(key: str, v: tuple) -> str:
        unknown = [x for x in v if x not in values]
        if unknown:
            return (f"{key} names unknown {noun} {', '.join(map(repr, unknown))}; "
                    f"allowed: {allowed}")
        if not v:
            return f"{key} is empty; allowed: at least one of {allowed}"
        dupes = sorted({x for x in v if v.count(x) > 1})
        return f"{key} repeats {', '.join(dupes)}; allowed: each name at most once"

    return Rule(text, lambda v: (empty_ok or len(v) > 0) and all(x in values for x in v)
                and len(set(v)) == len(v), explain=explain)


def _ints(lo: int, note: str = "") -> Rule:
    return Rule(f"a comma list of integers >= {lo}{note}", lambda v: all(x >= lo for x in v))


def _is_device(v: str) -> bool:
    head, sep, index = v.partition(":")
    if not sep:
        return v in ("auto", "cpu", "cuda")
    return head == "cuda" and index.isdigit()


_PATH = Rule("a non-empty path", lambda v: bool(v.strip()))
_SEED = _int(0, SEED_MAX)
_COUNT = _int(1)
_SHARE = _num(0.0, 1.0)
_DROPOUT = _num(0.0, 1.0, hi_open=True)
_POSITIVE = _num(0.0, lo_open=True)
_WEIGHT = _num(0.0)


def _mixture_rules(section: str) -> dict[str, Rule]:
    """The per-key rules of a MixtureConfig section (dmole_lab.methods.mixture.check_mixture)."""
    return {
        f"{section}.experts": _COUNT,
        f"{section}.r": _COUNT,
        f"{section}.alpha": _POSITIVE,
        f"{section}.dropout": _DROPOUT,
        f"{section}.top_k": _int(0, note=" (0 = dense softmax)"),
        f"{section}.balance": _num(0.0, note=" (0 = no load-balancing loss)"),
        f"{section}.layer_experts": _ints(1, " (empty = experts everywhere)"),
    }


#: The rule of every key (tests/test_validation.py asserts that no key lacks one).
RULES: dict[str, Rule] = {
    "method": Rule(f"one of {', '.join(sorted(METHOD_NAMES))}", lambda v: v in METHOD_NAMES,
                   explain=lambda key, v: f"unknown method {v!r}; allowed: "
                                          f"{', '.join(sorted(METHOD_NAMES))}"),
    "seed": _SEED,
    "runs_dir": _PATH,
    "model.path": _PATH,
    "model.dtype": _choice(DTYPE_NAMES),
    "model.device": Rule("auto, cpu, cuda or cuda:N (N = 0, 1, ...)", _is_device),
    "model.shape": Rule("empty or a shipped shape: "
                        + ", ".join(sorted(p.stem for p in SHAPES_DIR.glob("*.json"))),
                        lambda v: not v or (SHAPES_DIR / f"{v}.json").is_file()),
    "stream.tasks": _names(TASK_NAMES, "task(s)", "tasks", empty_ok=False),
    "stream.n_train": _COUNT,
    "stream.n_test": _COUNT,
    "stream.n_general": _COUNT,
    "stream.general": _names(GENERAL_SET_NAMES, "set(s)", "sets", empty_ok=True),
    "stream.seed": _SEED,
    "stream.file": Rule("empty (the synthetic stream) or the path of an existing .yaml / .yml "
                        "stream file", lambda v: not v or (
                            Path(v).suffix in (".yaml", ".yml") and resolve_path(v).is_file())),
    "train.lr": _POSITIVE,
    "train.epochs": _COUNT,
    "train.batch_size": _COUNT,
    "train.warmup_ratio": _SHARE,
    "train.weight_decay": _WEIGHT,
    "train.max_grad_norm": _num(0.0, note=" (0 = no clipping)"),
    "train.max_steps": _int(0, note=" (0 = no cap)"),
    "train.mixed_precision": _choice(MIXED_PRECISION),
    "train.grad_accum": _COUNT,
    "train.grad_checkpointing": Rule("true or false", lambda v: True),
    "lora.r": _COUNT,
    "lora.alpha": _POSITIVE,
    "lora.dropout": _DROPOUT,
    "lora.modules": _choice(MODULE_SELECTIONS),
    "eval.batch_size": _COUNT,
    "eval.max_new_tokens": _COUNT,
    "eval.cider_scale": _POSITIVE,
    "eval.general": Rule("true or false", lambda v: True),
    "probe.proxies": _names(PROXY_NAMES, "proxy", "proxies", empty_ok=False),
    "probe.batches": _int(0, note=" (0 = from probe.share)"),
    "probe.share": _SHARE,
    "probe.sweep": _ints(1),
    "probe.batch_size": _int(0, note=" (0 = train.batch_size)"),
    "probe.record_training": Rule("true or false", lambda v: True),
    "probe.record_every": _COUNT,
    "dmole.r": _COUNT,
    "dmole.alpha": _POSITIVE,
    "dmole.dropout": _DROPOUT,
    "dmole.budget": _num(0.0, 1.0, lo_open=True),
    "dmole.vision_floor": _SHARE,
    "dmole.curriculum": _choice(CURRICULA),
    "dmole.towers": _choice(TOWER_CHOICES),
    "dmole.allocator": _choice(ALLOCATORS),
    "dmole.proxy": _choice(PROXY_NAMES),
    "dmole.router_hidden": _COUNT,
    "dmole.router_quantile": _num(0.0, 1.0, lo_open=True),
    "dmole.router_support": _SHARE,
    "dmole.router_epochs": _COUNT,
    "dmole.router_batch_size": _int(0, note=" (0 = full batch)"),
    "dmole.router_lr": _POSITIVE,
    "dmole.router_output_bias": _choice(OUTPUT_BIAS),
    "dmole.routing": _choice(ROUTING_MODES),
    "dmole.train_routing": _choice(TRAIN_ROUTING),
    "dmole.rounding": _choice(ROUNDING),
    "lwf.weight": _WEIGHT,
    "lwf.temperature": _POSITIVE,
    "ewc.weight": _WEIGHT,
    "ewc.decay": _SHARE,
    "ewc.fisher_batches": _COUNT,
    "olora.orth": _WEIGHT,
    "olora.l2": _WEIGHT,
    **_mixture_rules("moelora"),
    **_mixture_rules("mole"),
    **_mixture_rules("mola"),
    "branch.branches": _COUNT,
    "branch.top_k": _COUNT,
    "branch.r": _COUNT,
    "branch.alpha": _POSITIVE,
    "branch.dropout": _DROPOUT,
    "branch.freeze": _int(0),
    "branch.train_trunk": Rule("true or false", lambda v: True),
    "branch.router_input": _choice(BRANCH_ROUTER_INPUTS),
    "pretrain.vision_steps": _COUNT,
    "pretrain.vision_lr": _POSITIVE,
    "pretrain.vision_batch_size": _COUNT,
    "pretrain.steps": _COUNT,
    "pretrain.batch_size": _COUNT,
    "pretrain.lr": _POSITIVE,
    # the base mix needs one object listing and one existence question at least
    "pretrain.n_samples": _int(2),
    "pretrain.out": _PATH,
}


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _field_types(cfg_cls: type = RunConfig, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> annotated type of every leaf field."""
    out = {}
    hints = _resolve_types(cfg_cls)
    for f in fields(cfg_cls):
        tp = hints[f.name]
        if is_dataclass(tp):
            out.update(_field_types(tp, prefix + f.name + "."))
        else:
            out[prefix + f.name] = tp
    return out


def _type_problem(key: str, value: Any, tp: Any) -> str | None:
    """A message if ``value`` is not of type ``tp`` (configs built in code skip the coercion)."""
    if typing.get_origin(tp) is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, tuple):
            return f"{key} expects a comma-separated list, got {value!r}"
        bad = [v for v in value if _type_problem(key, v, item_tp)]
        return _type_problem(key, bad[0], item_tp) if bad else None
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    return None if ok else f"{key} expects {_type_name(tp)}, got {value!r}"


def _cross_problems(cfg: RunConfig) -> list[str]:
    """Rules that tie keys together (after every key passed its own rule)."""
    out = []
    for section in ("moelora", "mole", "mola"):
        m: MixtureConfig = getattr(cfg, section)
        if m.layer_experts:
            low = max(1, m.top_k)
            if any(e < low for e in m.layer_experts):
                out.append(f"{section}.layer_experts must list integers >= max(1, "
                           f"{section}.top_k) = {low}, got {_show(m.layer_experts)}")
        elif m.top_k > m.experts:
            out.append(f"{section}.top_k must be an integer in 0..{section}.experts "
                       f"(= {m.experts}; 0 = dense softmax), got {m.top_k}")
    b = cfg.branch
    if b.top_k > b.branches:
        out.append(f"branch.top_k must be an integer in 1..branch.branches (= {b.branches}), "
                   f"got {b.top_k}")
    if b.freeze > b.branches:
        out.append(f"branch.freeze must be an integer in 0..branch.branches (= {b.branches}), "
                   f"got {b.freeze}")
    if cfg.train.grad_accum > cfg.train.batch_size:
        out.append(f"train.grad_accum must be an integer in 1..train.batch_size "
                   f"(= {cfg.train.batch_size}), got {cfg.train.grad_accum}")
    return out


def config_problems(cfg: RunConfig) -> list[str]:
    """Every problem of ``cfg`` as a one-line message (empty when it is valid): types, each
    key's rule (:data:`RULES`), then the rules that tie keys together."""
    out = []
    for key, tp in _field_types().items():
        value = _get(cfg, key)
        problem = _type_problem(key, value, tp) or RULES[key].problem(key, value)
        if problem:
            out.append(problem)
    return out + ([] if out else _cross_problems(cfg))


def check_config(cfg: RunConfig) -> RunConfig:
    """Raise ConfigError with the first problem of ``cfg`` (see :func:`config_problems`);
    return ``cfg`` unchanged when every key holds an allowed value."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(problems[0])
    return cfg


def allowed_values(key: str) -> str:
    """What ``key`` may hold, in words (e.g. "an integer >= 1")."""
    if key not in RULES:
        raise ConfigError(f"unknown config key {key!r}")
    return RULES[key].allowed


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict (e.g. :func:`to_dict` of a config) as dotted key -> value."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def list_presets() -> list[str]:
    """Names of the presets shipped in ``configs/``."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """Flat dotted dict of a preset by name (``configs/<name>.yaml``) or by path."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):  # a name (llava-1.5-7b has dots, no suffix)
        path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"preset {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"preset {path} must be a mapping of config keys")
    return flatten(data)


def parse_cli_overrides(args: list[str]) -> dict[str, str]:
    """Parse ``--a.b=value`` / ``--a.b value`` tokens into a dotted dict."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        tok = args[i]
        if not tok.startswith("--"):
            raise ConfigError(f"unexpected argument {tok!r}; overrides look like --train.lr=1e-4")
        tok = tok[2:]
        if "=" in tok:
            key, value = tok.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            key, value = tok, args[i + 1]
            i += 1
        else:
            raise ConfigError(f"override --{tok} has no value; write --{tok}=VALUE")
        out[key] = value
        i += 1
    return out


def build_config(preset: str | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The RunConfig of a preset plus overrides (either may be omitted), checked in full:
    a bad key, type or value raises ConfigError before anything is loaded or written."""
    cfg = RunConfig()
    if preset:
        cfg = _apply(cfg, load_preset(preset))
    return apply_overrides(cfg, overrides or {})  # checks the result as a whole


def resolve_path(path: str) -> Path:
    """A relative path is taken from the working directory if it exists, else the project root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p


def describe(cfg_cls: type = RunConfig, prefix: str = "",
             defaults: Any = None) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every field, for ``--help`` style listings.

    A section's defaults are read from its parent's default instance, since sections of the
    same class can default differently (``mole`` and ``mola`` are both MixtureConfig)."""
    rows = []
    hints = _resolve_types(cfg_cls)
    defaults = cfg_cls() if defaults is None else defaults
    for f in fields(cfg_cls):
        tp = hints[f.name]
        if is_dataclass(tp):
            rows += describe(tp, prefix + f.name + ".", getattr(defaults, f.name))
        else:
            rows.append((prefix + f.name, _type_name(tp), getattr(defaults, f.name),
                         f.metadata.get("help", "")))
    return rows


__all__ = [
    "ConfigError", "RunConfig", "ModelConfig", "StreamConfig", "TrainConfig", "LoraConfig",
    "EvalConfig", "ProbeConfig", "PretrainConfig", "LwfConfig", "EwcConfig", "OLoraConfig",
    "MixtureConfig", "BranchConfig", "apply_overrides", "build_config", "load_preset",
    "parse_cli_overrides", "config_hash", "to_dict", "allowed_keys", "resolve_path",
    "list_presets", "describe", "DEFAULT_TASKS", "check_config", "config_problems",
    "allowed_values", "RULES", "Rule", "METHOD_NAMES", "TASK_NAMES", "GENERAL_SET_NAMES",
    "PROXY_NAMES", "DTYPE_NAMES", "MODULE_SELECTIONS", "BRANCH_ROUTER_INPUTS",
]
