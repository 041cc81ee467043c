"""Injecting, switching, saving and loading task experts in a model (docs/method.md section 2).

:class:`Experts` is a controller around a base model, not a wrapper: it swaps the chosen
``nn.Linear`` modules for :class:`ExpertLinear` in place (the model keeps its class, its
``generate`` and its module paths) and keeps the shared :class:`Gates`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from dmole_lab.store import read_tensors, write_tensors

from .base import AdapterShape, swap_linear
from .layer import ExpertLinear, Gates

ADAPTER_WEIGHTS = "adapter_model.safetensors"


class Experts:
    """The task experts of one model: ``experts.add(task, paths)``, ``experts.activate(...)``."""

    def __init__(self, model: nn.Module, config: AdapterShape | None = None):
        self.model = model
        self.config = config or AdapterShape()
        self.gates = Gates()

    # ---------------------------------------------------------------------- structure
    def layers(self) -> dict[str, ExpertLinear]:
        """Native module path -> expert layer, for every module holding experts."""
        return {n: m for n, m in self.model.named_modules() if isinstance(m, ExpertLinear)}

    def tasks(self) -> list[str]:
        """Tasks owning at least one expert, in the order they were added."""
        seen: dict[str, None] = {}
        for layer in self.layers().values():
            seen.update(dict.fromkeys(layer.lora_A))
        return list(seen)

    def modules_of(self, task: str) -> list[str]:
        """Native paths of the modules where ``task`` owns an expert."""
        return [p for p, m in self.layers().items() if task in m.lora_A]

    def add(self, task: str, paths: list[str]) -> None:
        """Give ``task`` one new expert in each module of ``paths`` (native paths)."""
        if "." in task or not task:
            raise ValueError(f"task name {task!r} cannot key an expert (no dots, not empty)")
        for path in paths:
            mod = self.model.get_submodule(path)
            if not isinstance(mod, ExpertLinear):
                mod = swap_linear(self.model, path, lambda lin: ExpertLinear(lin, self.gates))
            mod.add_expert(task, self.config)

    def parameters(self, task: str) -> list[nn.Parameter]:
        """The A and B weights of ``task``'s experts."""
        return [p for m in self.layers().values() if task in m.lora_A
                for p in (m.lora_A[task].weight, m.lora_B[task].weight)]

    def n_params(self, task: str) -> int:
        """Number of parameters of ``task``'s experts."""
        return sum(p.numel() for p in self.parameters(task))

    def train_only(self, task: str | None) -> list[nn.Parameter]:
        """Freeze everything, then make ``task``'s experts trainable; returns them."""
        for p in self.model.parameters():
            p.requires_grad_(False)
        params = self.parameters(task) if task is not None else []
        for p in params:
            p.requires_grad_(True)
        return params

    # ------------------------------------------------------------------------ gating
    def activate(self, tasks) -> None:
        """Switch on the experts of ``tasks`` (all samples); others off."""
        self.gates.set(tasks)

    def activate_per_sample(self, routes: list[list[str]]) -> None:
        """Switch on ``routes[b]`` for sample b of the next batch."""
        self.gates.set_per_sample(routes)

    def deactivate(self) -> None:
        """All experts off: the model computes exactly the base model."""
        self.gates.clear()

    # ----------------------------------------------------------------- saving/loading
    def state_dict(self, task: str) -> dict[str, torch.Tensor]:
        """``task``'s expert weights keyed ``<native path>.lora_A`` / ``.lora_B``."""
        out = {}
        for path, m in self.layers().items():
            if task in m.lora_A:
                out[f"{path}.lora_A"] = m.lora_A[task].weight.detach().clone()
                out[f"{path}.lora_B"] = m.lora_B[task].weight.detach().clone()
        return out

    def load_state_dict(self, task: str, state: dict[str, torch.Tensor]) -> None:
        """Create ``task``'s experts from :meth:`state_dict` output (resume a run)."""
        paths = sorted({k.rsplit(".", 1)[0] for k in state})
        self.add(task, paths)
        with torch.no_grad():
            for path in paths:
                m = self.model.get_submodule(path)
                m.lora_A[task].weight.copy_(state[f"{path}.lora_A"])
                m.lora_B[task].weight.copy_(state[f"{path}.lora_B"])
                m.lora_A[task].weight.requires_grad_(False)
                m.lora_B[task].weight.requires_grad_(False)

    def save_pretrained(self, task: str, directory: Path, base_model: str | None = None) -> Path:
        """Write ``task``'s experts as a PEFT LoRA adapter (adapter_config.json + weights).

        ``PeftModel.from_pretrained(base, directory)`` then computes what this model computes
        with only ``task`` active.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = self.modules_of(task)
        if not paths:
            raise ValueError(f"task {task!r} owns no expert; tasks: {self.tasks()}")
        self.config.save_peft_config(directory, paths, base_model)
        tensors = {f"base_model.model.{k}.weight": v.contiguous()
                   for k, v in self.state_dict(task).items()}
        write_tensors(directory / ADAPTER_WEIGHTS, tensors, {"format": "pt"})
        return directory

    @staticmethod
    def read_pretrained(directory: Path) -> tuple[AdapterShape, dict[str, torch.Tensor]]:
        """(config, state_dict) of an adapter written by :meth:`save_pretrained`."""
        directory = Path(directory)
        cfg = json.loads((directory / "adapter_config.json").read_text())
        tensors = read_tensors(directory / ADAPTER_WEIGHTS)
        state = {k.removeprefix("base_model.model.").removesuffix(".weight"): v
                 for k, v in tensors.items()}
        return AdapterShape(cfg["r"], float(cfg["lora_alpha"]), cfg["lora_dropout"]), state
