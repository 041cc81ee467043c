"""BranchLoRA (Zhang et al., ACL 2025) as a continual method (docs/method.md section 3, BranchLoRA).

Every module of ``anatomy.select(cfg.lora.modules)`` in both towers (in the LLM only where the
vision tower sees a varying number of tiles per sample: :func:`branch_modules`) gets, at task 1, a
:class:`~dmole_lab.experts.branch.BranchLinear`: one shared trunk A, N branches B_i, and from
then on one router per task. At task tau the router of tau trains, with the branches not yet
frozen and the trunk (always at task 1; later only if ``branch.train_trunk``, which the paper
leaves open). After the task, the ``branch.freeze`` most-used trainable branches of each module
are frozen: they stay in use by every router, they just stop training. Only branches the task
actually routed to (top-k hits > 0 during its training) are frozen: freezing an unused one
would protect nothing. Once every branch of a module is frozen, later tasks train only their
router (and the trunk).

Task selector (no task id at test time): per task, keys k_img and k_txt minimise
L_align = sum (1 - cos(e_img, k_img)) + sum (1 - cos(e_txt, k_txt)) over the task's training
samples, with e_img / e_txt the vision / text parts of the base model's routing features
(:func:`dmole_lab.dmole.router.representations`, computed once per sample with the adapters off and
cached). A sample is routed to argmax over learned tasks of cos(e_img, k_img) + cos(e_txt,
k_txt), and every module then uses that task's router.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from dmole_lab.analysis.usage import NONE
from dmole_lab.config import BranchConfig
from dmole_lab.data.encode import Encoded
from dmole_lab.dmole.router import representations, vision_feature_width
from dmole_lab.experts.base import AdapterShape
from dmole_lab.experts.branch import BranchLinear, BranchSelector, add_branches
from dmole_lab.training.stage import TrainCallback

from .base import RoutedMethod, register


def check_branch_config(c: BranchConfig) -> None:
    """Raise ValueError naming the allowed values if ``c`` (section ``branch``) is unusable."""
    if c.branches < 1:
        raise ValueError(f"branch.branches={c.branches}; allowed: an integer >= 1")
    if not 1 <= c.top_k <= c.branches:
        raise ValueError(f"branch.top_k={c.top_k}; allowed: 1..{c.branches} "
                         f"(at most branch.branches={c.branches})")
    if not 0 <= c.freeze <= c.branches:
        raise ValueError(f"branch.freeze={c.freeze}; allowed: 0..{c.branches} "
                         f"(at most branch.branches={c.branches})")
    AdapterShape.of(c, "branch")
    if c.router_input not in ROUTER_INPUTS:
        raise ValueError(f"branch.router_input={c.router_input!r}; allowed: "
                         f"{', '.join(ROUTER_INPUTS)}")


#: What the routers read (``branch.router_input``): per sample, the LLM modules' input at the
#: last prompt token and the vision modules' mean over the image ("summary"), or both at their
#: first position ("first", docs/method.md's x0: in a causal LLM behind a shared BOS token the same
#: vector for every sample, so routing would not depend on the input at all).
ROUTER_INPUTS = ("summary", "first")


def router_positions(data: Encoded, idx, router_input: str, left_padded: bool):
    """(batch,) LLM position each sample's routers read, or None for position 0.

    Training batches are right-padded (prompt then answer from position 0); generation batches
    are left-padded prompts, so every prompt ends at the last column.
    """
    lens = torch.tensor([len(data.prompt_ids[i]) for i in idx])
    if router_input == "first":
        return lens.max() - lens if left_padded else None
    return torch.full_like(lens, int(lens.max()) - 1) if left_padded else lens - 1


# ---------------------------------------------------------------------------- task selector
def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def split_features(z: torch.Tensor, d_vision: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(e_img, e_txt): the vision (first ``d_vision`` columns) and text parts of z (N, d)."""
    return z[:, :d_vision], z[:, d_vision:]


def align_loss(z: torch.Tensor, d_vision: int, k_img: torch.Tensor,
               k_txt: torch.Tensor) -> torch.Tensor:
    """L_align = sum_n (1 - cos(e_img_n, k_img)) + sum_n (1 - cos(e_txt_n, k_txt)) (docs/method.md
    section 3); z: (N, d) routing features, keys: (d_vision,) and (d - d_vision,)."""
    e_img, e_txt = split_features(z, d_vision)
    return ((1 - torch.cosine_similarity(e_img, k_img[None], dim=1)).sum()
            + (1 - torch.cosine_similarity(e_txt, k_txt[None], dim=1)).sum())


