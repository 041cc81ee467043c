"""Seq-FT: one LoRA trained on each task in turn, never merged or reset (docs/method.md section 3).

The lower bound of the comparison: the same adapter (rank and targets of the ``lora`` section)
keeps training through the stream, so each task overwrites what the previous ones taught it.
"""

from __future__ import annotations

from .base import register
from .seq_lora import SequentialLoRA


@register("seq-ft")
class SequentialFT(SequentialLoRA):
    """A single LoRA carried from task to task."""

    def begin_task(self, model, t, task, data):
        """Wrap the base model with the LoRA on the first task; keep training it after."""
        if t == 1 or not hasattr(model, "peft_config"):
            return super().begin_task(model, t, task, data)
        return model

    def end_task(self, model, t, task):
        """Save the adapter as it is after task ``t``; the model stays wrapped."""
        from peft import get_peft_model_state_dict

        state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
        return model, state

    def restore_task(self, model, t, task, state):
        """Load the adapter saved after task ``t`` (each stage saves the whole adapter)."""
        from peft import set_peft_model_state_dict

        if not hasattr(model, "peft_config"):
            model = super().begin_task(model, t, task, None)
        device = next(model.parameters()).device
        set_peft_model_state_dict(model, {k: v.to(device) for k, v in state.items()})
        return model
