"""Per-step recorders of training dynamics per tower (docs/method.md section 5, Figure 2).

:class:`TowerDynamics` is a :class:`dmole_lab.training.stage.TrainCallback` recording, every
``every`` steps and for each tower (vision, llm, projector when trained):

- ``grad_norm``: sqrt(sum ||grad||_F^2) over the trainable parameters of the tower, read after
  the backward pass and before clipping;
- ``rel_update``: ||Delta W||_F / ||W0||_F over the tower's LoRA modules, Delta W = (alpha/r) B A
  summed over the module's trainable adapters, read after the optimiser step.

Cost is kept to a few tensor ops per step: gradient norms use one fused ``_foreach_norm`` per
tower, and ||B A||_F^2 = sum((B^T B) * (A A^T)) needs only r x r products, batched over modules
of equal shape.
"""

from __future__ import annotations

from collections import defaultdict

import pandas as pd
import torch

from dmole_lab.models.anatomy import Anatomy
from dmole_lab.training.stage import TrainCallback


def lora_modules(model: torch.nn.Module):
    """(name, module) of every PEFT-shaped LoRA layer: ``lora_A``/``lora_B`` dicts + ``scaling``."""
    for name, mod in model.named_modules():
        if isinstance(getattr(mod, "lora_A", None), torch.nn.ModuleDict) and hasattr(
                mod, "scaling"):
            yield name, mod


def _base_weight(mod) -> torch.Tensor:
    base = getattr(mod, "base_layer", mod)
    return base.weight


class TowerDynamics(TrainCallback):
    """Record per-tower gradient norm and relative LoRA update size while a stage trains."""

    def __init__(self, model: torch.nn.Module, anatomy: Anatomy, every: int = 1):
        if every < 1:
            raise ValueError(f"record every must be >= 1, got {every}")
        self.every = every
        self.rows: list[tuple[int, str, str, float]] = []
        grads: dict[str, list] = defaultdict(list)
        for name, p in model.named_parameters():
            if p.requires_grad:
                grads[anatomy.tower_of(name)].append(p)
        self.grad_params = dict(grads)
        # group trainable adapters by (tower, shape) so each group is one batched product
        groups: dict[tuple, list] = defaultdict(list)
        w0_sq: dict[str, float] = defaultdict(float)
        for name, mod in lora_modules(model):
            tower = anatomy.tower_of(name)
            active = [k for k, a in mod.lora_A.items() if a.weight.requires_grad]
            if not active:
                continue
            w0_sq[tower] += float(_base_weight(mod).detach().float().pow(2).sum())
            for k in active:
                A, B = mod.lora_A[k].weight, mod.lora_B[k].weight
                groups[(tower, tuple(A.shape), tuple(B.shape))].append(
                    (A, B, float(mod.scaling[k])))
        self.groups = dict(groups)
        self.w0_norm = {t: v ** 0.5 for t, v in w0_sq.items()}

    def on_backward(self, step: int, model: torch.nn.Module) -> None:
        """Per-tower gradient norm of this step (raw, before clipping)."""
        if step % self.every:
            return
        with torch.no_grad():
            for tower, ps in self.grad_params.items():
                gs = [p.grad for p in ps if p.grad is not None]
                if gs:
                    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(gs)))
                    self.rows.append((step, tower, "grad_norm", float(norm)))

    def on_step(self, step: int, loss: float, model: torch.nn.Module) -> None:
        """Per-tower ||Delta W|| / ||W0|| after this step's update."""
        if step % self.every:
            return
        sq: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for (tower, _, _), items in self.groups.items():
                A = torch.stack([a for a, _, _ in items])  # (m, r, in)
                B = torch.stack([b for _, b, _ in items])  # (m, out, r)
                s = torch.tensor([c for _, _, c in items], dtype=A.dtype, device=A.device)
                part = ((B.transpose(1, 2) @ B) * (A @ A.transpose(1, 2))).sum((1, 2))
                sq[tower] = sq.get(tower, 0.0) + (s.pow(2) * part).sum()
        for tower, v in sq.items():
            self.rows.append((step, tower, "rel_update", float(v) ** 0.5 / self.w0_norm[tower]))

    def table(self) -> pd.DataFrame:
        """Tidy table: step, tower, quantity, value."""
        return pd.DataFrame(self.rows, columns=["step", "tower", "quantity", "value"])
