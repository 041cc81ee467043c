"""A linear layer with per-task LoRA experts behind binary gates (docs/method.md section 2).

h = W0 x + (alpha / r) * sum over active tasks j that own an expert here of B_j A_j dropout(x).
Experts live in ``nn.ModuleDict``s keyed by the owning task (PEFT's layout: ``lora_A``,
``lora_B``, ``scaling``, ``base_layer``), so PEFT-aware tools and the tower recorders read them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import AdapterLinear, AdapterShape


class Gates:
    """Which tasks' experts are on; one instance is shared by every expert layer of a model.

    ``set(tasks)`` turns the same tasks on for the whole batch (the released code's batch-level
    routing); ``set_per_sample(routes)`` gives each sample of the batch its own tasks, as a
    (batch,) 0/1 weight per task.
    """

    def __init__(self):
        self.weights: dict[str, float | torch.Tensor] = {}

    def set(self, tasks) -> None:
        """Activate ``tasks`` for every sample."""
        self.weights = {t: 1.0 for t in tasks}

    def set_per_sample(self, routes: list[list[str]]) -> None:
        """Activate ``routes[b]`` for sample b."""
        tasks = sorted({t for r in routes for t in r})
        self.weights = {t: torch.tensor([float(t in r) for r in routes]) for t in tasks}

    def clear(self) -> None:
        """All experts off: the base model."""
        self.weights = {}

    @property
    def active(self) -> list[str]:
        """Tasks with an expert switched on for at least one sample."""
        return list(self.weights)


class ExpertLinear(AdapterLinear):
    """``base_layer`` (frozen nn.Linear) plus LoRA experts keyed by task."""

    def __init__(self, base_layer: nn.Linear, gates: Gates):
        super().__init__(base_layer)
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.scaling: dict[str, float] = {}
        self.gates = gates
        self.train(base_layer.training)

    def add_expert(self, task: str, shape: AdapterShape) -> None:
        """A new expert of ``task`` of ``shape``: A Kaiming-uniform, B = 0 (PEFT's
        initialisation)."""
        if task in self.lora_A:
            raise ValueError(f"task {task!r} already has an expert here")
        r, w = shape.r, self.base_layer.weight
        A = nn.Linear(self.base_layer.in_features, r, bias=False, device=w.device, dtype=w.dtype)
        B = nn.Linear(r, self.base_layer.out_features, bias=False, device=w.device,
                      dtype=w.dtype)
        nn.init.kaiming_uniform_(A.weight, a=math.sqrt(5))
        nn.init.zeros_(B.weight)
        self.lora_A[task], self.lora_B[task] = A, B
        self.lora_dropout[task] = (nn.Dropout(shape.dropout) if shape.dropout > 0
                                   else nn.Identity())
        self.scaling[task] = shape.scaling
        self.lora_dropout[task].train(self.training)  # new modules default to training mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """W0 x plus every gated-on expert of this module; x: (batch, ..., in_features)."""
        out = self.base_layer(x)
        for task, w in self.gates.weights.items():
            if task not in self.lora_A:
                continue
            y = self.lora_B[task](self.lora_A[task](self.lora_dropout[task](x)))
            y = y * self.scaling[task]
            if isinstance(w, torch.Tensor):  # per-sample gates
                if x.shape[0] != w.shape[0]:  # several images (tiles) per sample
                    w = w.repeat_interleave(x.shape[0] // w.shape[0])
                y = y * w.to(y).view(-1, *([1] * (y.ndim - 1)))
            out = out + y
        return out

    def extra_repr(self) -> str:
        return f"experts={list(self.lora_A)}"
