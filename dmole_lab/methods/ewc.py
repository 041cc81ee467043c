"""EWC-LoRA: one LoRA carried along, anchored by an online diagonal Fisher (docs/method.md section
3).

    L = L_t + (lambda / 2) * sum_j F_j (theta_j - theta*_j)^2      over the LoRA parameters j

with lambda = ``ewc.weight``. At the end of each task the diagonal empirical Fisher is estimated
as the mean, over ``ewc.fisher_batches`` batches of the task's training data, of the squared
gradient of the batch loss (answer-token mean cross-entropy), and accumulated online:
F = decay * F_old + F_task (``ewc.decay``); theta* is the adapter as it is after the task. The
penalty therefore starts at task 2. Each stage saves the adapter, F and theta*, so a resumed run
continues exactly.

Choice of lambda (the default ``ewc.weight`` = 5000 was kept, after a measurement): on the tiny
model with the tiny preset's optimiser (lr 5e-3, batch 16), caption then grounding, 320 samples
and 40 steps per task, the Fisher is small (mean 8e-6 per parameter after caption, median 2e-7),
so lambda must be large. Without the penalty, 0.5 * sum F (theta - theta*)^2 grows to 4.8e-4 over
task 2 (x 5000 = 2.4, above the task loss of 1.6). With lambda = 5000 the drift is held about 8x
smaller and the penalty stays at 0.2-0.4 against a task loss of 3.5 -> 1.7 (10-20% of the total),
while task 2's final loss is only 5% higher (1.71 vs 1.63): the penalty binds without dominating.
Each stage reports ``ewc_penalty_mean`` (the weighted penalty, averaged over its steps) in the
manifest to check this on other models.
"""

from __future__ import annotations

import numpy as np
import torch

from dmole_lab.data.encode import Encoded, placement, to_device, train_batch
from dmole_lab.seeding import stage_seed

from .base import register
from .seq_ft import SequentialFT

FISHER, THETA = "ewc.fisher.", "ewc.theta."


def lora_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Name -> parameter of every LoRA factor of a PEFT-wrapped model (the EWC parameters)."""
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


def fisher_diagonal(model: torch.nn.Module, params: dict[str, torch.nn.Parameter],
                    data: Encoded, batches: int, batch_size: int,
                    seed: int) -> tuple[dict[str, torch.Tensor], int]:
    """Diagonal empirical Fisher: mean over batches of (d batch loss / d theta_j)^2.

    The batches are the first ``batches`` of a seeded permutation of ``data`` cut into batches
    of ``batch_size`` (fewer if the data runs out), evaluated with dropout off. Returns
    ({name: tensor shaped like the parameter}, number of batches used).
    """
    device, dtype = placement(model)
    order = np.random.default_rng(seed).permutation(len(data))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)][:batches]
    names = list(params)
    fisher = {n: torch.zeros_like(params[n], dtype=torch.float32) for n in names}
    was_training = model.training
    model.eval()
    with torch.enable_grad():
        for idx in chunks:
            loss = model(**to_device(train_batch(data, idx), device, dtype)).loss
            grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
            for n, g in zip(names, grads):
                if g is not None:
                    fisher[n] += g.detach().float() ** 2
    model.train(was_training)
    return {n: f / max(1, len(chunks)) for n, f in fisher.items()}, len(chunks)


def ewc_penalty(params: dict[str, torch.nn.Parameter], fisher: dict[str, torch.Tensor],
                theta: dict[str, torch.Tensor], weight: float) -> torch.Tensor:
    """(weight / 2) * sum_j F_j (theta_j - theta*_j)^2, a scalar with gradient to ``params``."""
    total = sum((fisher[n] * (p.float() - theta[n]) ** 2).sum() for n, p in params.items())
    return 0.5 * weight * total


@register("ewc")
class EWC(SequentialFT):
    """Seq-FT's single LoRA plus a Fisher-weighted pull towards its value after each task."""

    def __init__(self, cfg, anatomy):
        super().__init__(cfg, anatomy)
        self.fisher: dict[str, torch.Tensor] = {}
        self.theta: dict[str, torch.Tensor] = {}
        self.params: dict[str, torch.nn.Parameter] = {}
        self.data: Encoded | None = None
        self._sum, self._count = 0.0, 0

    def begin_task(self, model, t, task, data):
        """Wrap the model on task 1 (the LoRA is then carried); keep the task's data."""
        model = super().begin_task(model, t, task, data)
        self.params, self.data = lora_parameters(model), data
        self.stage_info, self._sum, self._count = {}, 0.0, 0
        return model

    def extra_loss(self, model, batch, outputs):
        """The EWC penalty; None on task 1 (no Fisher yet)."""
        if not self.fisher:
            return None
        penalty = ewc_penalty(self.params, self.fisher, self.theta, self.cfg.ewc.weight)
        self._sum += float(penalty.detach())
        self._count += 1
        return penalty

    def end_task(self, model, t, task):
        """Estimate this task's Fisher, accumulate it online, anchor theta*; save all three."""
        model, state = super().end_task(model, t, task)
        c = self.cfg.ewc
        params = lora_parameters(model)
        f_task, used = fisher_diagonal(model, params, self.data, c.fisher_batches,
                                       self.cfg.train.batch_size, stage_seed(self.cfg.seed, t))
        self.fisher = {n: f_task[n] + c.decay * self.fisher[n] if n in self.fisher else f_task[n]
                       for n in params}
        self.theta = {n: p.detach().float().clone() for n, p in params.items()}
        self.data = None
        self.stage_info = {"ewc_fisher_batches": used,
                           "ewc_fisher_mean": float(torch.cat(
                               [f.flatten() for f in self.fisher.values()]).mean())}
        if self._count:
            self.stage_info["ewc_penalty_mean"] = self._sum / self._count
        state.update({FISHER + n: f.clone() for n, f in self.fisher.items()})
        state.update({THETA + n: v.clone() for n, v in self.theta.items()})
        return model, state

    def restore_task(self, model, t, task, state):
        """Load the adapter, F and theta* saved after task ``t``."""
        adapter = {k: v for k, v in state.items() if not k.startswith("ewc.")}
        model = super().restore_task(model, t, task, adapter)
        device = next(model.parameters()).device
        self.fisher = {k.removeprefix(FISHER): v.to(device) for k, v in state.items()
                       if k.startswith(FISHER)}
        self.theta = {k.removeprefix(THETA): v.to(device) for k, v in state.items()
                      if k.startswith(THETA)}
        return model

