"""D-MoLE as a continual method (docs/method.md section 2).

Per task t: probe the frozen base model (zero-cost sensitivity, K+1 batches), split the expert
budget between the towers (curriculum), give the top modules of each tower one new LoRA expert
owned by t (allocator), cache the routing features of t's samples and fit t's autoencoder.
While t trains, each batch's samples vote for an earlier task whose experts join (frozen) when
its support reaches the threshold; at test time the router picks the experts with no task id.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from dmole_lab.analysis.usage import ACTIVE_SEP, NONE
from dmole_lab.data.encode import Encoded
from dmole_lab.dmole.allocation import Allocation, allocate, mode_splits, module_scores
from dmole_lab.dmole.router import Router, representations, train_autoencoder
from dmole_lab.experts import AdapterShape, Experts
from dmole_lab.probes.sensitivity import probe_batches, sensitivity
from dmole_lab.training.distributed import processes
from dmole_lab.training.stage import TrainCallback

from .base import RoutedMethod, register


class _TrainRouting(TrainCallback):
    """Sets the active experts of every training batch from the cached features."""

    def __init__(self, method: "DMoLE"):
        self.method = method

    def on_step_begin(self, step, idx, model):
        """Current task's experts, plus the earlier task the batch votes for (support rule).

        The vote is over the whole batch from features every process holds alike, so under
        several processes each routes its shard the same way (docs/scale.md)."""
        m = self.method
        active = m.router.route_training(m.train_z[idx], m.current)
        m.experts.activate(active)
        m.train_routes.append(active[1] if len(active) > 1 else NONE)


@register("dmole")
class DMoLE(RoutedMethod):
    """Dynamic layer-wise LoRA experts, inter-modal curriculum, autoencoder routers."""

    def __init__(self, cfg, anatomy):
        super().__init__(cfg, anatomy)
        c = cfg.dmole
        if c.routing == "sample" and c.towers != "llm" and not anatomy.vision_per_sample:
            raise ValueError(
                f"dmole.routing=sample gates experts per sample, but {anatomy.model_type}'s "
                "vision tower sees a varying number of tiles per sample; use dmole.routing=batch "
                "(the released code's) or dmole.towers=llm")
        self.expert_cfg = AdapterShape.of(c, "dmole")
        self.router = Router(c.router_support, c.routing, c.train_routing)
        self.experts: Experts | None = None
        self.history: list[tuple[float, float]] = []
        self.current: str | None = None
        self.train_z: torch.Tensor | None = None
        self.train_routes: list[str] = []

    # ------------------------------------------------------------------ per task
    def _experts(self, model) -> Experts:
        if self.experts is None or self.experts.model is not model:
            self.experts = Experts(model, self.expert_cfg)
        return self.experts

    def allocate(self, model, task: str, data: Encoded) -> tuple[Allocation, pd.DataFrame, float]:
        """Zero-cost probe of the base model on ``task`` and the resulting allocation."""
        experts = self._experts(model)
        experts.deactivate()
        bs = self.cfg.probe.batch_size or self.cfg.train.batch_size
        k1 = self.cfg.probe.batches or probe_batches(len(data), bs, self.cfg.probe.share)
        start = time.perf_counter()
        table = sensitivity(model, data, (self.cfg.dmole.proxy,), batches=k1, batch_size=bs,
                            seed=self.cfg.seed, anatomy=self.anatomy)
        probe_seconds = time.perf_counter() - start
        c = self.cfg.dmole
        alloc = allocate(module_scores(table, task, c.proxy), task, c.budget, c.vision_floor,
                         c.curriculum, list(self.history), c.towers, c.allocator, self.cfg.seed,
                         c.rounding)
        return alloc, table.assign(task=task), probe_seconds

    def begin_task(self, model, t, task, data):
        """Probe, allocate, add t's experts, cache features and fit t's autoencoder."""
        alloc, table, probe_seconds = self.allocate(model, task, data)
        c = self.cfg.dmole
        # What every curriculum mode would have chosen here, next to the one used.
        splits = mode_splits(module_scores(table, task, c.proxy), c.budget, c.vision_floor,
                             list(self.history), c.towers, c.rounding)
        splits = splits.assign(task=task, used=splits["curriculum"] == c.curriculum)
        self.history.append((alloc.split.s_vision, alloc.split.s_llm))
        experts = self._experts(model)
        paths = [self.anatomy.by_alias[a].path for ms in alloc.modules.values() for a in ms]
        experts.add(task, paths)
        start = time.perf_counter()
        experts.deactivate()
        self.train_z = representations(model, data, self.anatomy, shared=True)  # every process
        ae = train_autoencoder(self.train_z, c.router_hidden, max_epochs=c.router_epochs,
                               batch_size=c.router_batch_size, lr=c.router_lr,
                               output_bias=c.router_output_bias,
                               quantile=c.router_quantile, seed=self.cfg.seed + t)
        # one router for every process, whatever a device's kernels did to its fit
        ae.load_state_dict(processes().broadcast(ae.state_dict()))
        self.router.add(task, ae)
        router_seconds = time.perf_counter() - start
        experts.train_only(task)
        self.current, self.train_routes = task, []
        split = alloc.split
        self.stage_info = {"probe_seconds": probe_seconds, "router_seconds": router_seconds,
                           "k_vision": split.k_vision, "k_llm": split.k_llm,
                           "rho_vision": split.rho_vision, "expert_params": experts.n_params(task)}
        self.stage_extra = {"allocation": alloc.table().assign(stage=t, k_vision=split.k_vision,
                                                               k_llm=split.k_llm),
                            "sensitivity": table, "curriculum": splits}
        return model

    def trainable_parameters(self, model):
        """The current task's experts only."""
        return self.experts.parameters(self.current)

    def callbacks(self) -> tuple[TrainCallback, ...]:
        """Batch-level routing while the current task trains."""
        return (_TrainRouting(self),)

    def end_task(self, model, t, task):
        """Freeze t's experts; save them and t's autoencoder."""
        self.experts.train_only(None)
        self.experts.deactivate()
        routes = pd.Series(self.train_routes, dtype=str)
        self.stage_info["train_batches_with_earlier_expert"] = float((routes != NONE).mean())
        self.stage_extra["train_routing"] = pd.DataFrame(
            {"task": task, "step": range(len(routes)), "joined": routes})
        state = {**{f"experts.{k}": v for k, v in self.experts.state_dict(task).items()},
                 **self.router.state_dict(task),
                 "curriculum": torch.tensor(self.history[-1], dtype=torch.float64)}
        if self.artifacts is not None:
            self.experts.save_pretrained(task, self.artifacts / "adapters" / task,
                                         self.cfg.model.path)
        self.eval_routes = []
        return model, state

    def restore_task(self, model, t, task, state):
        """Rebuild t's experts, autoencoder and curriculum history from the saved state."""
        experts = self._experts(model)
        experts.load_state_dict(task, {k.removeprefix("experts."): v for k, v in state.items()
                                       if k.startswith("experts.")})
        self.router.load(task, state)
        self.history.append(tuple(float(x) for x in state["curriculum"]))
        return model

    # ------------------------------------------------------------------ evaluation
    def before_eval_batch(self, model, name: str, data: Encoded, idx: np.ndarray) -> None:
        """Route one evaluation batch with no task id (batch or per-sample mode)."""
        experts = self._experts(model)
        if name not in self.eval_z:
            experts.deactivate()
            self.eval_z[name] = representations(model, data, self.anatomy)
        z = self.eval_z[name][torch.as_tensor(idx)]
        active = self.router.route_inference(z)
        if self.router.mode == "sample":
            experts.activate_per_sample(active)
            per_sample = active
        else:
            experts.activate(active)
            per_sample = [active] * len(idx)
        self.eval_routes += [{"eval_task": name, "routed": a[0] if a else NONE,
                              "active": ACTIVE_SEP.join(a)} for a in per_sample]

    def routed_tasks(self) -> list[str]:
        """Every task with an autoencoder."""
        return self.router.tasks

    def stop_routing(self, model) -> None:
        """All experts off."""
        if self.experts is not None:
            self.experts.deactivate()
