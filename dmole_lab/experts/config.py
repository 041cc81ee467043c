"""Hyper-parameters of one task's LoRA experts, and their PEFT adapter_config.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExpertConfig:
    """Rank, scaling numerator and dropout of every expert of a task (docs/method.md section 2)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05

    def __post_init__(self):
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ValueError(f"need r >= 1, alpha > 0, 0 <= dropout < 1; got {self}")

    @property
    def scaling(self) -> float:
        """alpha / r, the factor on B A x."""
        return self.alpha / self.r

    def save_peft_config(self, directory: Path, target_modules: list[str],
                         base_model: str | None = None) -> None:
        """Write ``adapter_config.json`` of a LoRA on ``target_modules`` (native module paths)."""
        from peft import LoraConfig

        LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                   target_modules=sorted(target_modules), bias="none",
                   base_model_name_or_path=base_model).save_pretrained(str(directory))
