"""LwF-LoRA: sequential LoRA plus distillation from the model after the previous task.

docs/method.md section 3:

    L = L_t + lambda * T^2 * mean over answer tokens of KL(softmax(z_old / T) || softmax(z_new / T))

with lambda = ``lwf.weight`` and T = ``lwf.temperature``. As in sequential LoRA, each task gets a
fresh PEFT LoRA that is merged into the base weights after the task, so while task t trains the
base weights *are* the model after task t-1: the old logits z_old are the same model's logits
with the adapter switched off (``model.disable_adapter()``, no gradient, dropout off), exact and
without a second copy of the model. Task 1 has no previous task, hence no distillation term.

The KL is taken on the positions that predict an answer token: logits at position p predict
token p+1, so the positions are those where ``labels[:, 1:] != -100`` over ``logits[:, :-1]``
(the same tokens the task loss averages over).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import register
from .seq_lora import SequentialLoRA


def distillation(z_old: torch.Tensor, z_new: torch.Tensor, labels: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """T^2 * token-mean of KL(softmax(z_old / T) || softmax(z_new / T)) over answer positions.

    z_old, z_new: (batch, seq, vocab) logits; labels: (batch, seq) with -100 off the answers.
    The logits at position p predict token p+1, hence the one-token shift. A scalar; zero if the
    batch has no answer token.
    """
    mask = labels[:, 1:] != -100
    if not mask.any():
        return z_new.sum() * 0.0
    T = temperature
    old = F.log_softmax(z_old[:, :-1][mask].float() / T, dim=-1)
    new = F.log_softmax(z_new[:, :-1][mask].float() / T, dim=-1)
    kl = (old.exp() * (old - new)).sum(-1)  # (answer tokens,)
    return T * T * kl.mean()


@register("lwf")
class LwF(SequentialLoRA):
    """A new LoRA per task, merged after it, distilled towards the previous model's outputs."""

    def __init__(self, cfg, anatomy):
        super().__init__(cfg, anatomy)
        self.t = 0
        self._sum, self._count = 0.0, 0

    def begin_task(self, model, t, task, data):
        """Wrap the (merged) model with a fresh LoRA; B = 0, so it starts equal to the old one."""
        self.t, self._sum, self._count = t, 0.0, 0
        return super().begin_task(model, t, task, data)

    def extra_loss(self, model, batch, outputs):
        """lambda * T^2 * KL(old || new) on the answer tokens; None on task 1 (no old model)."""
        if self.t <= 1:
            return None
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        was_training = model.training
        model.eval()  # the old model is a fixed function: no dropout
        with torch.no_grad(), model.disable_adapter():
            z_old = model(**inputs).logits
        model.train(was_training)
        term = distillation(z_old, outputs.logits, batch["labels"], self.cfg.lwf.temperature)
        self._sum += float(term.detach())
        self._count += 1
        return self.cfg.lwf.weight * term

    def info(self) -> dict:
        """The stage's figures, plus the mean distillation term (before lambda) over its steps
        (none on task 1)."""
        out = super().info()
        if self._count:
            out["lwf_distill_mean"] = self._sum / self._count
        self._sum, self._count = 0.0, 0
        return out
