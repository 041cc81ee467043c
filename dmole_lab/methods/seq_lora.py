"""Sequential LoRA (Seq-FT), the paper's lower-bound baseline (docs/method.md sections 2 and 3).

One fresh LoRA (rank 4 on all linear layers of both towers by default) is trained on each task
with ``peft`` and merged into the base weights after the task, so the next task starts from the
merged model. Only the LoRA factors of each task are stored: replaying their merges rebuilds the
model exactly when a run resumes.
"""

from __future__ import annotations

from dmole_lab.experts.base import AdapterShape
from dmole_lab.models.compat import get_peft_model_quietly

from .base import ContinualMethod, register


@register("seq-lora")
class SequentialLoRA(ContinualMethod):
    """Train a new LoRA per task, merge it, move on."""

    def _lora_config(self):
        targets = [m.path for m in self.anatomy.select(self.cfg.lora.modules)]
        return AdapterShape.of(self.cfg.lora, "lora").peft_config(targets)

    def begin_task(self, model, t, task, data):
        """Wrap ``model`` with a new trainable LoRA (PEFT initialisation: A Kaiming, B = 0)."""
        return get_peft_model_quietly(model, self._lora_config())

    def end_task(self, model, t, task):
        """Save the task's LoRA factors and merge them into the base weights."""
        from peft import get_peft_model_state_dict

        state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
        return _merge(model), state

    def restore_task(self, model, t, task, state):
        """Re-create task ``t``'s LoRA from its saved factors and merge it again."""
        from peft import set_peft_model_state_dict

        peft_model = get_peft_model_quietly(model, self._lora_config())
        device = next(model.parameters()).device
        set_peft_model_state_dict(peft_model, {k: v.to(device) for k, v in state.items()})
        return _merge(peft_model)


def _merge(peft_model):
    """Fold the LoRA into the base weights and return the frozen base model."""
    merged = peft_model.merge_and_unload()
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged
