"""O-LoRA: a new LoRA per task in a subspace orthogonal to the earlier ones (docs/method.md section
3).

Every module of ``anatomy.select(lora.modules)`` gets, for each task t, a LoRA (A_t, B_t) of the
``lora`` section's rank; the earlier tasks' LoRAs stay frozen and switched on, so the model at
task t is W0 + sum_{i<=t} (alpha / r) B_i A_i. The loss is

    L = L_t + lambda1 * sum_modules sum_{i<t} ||A_i A_t^T||_F^2 + lambda2 * ||theta_t||^2

with lambda1 = ``olora.orth``, lambda2 = ``olora.l2`` and theta_t = task t's A and B factors.
A_i: (r, in_features), so A_i A_t^T is (r, r). At test time every learned task's LoRA is active
(their sum, no task id). LoRAs are :class:`dmole_lab.experts.Experts` keyed by task; each stage
saves its task's factors (and exports them as a PEFT adapter when the run has a folder).
"""

from __future__ import annotations

import torch

from dmole_lab.experts import AdapterShape, Experts

from .base import ContinualMethod, register


def orthogonality(experts: Experts, task: str, earlier: list[str]) -> torch.Tensor:
    """sum over modules and i in ``earlier`` of ||A_i A_task^T||_F^2 (a scalar)."""
    total = None
    for layer in experts.layers().values():
        if task not in layer.lora_A:
            continue
        a_t = layer.lora_A[task].weight
        for i in earlier:
            if i in layer.lora_A:
                term = (layer.lora_A[i].weight @ a_t.T).pow(2).sum()
                total = term if total is None else total + term
    if total is None:  # no module shared with an earlier task
        return torch.zeros((), device=next(experts.model.parameters()).device)
    return total


@register("o-lora")
class OLoRA(ContinualMethod):
    """A LoRA per task, older ones frozen and on; new A kept orthogonal to the old ones."""

    def __init__(self, cfg, anatomy):
        super().__init__(cfg, anatomy)
        self.expert_cfg = AdapterShape.of(cfg.lora, "lora")
        self.experts: Experts | None = None
        self.learned: list[str] = []
        self.current: str | None = None

    def _experts(self, model) -> Experts:
        if self.experts is None or self.experts.model is not model:
            self.experts = Experts(model, self.expert_cfg)
        return self.experts

    def begin_task(self, model, t, task, data):
        """Add t's LoRA on every selected module; train it with all earlier LoRAs on, frozen."""
        experts = self._experts(model)
        experts.add(task, [m.path for m in self.anatomy.select(self.cfg.lora.modules)])
        experts.train_only(task)
        experts.activate([*self.learned, task])
        self.current = task
        return model

    def trainable_parameters(self, model):
        """The current task's A and B factors."""
        return self.experts.parameters(self.current)

    def extra_loss(self, model, batch, outputs):
        """lambda1 * orthogonality to earlier tasks + lambda2 * ||theta_t||^2 (None if both 0)."""
        c = self.cfg.olora
        terms = []
        if c.orth and self.learned:
            terms.append(c.orth * orthogonality(self.experts, self.current, self.learned))
        if c.l2:
            terms.append(c.l2 * sum(p.pow(2).sum() for p in
                                    self.experts.parameters(self.current)))
        return sum(terms) if terms else None

    def end_task(self, model, t, task):
        """Freeze t's LoRA, switch on every learned LoRA for evaluation; save t's factors."""
        self.experts.train_only(None)
        self.learned.append(task)
        self.experts.activate(self.learned)
        self.current = None
        if self.artifacts is not None:
            self.experts.save_pretrained(task, self.artifacts / "adapters" / task,
                                         self.cfg.model.path)
        return model, self.experts.state_dict(task)

    def restore_task(self, model, t, task, state):
        """Re-create t's (frozen) LoRA from its saved factors; all learned LoRAs on."""
        experts = self._experts(model)
        experts.load_state_dict(task, state)
        self.learned.append(task)
        experts.activate(self.learned)
        return model

    def info(self) -> dict:
        """The stage's figures, plus how many tasks' LoRAs the evaluated model sums."""
        return {**super().info(), "active_loras": len(self.learned)}
