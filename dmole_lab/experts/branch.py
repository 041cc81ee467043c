"""A linear layer with BranchLoRA's shared trunk, N branches and per-task routers (docs/method.md
section 3, BranchLoRA).

h = W0 x + s * sum_{i in topk} g_i B_i A dropout(x),   s = alpha / r,
g = top-k of softmax(W_r^(tau) x0), renormalised over the k kept branches,

with A (r x in) the trunk shared by every task, B_i (out x r) the branches, W_r^(tau) the
router of the task tau the sample is routed to, and x0 one input vector per sample, so a
sample's gates are shared by all its tokens. docs/method.md reads x0 at the sample's first sequence
position; in a causal LLM whose prompts start with the same BOS token that input is the same
for every sample at every layer (measured: identical across tasks in all 42 LLM modules of the
tiny model), so each task's router would pick one fixed pair of branches per module. Which
position the LLM modules read is therefore the caller's (``BranchSelector.set(positions=)``),
and vision modules read their first position or the mean over positions (``pool``).

Layout (PEFT's habits where they fit): ``base_layer`` is the frozen nn.Linear, routers live in
an ``nn.ModuleDict`` keyed by task (``lora_router``). The trunk and the branches are plain
parameters, not PEFT's ``lora_A``/``lora_B`` dicts, on purpose: a branch is not a LoRA of its
own (it shares A), and tools that read ``lora_A``/``lora_B`` as one B A per key (the tower
recorders' ||Delta W||) would compute something meaningless here.

Freezing single branches: the branches are split into a trainable ``nn.Parameter``
(``branches``, (N_free, out, r)) and a buffer (``frozen_branches``, (N_frozen, out, r)); the
forward reassembles the (N, out, r) stack with one gather so all branches stay one batched
product. A gradient mask on one (N, out, r) parameter was rejected: AdamW's decoupled weight
decay (and momentum carried by the optimiser) would still move masked branches, and the run's
trainable-parameter count would include frozen ones. The split makes a frozen branch
bit-for-bit constant and the count exact.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dmole_lab.config import BranchConfig
from dmole_lab.models.anatomy import ModuleInfo

from .base import AdapterLinear, swap_linear

#: How a vision module turns a tile into its router input (:class:`BranchLinear` ``pool``).
POOLS = ("first", "mean")


class BranchSelector:
    """Which task's router each sample of the next batch uses; shared by every BranchLinear.

    ``set(tasks, positions)``: ``tasks`` is a (batch,) list of task names (one per sample, not
    per image tile); ``positions`` a (batch,) tensor of the position in the LLM's token sequence
    whose input each sample's LLM routers read (e.g. its first real position, which left padding
    moves, or its last prompt token; None = 0).
    ``clear()`` turns the adapters off: the base model. Every ``set`` bumps ``version``, which
    tells layers that a new batch starts (the mixture is computed once per batch, see
    :meth:`BranchLinear.mixed_branches`).
    """

    def __init__(self):
        self.tasks: list[str] = []
        self.positions: torch.Tensor | None = None
        self.version = 0

    def set(self, tasks: list[str], positions: torch.Tensor | None = None) -> None:
        """Route sample b of the next batch with ``tasks[b]``'s router."""
        tasks = list(tasks)
        if positions is not None:
            positions = torch.as_tensor(positions, dtype=torch.long).reshape(-1)
            if len(positions) != len(tasks):
                raise ValueError(f"{len(positions)} positions for {len(tasks)} samples")
        self.tasks, self.positions = tasks, positions
        self.version += 1

    def clear(self) -> None:
        """Adapters off for every sample."""
        self.tasks, self.positions = [], None
        self.version += 1

    @property
    def active(self) -> bool:
        """Whether the adapters are on."""
        return bool(self.tasks)


