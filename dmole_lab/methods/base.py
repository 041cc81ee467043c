"""The interface every continual method implements, and the method registry."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from dmole_lab.analysis.usage import routing_counts
from dmole_lab.config import RunConfig
from dmole_lab.data.encode import Encoded
from dmole_lab.models.anatomy import Anatomy
from dmole_lab.training.distributed import processes


class ContinualMethod:
    """A continual-learning method, driven stage by stage by :func:`dmole_lab.engine.continual.run`.

    The runner calls, for each task t (1-based): ``begin_task`` -> train the returned model's
    ``trainable_parameters`` on ``training_data`` with ``extra_loss`` -> ``end_task``, which
    returns the model to evaluate and the tensors to save. When a run resumes, ``restore_task``
    replays a finished stage from those tensors instead of training it again.
    """

    name = "base"

    def __init__(self, cfg: RunConfig, anatomy: Anatomy):
        self.cfg = cfg
        self.anatomy = anatomy
        #: folder for files a method exports (e.g. PEFT adapters); set by the runner
        self.artifacts: Path | None = None
        #: task name -> that task's training set, encoded as the runner encodes it (set by
        #: the runner; a method that replays earlier tasks calls it after a resume)
        self.train_set: Callable[[str], Encoded] | None = None
        #: figures of the current stage for the manifest (returned and cleared by ``info``)
        self.stage_info: dict = {}
        #: tables of the current stage (returned and cleared by ``after_eval``)
        self.stage_extra: dict[str, pd.DataFrame] = {}

    def begin_task(self, model: torch.nn.Module, t: int, task: str,
                   data: Encoded) -> torch.nn.Module:
        """Prepare ``model`` for training on task ``t``; returns the model to train."""
        raise NotImplementedError

    def training_data(self, data: Encoded) -> Encoded:
        """What the stage trains on, given task t's own data (called after ``begin_task``).

        Task t's data by default; a method that replays earlier tasks returns its mix here.
        """
        return data

    def trainable_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        """Parameters the optimiser updates during the current task."""
        return [p for p in model.parameters() if p.requires_grad]

    def extra_loss(self, model: torch.nn.Module, batch: dict, outputs) -> torch.Tensor | None:
        """A term added to the task loss (regularisers, distillation); None by default."""
        return None

    def callbacks(self) -> tuple:
        """Training callbacks the method needs (e.g. routing before each batch)."""
        return ()

    def before_eval_batch(self, model: torch.nn.Module, name: str, data: Encoded,
                          idx) -> None:
        """Called before each evaluation batch of set ``name`` (routers act here)."""

    def after_eval(self, model: torch.nn.Module) -> dict[str, pd.DataFrame]:
        """Tables the method recorded for the stage just evaluated (``stage_extra``, then
        cleared for the next stage)."""
        out, self.stage_extra = self.stage_extra, {}
        return out

    def info(self) -> dict:
        """Figures of the stage for the manifest (``stage_info``, then cleared for the next
        stage)."""
        out, self.stage_info = self.stage_info, {}
        return out

    def end_task(self, model: torch.nn.Module, t: int,
                 task: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        """Finish task ``t``: (model to evaluate and carry on, tensors to save)."""
        raise NotImplementedError

    def restore_task(self, model: torch.nn.Module, t: int, task: str,
                     state: dict[str, torch.Tensor]) -> torch.nn.Module:
        """Rebuild the state after task ``t`` from what ``end_task`` saved (resume)."""
        raise NotImplementedError


class RoutedMethod(ContinualMethod):
    """A method that picks each test sample's experts itself, with no task id (D-MoLE,
    BranchLoRA), and records the routing of every evaluation.

    Subclasses fill, per stage: ``eval_routes`` (one dict per evaluated sample: ``eval_task``,
    ``routed``, ``active``; see :func:`dmole_lab.analysis.usage.routing_counts`) besides the
    base class's ``stage_extra`` and ``stage_info``; ``eval_z`` caches each evaluation set's
    routing features. They name the tasks a sample can be routed to (``routed_tasks``) and how
    routing is switched off after an evaluation (``stop_routing``).
    """

    def __init__(self, cfg: RunConfig, anatomy: Anatomy):
        super().__init__(cfg, anatomy)
        self.eval_z: dict[str, torch.Tensor] = {}
        self.eval_routes: list[dict] = []

    def routed_tasks(self) -> list[str]:
        """Tasks the router can send a sample to (the columns of the confusion counts)."""
        raise NotImplementedError

    def stop_routing(self, model: torch.nn.Module) -> None:
        """Switch routing off after an evaluation (the next forward pass is the base model's
        plus whatever the method trains)."""
        raise NotImplementedError

    def after_eval(self, model: torch.nn.Module) -> dict[str, pd.DataFrame]:
        """Routing confusion counts of this evaluation, plus the stage's own tables; the router
        accuracy goes to the stage's manifest figures."""
        self.stop_routing(model)
        tables = super().after_eval(model)
        # each process routed the evaluation batches it generated; the counts need them all
        self.eval_routes = processes().concat(self.eval_routes)
        if self.eval_routes:
            tables["routing"], accuracy = routing_counts(self.eval_routes, self.routed_tasks())
            if accuracy is not None:
                self.stage_info["router_accuracy"] = accuracy
        self.eval_routes = []
        return tables


METHODS: dict[str, Callable[..., ContinualMethod]] = {}


def register(name: str):
    """Class decorator adding a method to the registry under ``name``."""

    def deco(cls):
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def check_method(name: str) -> None:
    """Raise ValueError naming the registered methods if ``name`` is not one of them."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(sorted(METHODS))}")


def make_method(cfg: RunConfig, anatomy: Anatomy) -> ContinualMethod:
    """Instantiate the method named by ``cfg.method``; clear error for unknown names."""
    check_method(cfg.method)
    return METHODS[cfg.method](cfg, anatomy)
