"""What every adapter layer shares: a frozen base ``nn.Linear`` wrapped in place, and the
shape (rank, scaling numerator, dropout) of its LoRA factors.

Three adapter layers build on this: :class:`~dmole_lab.experts.layer.ExpertLinear` (task-keyed
experts behind gates: D-MoLE, O-LoRA), :class:`~dmole_lab.experts.mixture.MixtureLinear` (routed
mixtures: MoELoRA, sparse MoLE, MoLA) and :class:`~dmole_lab.experts.branch.BranchLinear`
(BranchLoRA). Sequential LoRA and its relatives use PEFT's own layers with the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import torch
from torch import nn


@dataclass(frozen=True)
class AdapterShape:
    """Rank r, scaling numerator alpha and input dropout of LoRA factors (docs/method.md
    section 2 step 3): Delta W x = (alpha / r) B A dropout(x), A: (r, in), B: (out, r).

    Every config section that builds adapters (``lora``, ``dmole``, ``olora`` through
    ``dmole``'s shape, ``moelora`` / ``mole`` / ``mola``, ``branch``) has the fields ``r``,
    ``alpha`` and ``dropout``; :meth:`of` reads them from any of them.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05

    def __post_init__(self):
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"r={self.r!r}; allowed: an integer >= 1")
        if not self.alpha > 0:
            raise ValueError(f"alpha={self.alpha!r}; allowed: a number > 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout!r}; allowed: 0 <= dropout < 1")

    @classmethod
    def of(cls, section, name: str = "") -> "AdapterShape":
        """The shape in a config section (any object with ``r``, ``alpha``, ``dropout``); a
        bad value raises ValueError naming ``name.key``."""
        try:
            return cls(section.r, section.alpha, section.dropout)
        except ValueError as e:
            raise ValueError(f"{name}.{e}" if name else str(e)) from None

    @property
    def scaling(self) -> float:
        """alpha / r, the factor on B A x."""
        return self.alpha / self.r

    def peft_config(self, target_modules: list[str], base_model: str | None = None):
        """The equivalent ``peft.LoraConfig`` on ``target_modules`` (native module paths)."""
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=target_modules, bias="none",
                          base_model_name_or_path=base_model)

    def save_peft_config(self, directory: Path, target_modules: list[str],
                         base_model: str | None = None) -> None:
        """Write ``adapter_config.json`` of a LoRA on ``target_modules`` (native module paths)."""
        self.peft_config(sorted(target_modules), base_model).save_pretrained(str(directory))


class AdapterLinear(nn.Module):
    """A frozen ``base_layer`` (nn.Linear) whose output an adapter adds to.

    Subclasses add their adapter parameters and ``forward``. The base layer keeps its native
    parameter names under ``base_layer.`` (PEFT's layout), and ``weight``, ``in_features`` and
    ``out_features`` read through to it, so code that inspects a linear layer keeps working.
    """

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"an adapter wraps nn.Linear, not {type(base_layer).__name__}")
        self.base_layer = base_layer

    @property
    def weight(self) -> torch.Tensor:
        """The base weight."""
        return self.base_layer.weight

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features


L = TypeVar("L", bound=AdapterLinear)


def swap_linear(model: nn.Module, path: str, build: Callable[[nn.Linear], L]) -> L:
    """Replace the ``nn.Linear`` at native module ``path`` of ``model`` in place by
    ``build(linear)``; returns the new layer. The model keeps its class, its ``generate`` and
    every other module path."""
    mod = model.get_submodule(path)
    if not isinstance(mod, nn.Linear):
        raise TypeError(f"{path} is a {type(mod).__name__}, not nn.Linear")
    layer = build(mod)
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, layer)
    return layer


__all__ = ["AdapterLinear", "AdapterShape", "swap_linear"]
