"""Adapter layers. D-MoLE's LoRA experts are PEFT-shaped: base (the shape and the in-place swap
shared by every adapter layer) / layer / model (docs/method.md section 2 step 3); ``mixture``
and ``branch`` hold the peers' layers.

Standalone: experts are injected by dmole_lab itself (no change to peft's registries), keyed by
the task that owns them, switched by binary gates, and exported per task in PEFT's adapter
format so that one task's adapter loads with ``peft`` onto the base model.
"""

from .base import AdapterShape
from .layer import ExpertLinear, Gates
from .model import Experts

__all__ = ["AdapterShape", "ExpertLinear", "Experts", "Gates"]
