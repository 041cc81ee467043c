"""Mixture-of-LoRA-experts baselines: MoELoRA, sparse MoLE and MoLA (docs/method.md section 3).

CoIN's protocol for all three: at task 1 every module of ``lora.modules`` in both towers gets a
:class:`dmole_lab.experts.mixture.MixtureLinear`; its experts and router are shared by all tasks
and keep training on every task (no task id, nothing frozen beyond the base weights), so only
the router's soft specialisation stands between a task and its successors. The three differ
only in their config section: dense softmax gates (``moelora``), top-2 gates plus a
load-balancing loss (``mole``), and top-2 with more experts in deeper layers (``mola``).
Each stage saves the whole mixture, so a resumed run reloads the last finished stage's weights.
"""

from __future__ import annotations

import numpy as np
import torch

from dmole_lab.config import ConfigError, MixtureConfig
from dmole_lab.experts.base import AdapterShape
from dmole_lab.experts.mixture import (
    ADAPTER_KEYS,
    MixtureLinear,
    add_mixtures,
    experts_at,
    mixture_layers,
)

from .base import ContinualMethod, register


def check_mixture(cfg: MixtureConfig, section: str) -> None:
    """Raise ConfigError naming the bad value of ``cfg`` (section ``section``) and the range."""

    def bad(key, value, allowed):
        raise ConfigError(f"{section}.{key}={value!r} is not allowed: {allowed}")

    if cfg.experts < 1:
        bad("experts", cfg.experts, "need experts >= 1")
    try:
        AdapterShape.of(cfg, section)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.balance < 0:
        bad("balance", cfg.balance, "need balance >= 0 (0 = no load-balancing loss)")
    if cfg.top_k < 0:
        bad("top_k", cfg.top_k, "need top_k >= 0 (0 = dense softmax)")
    if cfg.layer_experts:
        low = [e for e in cfg.layer_experts if e < max(1, cfg.top_k)]
        if low:
            bad("layer_experts", cfg.layer_experts,
                f"every entry must be >= max(1, top_k={cfg.top_k}); {low} are not")
    elif cfg.top_k > cfg.experts:
        bad("top_k", cfg.top_k, f"need 0 <= top_k <= experts={cfg.experts} (0 = dense)")


class MixtureMethod(ContinualMethod):
    """Shared routed LoRA experts on every module, trained through the whole stream."""

    #: config section (a MixtureConfig) read by the subclass
    section = ""

    def __init__(self, cfg, anatomy):
        super().__init__(cfg, anatomy)
        self.mix: MixtureConfig = getattr(cfg, self.section)
        check_mixture(self.mix, self.section)
        self.layers: dict[str, MixtureLinear] = {}
        self.balance_log: list[float] = []

    def _ensure_mixtures(self, model) -> dict[str, MixtureLinear]:
        """The model's mixtures, injected on ``lora.modules`` of both towers if it has none."""
        self.layers = mixture_layers(model)
        if not self.layers:
            infos = self.anatomy.select(self.cfg.lora.modules)
            n_layers = {tower: self.anatomy.n_layers(tower) for tower in {m.tower for m in infos}}
            self.layers = add_mixtures(model, infos, self.mix, n_layers)
        return self.layers

    def experts_per_layer(self) -> dict[tuple[str, int], int]:
        """(tower, layer) -> experts per module there, as the config places them (MoLA)."""
        return {(m.tower, m.layer): experts_at(m.layer, self.anatomy.n_layers(m.tower), self.mix)
                for m in self.anatomy.select(self.cfg.lora.modules)}

    def begin_task(self, model, t, task, data):
        """Inject the mixtures at the first task; later tasks keep training the same ones."""
        for layer in self._ensure_mixtures(model).values():
            for p in layer.adapter_parameters():
                p.requires_grad_(True)
        self.balance_log = []
        return model

    def trainable_parameters(self, model):
        """Every expert and router of every mixture (the base weights stay frozen)."""
        return [p for layer in self.layers.values() for p in layer.adapter_parameters()]

    def extra_loss(self, model, batch, outputs):
        """balance * mean over layers of N sum_i f_i P_i (docs/method.md section 3); None if 0.

        The layers' mean is logged whatever the weight, so dense MoELoRA reports its (top-1)
        load imbalance too.
        """
        losses = [m.balance_loss for m in self.layers.values() if m.balance_loss is not None]
        if not losses:
            return None
        mean = torch.stack(losses).mean()
        self.balance_log.append(float(mean.detach()))
        if self.mix.balance <= 0:
            return None
        return self.mix.balance * mean.to(outputs.loss.dtype)

    def state(self) -> dict[str, torch.Tensor]:
        """Every mixture's A, B and router, keyed ``<path>.<expert_A|expert_B|router.weight>``."""
        return {f"{path}.{k}": v for path, layer in self.layers.items()
                for k, v in layer.adapter_state_dict().items()}

    def end_task(self, model, t, task):
        """Save the whole mixture as it is after task ``t``; the model stays wrapped."""
        for layer in self.layers.values():
            layer.balance_loss = None  # drop the last step's graph
        experts: dict[str, int] = {}
        for path, layer in self.layers.items():
            key = f"experts_{self.anatomy.by_path[path].tower}"
            experts[key] = experts.get(key, 0) + layer.experts
        self.stage_info = dict(experts)
        if self.balance_log:
            self.stage_info["balance_loss"] = float(np.mean(self.balance_log))
        return model, self.state()

    def restore_task(self, model, t, task, state):
        """Load the mixture saved after task ``t`` (injecting it first on a fresh model)."""
        layers = self._ensure_mixtures(model)
        expected = {f"{path}.{k}" for path in layers for k in ADAPTER_KEYS}
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"saved mixture of stage {t} does not fit this model: missing "
                             f"{missing[:3]}, unexpected {extra[:3]}")
        for path, layer in layers.items():
            layer.load_adapter_state_dict({k: state[f"{path}.{k}"] for k in ADAPTER_KEYS})
        return model



@register("moelora")
class MoELoRA(MixtureMethod):
    """MoELoRA (CoIN): dense softmax router over the experts (config section ``moelora``)."""

    section = "moelora"


@register("mole")
class SparseMoLE(MixtureMethod):
    """Sparse MoLE: top-k gates renormalised, load-balancing loss (config section ``mole``)."""

    section = "mole"


@register("mola")
class MoLA(MixtureMethod):
    """MoLA: sparse MoLE with more experts in deeper layers (config section ``mola``)."""

    section = "mola"