def fit_keys(z: torch.Tensor, d_vision: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys (k_img, k_txt) minimising :func:`align_loss` over features z (N, d), in closed
    form rather than by gradient descent.

    L_align = 2N - (sum_n u_n) . k / ||k|| per part, with u_n the unit embeddings, so its
    minimiser is the direction of sum_n u_n: the normalised sum of the unit embeddings (unique
    up to scale; returned with unit norm). The paper trains the keys; this is where that
    training converges, without its learning rate and step count.
    """
    e_img, e_txt = split_features(z.float(), d_vision)
    return _unit(_unit(e_img).sum(0)), _unit(_unit(e_txt).sum(0))


def select_scores(z: torch.Tensor, d_vision: int,
                  keys: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """(N, T) selector scores cos(e_img, k_img) + cos(e_txt, k_txt) for the T tasks of keys."""
    e_img, e_txt = split_features(_unit_parts(z.float(), d_vision), d_vision)
    k_img = torch.stack([_unit(k[0].float()) for k in keys.values()])  # (T, d_vision)
    k_txt = torch.stack([_unit(k[1].float()) for k in keys.values()])
    return e_img @ k_img.T + e_txt @ k_txt.T


def _unit_parts(z: torch.Tensor, d_vision: int) -> torch.Tensor:
    e_img, e_txt = split_features(z, d_vision)
    return torch.cat([_unit(e_img), _unit(e_txt)], 1)


def select_tasks(z: torch.Tensor, d_vision: int,
                 keys: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> list[str]:
    """Each sample's task: argmax of :func:`select_scores` (ties: the earlier task)."""
    names = list(keys)
    return [names[int(i)] for i in select_scores(z, d_vision, keys).argmax(1)]


# ---------------------------------------------------------------------------- the method
class _TrainRouting(TrainCallback):
    """Routes every training sample with the current task's router (task id known)."""

    def __init__(self, method: "BranchLoRA"):
        self.method = method

    def on_batch(self, step, idx, model):
        """Current task for every sample, read where ``branch.router_input`` says."""
        m = self.method
        m.selector.set([m.current] * len(idx), positions=router_positions(
            m.train_data, idx, m.cfg.branch.router_input, left_padded=False))


@register("branchlora")
class BranchLoRA(RoutedMethod):
    """Shared trunk, N branches, per-task routers, most-used branches frozen, task selector."""

    def __init__(self, cfg, anatomy):
        super().__init__(cfg, anatomy)
        check_branch_config(cfg.branch)
        self.selector = BranchSelector()
        self.model: torch.nn.Module | None = None
        self.layers: dict[str, BranchLinear] = {}  # native path -> layer
        self.keys: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # task -> (k_img, k_txt)
        self.tasks: list[str] = []
        self.current: str | None = None
        self.train_data: Encoded | None = None
        self.d_vision: int | None = None

    # ------------------------------------------------------------------ structure
    def _inject(self, model) -> None:
        """Swap every selected nn.Linear of both towers for a BranchLinear (once per model)."""
        if self.model is model:
            return
        self.layers = add_branches(model, branch_modules(self.anatomy, self.cfg.lora.modules),
                                   self.selector, self.cfg.branch)
        self.model = model
        self.d_vision = vision_feature_width(model, self.anatomy)

    def _freeze_all(self) -> None:
        for p in self.model.parameters():
            p.requires_grad_(False)

    def n_params(self) -> int:
        """Parameters of every BranchLoRA layer (trunk, all branches, every router)."""
        return sum(sum(v.numel() for k, v in layer.state().items() if k != "frozen_by")
                   for layer in self.layers.values())

    # ------------------------------------------------------------------ per task
    def begin_task(self, model, t, task, data):
        """Inject (task 1), fit tau's keys on cached base features, add router tau everywhere."""
        if "." in task or not task:
            raise ValueError(f"task name {task!r} cannot key a router (no dots, not empty)")
        self._inject(model)
        start = time.perf_counter()
        self.selector.clear()
        z = representations(model, data, self.anatomy, shared=True)  # every process, same data
        self.keys[task] = fit_keys(z, self.d_vision)
        selector_seconds = time.perf_counter() - start
        self._freeze_all()
        train_trunk = t == 1 or self.cfg.branch.train_trunk
        for layer in self.layers.values():
            layer.add_router(task)
            layer.usage.zero_()
            layer.lora_router[task].requires_grad_(True)
            layer.branches.requires_grad_(True)
            layer.trunk.requires_grad_(train_trunk)
        self.tasks.append(task)
        self.current = task
        self.train_data = data
        free = [int((~layer.frozen).sum()) for layer in self.layers.values()]
        self.stage_info = {"selector_seconds": selector_seconds,
                           "selector_train_loss": float(align_loss(z, self.d_vision,
                                                                   *self.keys[task]) / len(z)),
                           "free_branches_mean": float(np.mean(free)),
                           "trunk_trained": train_trunk}
        return model

    def trainable_parameters(self, model):
        """Router tau, the branches not frozen, and the trunk when it trains."""
        params = []
        for layer in self.layers.values():
            if layer.trunk.requires_grad:
                params.append(layer.trunk)
            if layer.branches.numel():
                params.append(layer.branches)
            params += list(layer.lora_router[self.current].parameters())
        return params

    def callbacks(self) -> tuple[TrainCallback, ...]:
        """Route every training batch with the current task's router."""
        return (_TrainRouting(self),)

    def end_task(self, model, t, task):
        """Freeze the task's most-used trainable branches per module; save the whole state."""
        self.selector.clear()
        k = self.cfg.branch.freeze
        rows = []
        for path, layer in self.layers.items():
            usage = layer.usage.cpu()
            free = (~layer.frozen).cpu()
            # most-used first, ties by index; only trainable branches the task used
            order = sorted(range(layer.n_branches), key=lambda i: (-int(usage[i]), i))
            which = [i for i in order if free[i] and usage[i] > 0][:k]
            if which:
                layer.freeze_branches(which, t)
            info = self.anatomy.by_path[path]
            rows += [{"task": task, "tower": info.tower, "layer": info.layer,
                      "module": info.alias, "branch": i, "count": int(usage[i]),
                      "frozen_now": i in which, "frozen_by": int(layer.frozen_by[i])}
                     for i in range(layer.n_branches)]
        self._freeze_all()
        usage = pd.DataFrame(rows)
        self.stage_extra = {"branch_usage": usage}
        self.stage_info.update({
            "branches_frozen_now": int(usage["frozen_now"].sum()),
            "branches_frozen_total": int((usage["frozen_by"] > 0).sum()),
            "branch_params_total": self.n_params()})
        self.eval_routes = []
        return model, self.state_dict()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every layer's trunk, branches, freezers and routers, and every task's keys."""
        state = {f"layers.{path}.{k}": v for path, layer in self.layers.items()
                 for k, v in layer.state().items()}
        for task, (k_img, k_txt) in self.keys.items():
            state[f"keys.{task}.img"] = k_img.clone()
            state[f"keys.{task}.txt"] = k_txt.clone()
        return state

    def restore_task(self, model, t, task, state):
        """Rebuild the state after task t from :meth:`state_dict` output (the whole state)."""
        self._inject(model)
        self.tasks.append(task)
        missing = [tk for tk in self.tasks if f"keys.{tk}.img" not in state]
        if missing:
            raise ValueError(f"stage {t} state has no keys of tasks {missing}")
        self.keys = {tk: (state[f"keys.{tk}.img"], state[f"keys.{tk}.txt"])
                     for tk in self.tasks}
        for path, layer in self.layers.items():
            prefix = f"layers.{path}."
            for tk in self.tasks:  # routers in learning order
                if tk not in layer.lora_router:
                    layer.add_router(tk)
            layer.load({k.removeprefix(prefix): v for k, v in state.items()
                        if k.startswith(prefix)})
        self._freeze_all()
        self.current = task
        return model

    # ------------------------------------------------------------------ evaluation
    def before_eval_batch(self, model, name: str, data: Encoded, idx: np.ndarray) -> None:
        """Pick each sample's task with the selector and route it with that task's router."""
        if not self.tasks:  # zero-shot stage: base model
            self.eval_routes += [{"eval_task": name, "routed": NONE, "active": NONE}] * len(idx)
            return
        if name not in self.eval_z:
            self.selector.clear()
            self.eval_z[name] = representations(model, data, self.anatomy)
        z = self.eval_z[name][torch.as_tensor(idx)]
        chosen = select_tasks(z, self.d_vision, self.keys)
        self.selector.set(chosen, positions=router_positions(
            data, idx, self.cfg.branch.router_input, left_padded=True))
        self.eval_routes += [{"eval_task": name, "routed": c, "active": c} for c in chosen]

    def routed_tasks(self) -> list[str]:
        """Every task with keys in the selector."""
        return self.tasks

    def stop_routing(self, model) -> None:
        """Selector cleared: every branch layer is its base layer again."""
        self.selector.clear()


def branch_modules(anatomy, which: str) -> list:
    """The modules that get branches: ``anatomy.select(which)``, but on the LLM tower only
    where the vision tower does not see one row per sample (tiles, crops or patches varying
    per sample), since a branch router picks one mixture per sample."""
    infos = anatomy.select(which)
    return infos if anatomy.vision_per_sample else [m for m in infos if m.tower == "llm"]