class BranchLinear(AdapterLinear):
    """``base_layer`` (frozen nn.Linear) plus a trunk A, N branches B_i and per-task routers.

    Args:
        base_layer: the frozen (in -> out) linear layer.
        selector: the model-wide :class:`BranchSelector`.
        branches: N; ``top_k``: k; ``r``, ``alpha``, ``dropout``: as in LoRA (s = alpha / r).
        padded: True for modules that read the LLM's token sequence, whose router input per
            sample is at ``selector.positions``; False for the vision tower, whose router input
            is taken from the sample's first image (tile) as ``pool`` says.
        pool: vision modules only: ``"first"`` (position 0, the class token) or ``"mean"``
            (mean over the tile's positions).
    """

    def __init__(self, base_layer: nn.Linear, selector: BranchSelector, branches: int = 8,
                 top_k: int = 2, r: int = 4, alpha: float = 8.0, dropout: float = 0.0,
                 padded: bool = False, pool: str = "first"):
        super().__init__(base_layer)
        if not 1 <= top_k <= branches:
            raise ValueError(f"top_k must be in 1..{branches} (branches), got {top_k}")
        if pool not in POOLS:
            raise ValueError(f"pool {pool!r}; allowed: {', '.join(POOLS)}")
        self.pool = pool
        self.selector = selector
        self.n_branches, self.top_k, self.r = branches, top_k, r
        self.scaling = alpha / r
        self.padded = padded
        w = base_layer.weight
        fin, fout = base_layer.in_features, base_layer.out_features
        self.trunk = nn.Parameter(torch.empty(r, fin, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.trunk, a=math.sqrt(5))  # PEFT's init of A
        self.branches = nn.Parameter(torch.zeros(branches, fout, r, device=w.device,
                                                 dtype=w.dtype))
        self.register_buffer("frozen_branches", torch.zeros(0, fout, r, device=w.device,
                                                            dtype=w.dtype))
        # frozen_by[i]: 1-based stage that froze branch i, 0 while it trains
        self.register_buffer("frozen_by", torch.zeros(branches, dtype=torch.long,
                                                      device=w.device))
        # top-k hits per branch while training (one per sample and forward); reset per task
        self.register_buffer("usage", torch.zeros(branches, dtype=torch.long, device=w.device),
                             persistent=False)
        self.lora_router = nn.ModuleDict()
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.register_buffer("_unsplit", torch.arange(branches, device=w.device),
                             persistent=False)
        self._cache: tuple | None = None  # (selector version, rows) -> the batch's mixture
        self.train(base_layer.training)

    @property
    def frozen(self) -> torch.Tensor:
        """(N,) bool: which branches are frozen."""
        return self.frozen_by > 0

    # ------------------------------------------------------------------ structure
    def add_router(self, task: str) -> None:
        """A new router W_r^(task): Linear(in, N), PyTorch's default initialisation."""
        if task in self.lora_router:
            raise ValueError(f"task {task!r} already has a router here")
        w = self.base_layer.weight
        self.lora_router[task] = nn.Linear(self.base_layer.in_features, self.n_branches,
                                           device=w.device, dtype=w.dtype)

    def full_branches(self) -> torch.Tensor:
        """(N, out, r): trainable and frozen branches in their original order."""
        if not len(self.frozen_branches):
            return self.branches
        if not len(self.branches):
            return self.frozen_branches
        # _unsplit[i]: row of branch i in cat([trainable, frozen]), set by _set_branches
        return torch.cat([self.branches, self.frozen_branches]).index_select(0, self._unsplit)

    @torch.no_grad()
    def freeze_branches(self, which: list[int], stage: int) -> None:
        """Freeze branches ``which`` (indices in 0..N-1), recording ``stage`` as their freezer.

        Replaces the ``branches`` parameter (an optimiser built before holds the old one).
        """
        if any(bool(self.frozen[i]) for i in which):
            raise ValueError(f"branches {which} include frozen ones {self.frozen.nonzero()[:, 0]}")
        full = self.full_branches().detach().clone()
        self.frozen_by[list(which)] = stage
        self._set_branches(full)

    def _set_branches(self, full: torch.Tensor) -> None:
        """Split (N, out, r) ``full`` into the trainable parameter and the frozen buffer."""
        frozen = self.frozen
        grad = self.branches.requires_grad
        self.branches = nn.Parameter(full[~frozen].clone(), requires_grad=grad)
        self.frozen_branches = full[frozen].clone()
        split = torch.cat([(~frozen).nonzero()[:, 0], frozen.nonzero()[:, 0]])
        self._unsplit = torch.argsort(split)
        self._cache = None

    def state(self) -> dict[str, torch.Tensor]:
        """Everything this layer learned: trunk, full branches, freezers, every router."""
        out = {"trunk": self.trunk.detach().clone(),
               "branches": self.full_branches().detach().clone(),
               "frozen_by": self.frozen_by.clone()}
        for task, lin in self.lora_router.items():
            out[f"router.{task}.weight"] = lin.weight.detach().clone()
            out[f"router.{task}.bias"] = lin.bias.detach().clone()
        return out

    @torch.no_grad()
    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Rebuild the layer from :meth:`state` output (routers created as needed)."""
        w = self.base_layer.weight
        self.trunk.copy_(state["trunk"])
        self.frozen_by.copy_(state["frozen_by"])
        self._set_branches(state["branches"].to(device=w.device, dtype=w.dtype))
        tasks = [k.split(".")[1] for k in state if k.startswith("router.") and
                 k.endswith(".weight")]
        for task in tasks:
            if task not in self.lora_router:
                self.add_router(task)
            self.lora_router[task].weight.copy_(state[f"router.{task}.weight"])
            self.lora_router[task].bias.copy_(state[f"router.{task}.bias"])

    # ------------------------------------------------------------------ routing
    def router_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """x0 per sample, (batch, in), from the module input x: (rows, seq, in)."""
        n = len(self.selector.tasks)
        if self.padded:
            if x.shape[0] != n:
                raise ValueError(f"{x.shape[0]} sequences for {n} routed samples")
            pos = self.selector.positions
            if pos is None:
                return x[:, 0]
            return x[torch.arange(n, device=x.device), pos.to(x.device)]
        if x.shape[0] % n:
            raise ValueError(f"{x.shape[0]} images (tiles) for {n} routed samples")
        tiles = x[:: x.shape[0] // n]  # the first tile of each sample
        return tiles[:, 0] if self.pool == "first" else tiles.mean(1)

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, N) gates and (batch, k) chosen branches of the batch whose input is x.

        g = softmax(W_r^(tau_b) x0_b) over all N branches; the top k are kept and renormalised
        to sum to 1 (equivalently a softmax over the k largest logits), the others are 0.
        Computed in float32.
        """
        sel = self.selector
        if not sel.active:
            raise ValueError("no task set in the selector: call selector.set(tasks) first")
        x0 = self.router_inputs(x)
        tasks = sel.tasks
        for task in dict.fromkeys(tasks):
            if task not in self.lora_router:
                raise KeyError(f"no router for task {task!r}; routers: {list(self.lora_router)}")
        if len(set(tasks)) == 1:  # training, and most evaluation batches
            logits = self.lora_router[tasks[0]](x0).float()
        else:
            logits = torch.empty(len(x0), self.n_branches, device=x.device,
                                 dtype=torch.float32)
            for task in dict.fromkeys(tasks):
                rows = torch.tensor([i for i, t in enumerate(tasks) if t == task],
                                    device=x.device)
                logits[rows] = self.lora_router[task](x0[rows]).float()
        # top-k of softmax(logits), renormalised == softmax over the k largest logits
        top, chosen = logits.topk(self.top_k, dim=-1)
        return torch.zeros_like(logits).scatter(1, chosen, top.softmax(-1)), chosen

    def mixed_branches(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, out, r): s * sum_i g_i B_i per sample, the batch's routed up-projection.

        Counts the top-k hits in training mode. During generation the decoding steps no longer
        see the prompt, so the mixture of the batch's first forward is reused for
        inputs of one position while the selector is unchanged and no gradient is recorded.
        """
        key = (self.selector.version, x.shape[0])
        grad = torch.is_grad_enabled()
        if self._cache is not None and self._cache[0] == key and x.shape[1] == 1 and not grad:
            return self._cache[1]
        g, chosen = self.gates(x)
        if self.training:
            self.usage += torch.bincount(chosen.reshape(-1), minlength=self.n_branches)
        full = self.full_branches()
        mixed = ((g * self.scaling).to(full.dtype) @ full.reshape(self.n_branches, -1)
                 ).reshape(len(g), *full.shape[1:])
        self._cache = None if grad else (key, mixed)
        return mixed

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """W0 x plus the routed branches; x: (rows, seq, in) -> (rows, seq, out).

        rows = batch for the LLM, batch x tiles for the vision tower (tiles of a sample share
        its gates). With the selector cleared this is exactly the base layer.
        """
        out = self.base_layer(x)
        if not self.selector.active:
            return out
        if x.ndim != 3:
            raise ValueError(f"BranchLinear expects (rows, seq, in) inputs, got {tuple(x.shape)}")
        mixed = self.mixed_branches(x)  # (batch, out, r)
        if x.shape[0] != mixed.shape[0]:  # several tiles per sample
            mixed = mixed.repeat_interleave(x.shape[0] // mixed.shape[0], 0)
        u = self.lora_dropout(x) @ self.trunk.T  # (rows, seq, r)
        # one batched product for all branches: out + u @ mixed^T
        return torch.baddbmm(out, u, mixed.transpose(1, 2))

    def extra_repr(self) -> str:
        return (f"branches={self.n_branches}, top_k={self.top_k}, r={self.r}, "
                f"pool={self.pool}, "
                f"frozen={self.frozen.nonzero()[:, 0].tolist()}, "
                f"routers={list(self.lora_router)}")


def add_branches(model: nn.Module, infos: list[ModuleInfo], selector: BranchSelector,
                 cfg: BranchConfig) -> dict[str, BranchLinear]:
    """Swap each module of ``infos`` for a :class:`BranchLinear` sharing ``selector``, in place;
    returns them by native path. LLM modules read each sample's router input at the selector's
    positions; vision modules pool the first image as ``cfg.router_input`` says ("summary":
    the mean over the image, "first": position 0)."""
    pool = "mean" if cfg.router_input == "summary" else "first"
    return {info.path: swap_linear(model, info.path, lambda lin, info=info: BranchLinear(
        lin, selector, cfg.branches, cfg.top_k, cfg.r, cfg.alpha, cfg.dropout,
        padded=info.tower == "llm", pool=pool)) for info in infos}
