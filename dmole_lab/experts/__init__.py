"""D-MoLE's LoRA experts, PEFT-shaped: config / layer / model (docs/method.md section 2 step 3).

Standalone: experts are injected by dmole_lab itself (no change to peft's registries), keyed by
the task that owns them, switched by binary gates, and exported per task in PEFT's adapter
format so that one task's adapter loads with ``peft`` onto the base model.
"""

from .config import ExpertConfig
from .layer import ExpertLinear, Gates
from .model import Experts

__all__ = ["ExpertConfig", "ExpertLinear", "Experts", "Gates"]
