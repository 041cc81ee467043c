"""A linear layer with a routed mixture of LoRA experts (MoELoRA, sparse MoLE, MoLA; docs/method.md
section 3).

h = W0 x + (alpha / (E r)) * sum_i g_i(x) B_i A_i dropout(x), with E experts of rank r each
(E r is the total rank, the "r" of docs/method.md section 3's formula) and per-token gates
g(x) = softmax(W_g x) (dense, MoELoRA) or its top-k entries renormalised (sparse MoLE, MoLA).

Unlike :class:`dmole_lab.experts.ExpertLinear`, the experts are not PEFT-shaped: there is one
adapter (no per-task keys) and its update depends on the token through the gates, so it is no
``Delta W = (alpha / r) B A``. Its weights are therefore named ``expert_A`` / ``expert_B`` (not
``lora_A`` / ``lora_B``), which keeps :func:`dmole_lab.probes.recorders.lora_modules` from
reading them as a LoRA: the tower recorders log their gradient norm like any trainable
parameter's, but no ``rel_update``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dmole_lab.config import MixtureConfig
from dmole_lab.models.anatomy import ModuleInfo

from .base import AdapterLinear, swap_linear

#: names of a mixture's own tensors in :meth:`MixtureLinear.adapter_state_dict`
ADAPTER_KEYS = ("expert_A", "expert_B", "router.weight")

#: standard deviation of the router's initial weights: small, so the first gates are near
#: uniform and no expert is favoured before training has seen any data
ROUTER_INIT_STD = 0.02


def load_balance_loss(probs: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Switch-Transformer load-balancing loss N * sum_i f_i P_i (docs/method.md section 3, MoLE).

    ``probs``: (tokens, N) router probabilities softmax(W_g x); ``chosen``: (tokens, k) indices
    of the experts each token is routed to. f_i = (tokens whose top-k includes i) / (tokens k),
    the share of routing slots expert i receives (sums to 1, not differentiable);
    P_i = mean over tokens of probs[:, i] (differentiable). The loss is 1 when both are uniform
    and grows as routing concentrates on few experts. Returns a float32 scalar.
    """
    n_tokens, n = probs.shape
    k = chosen.shape[-1]
    counts = torch.zeros(n, dtype=torch.float32, device=probs.device)
    counts.scatter_add_(0, chosen.reshape(-1),
                        torch.ones(chosen.numel(), dtype=torch.float32, device=probs.device))
    f = counts / (n_tokens * k)
    P = probs.float().mean(0)
    return n * (f * P).sum()


class MixtureLinear(AdapterLinear):
    """``base_layer`` (frozen nn.Linear) plus E routed LoRA experts of rank r (docs/method.md sec.
    3).

    Parameters, all trainable (the base layer's are left as they are):

    - ``expert_A``: (E r, in_features); rows i r .. (i+1) r - 1 are expert i's A_i (r, in).
    - ``expert_B``: (out_features, E r); columns i r .. (i+1) r - 1 are expert i's B_i (out, r).
    - ``router.weight``: (E, in_features), W_g.

    Keeping all experts in two matrices makes the whole mixture two matmuls: the gates scale the
    rank-r blocks of A x (gates repeated r times), then B maps back. With every gate at 1 the
    layer is a plain LoRA of rank E r.

    After each forward in training mode, ``balance_loss`` holds this layer's
    :func:`load_balance_loss` over all tokens of the call (padding included: the layer does not
    see the attention mask); it is None in eval mode. Dense gates count each token's top-1
    expert as its choice (Switch Transformer), since a dense top-E would make the loss constant.
    With top_k = 1 the renormalised gate is always 1, so the router then learns only through
    the balance loss.
    """

    def __init__(self, base_layer: nn.Linear, experts: int, r: int, alpha: float,
                 dropout: float = 0.0, top_k: int = 0, scale_experts: int | None = None):
        super().__init__(base_layer)
        if experts < 1 or r < 1:
            raise ValueError(f"need experts >= 1 and r >= 1, got experts={experts}, r={r}")
        if not 0 <= top_k <= experts:
            raise ValueError(f"top_k={top_k} must be in [0, experts={experts}] (0 = dense)")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        self.experts, self.r, self.top_k = experts, r, top_k
        self.alpha = float(alpha)
        #: alpha / (E r): docs/method.md section 3's alpha / r with r the total rank E r. MoLA's
        #: layers hold different E but share the scale of ``scale_experts`` experts: with
        #: alpha / (E r) its deepest layers (8 experts, still 2 of them per token) would move
        #: 4x less than its shallowest (2 experts), the opposite of "more capacity higher up"
        #: (MoLA scales every rank-r expert by alpha / r whatever the layer's expert count).
        self.scaling = self.alpha / ((scale_experts or experts) * r)
        w = base_layer.weight
        kw = {"device": w.device, "dtype": w.dtype}
        self.expert_A = nn.Parameter(torch.empty(experts * r, base_layer.in_features, **kw))
        self.expert_B = nn.Parameter(torch.empty(base_layer.out_features, experts * r, **kw))
        self.router = nn.Linear(base_layer.in_features, experts, bias=False, **kw)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.balance_loss: torch.Tensor | None = None
        self.reset_parameters()
        self.train(base_layer.training)

    def reset_parameters(self) -> None:
        """A Kaiming-uniform (each A_i as PEFT would), B = 0 (the layer starts as the base
        layer), router N(0, ROUTER_INIT_STD^2)."""
        # fan_in of the (E r, in) matrix is in_features, the same as each (r, in) A_i's
        nn.init.kaiming_uniform_(self.expert_A, a=math.sqrt(5))
        nn.init.zeros_(self.expert_B)
        nn.init.normal_(self.router.weight, std=ROUTER_INIT_STD)

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The mixture's own parameters: A, B and the router (not the base layer's)."""
        return [self.expert_A, self.expert_B, self.router.weight]

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Copies of ``expert_A``, ``expert_B`` and ``router.weight``, keyed by those names."""
        return {k: p.detach().clone() for k, p in zip(ADAPTER_KEYS, self.adapter_parameters())}

    def load_adapter_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy :meth:`adapter_state_dict` output back in (shapes must match)."""
        with torch.no_grad():
            for name, p in zip(ADAPTER_KEYS, self.adapter_parameters()):
                if tuple(state[name].shape) != tuple(p.shape):
                    raise ValueError(f"{name}: saved shape {tuple(state[name].shape)} does not "
                                     f"match the layer's {tuple(p.shape)}")
                p.copy_(state[name])

    def expert(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_i, B_i) of expert i: views of shapes (r, in) and (out, r)."""
        s = slice(i * self.r, (i + 1) * self.r)
        return self.expert_A[s], self.expert_B[:, s]

    def gates(self, x: torch.Tensor, need_probs: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Per-token gates of ``x`` (..., in): (gates, probs, chosen) (docs/method.md section 3).

        probs = softmax(W_g x), float32 (..., E). Dense: gates = probs, chosen = argmax (..., 1).
        Top-k: chosen (..., k) = the k most probable experts, gates = their probs renormalised
        to sum to 1, zero elsewhere (..., E). The renormalised top-k of the softmax is the
        softmax of the top-k logits, which is how it is computed; ``need_probs=False`` (top-k
        only) then skips the full softmax and returns probs = None.
        """
        logits = self.router(x).float()
        if self.top_k == 0:
            probs = logits.softmax(-1)
            return probs, probs, probs.argmax(-1, keepdim=True)
        top, chosen = logits.topk(self.top_k, dim=-1)
        gates = torch.zeros_like(logits).scatter(-1, chosen, top.softmax(-1))
        return gates, logits.softmax(-1) if need_probs else None, chosen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """W0 x + (alpha / (E r)) sum_i g_i B_i A_i dropout(x); x: (..., in) -> (..., out)."""
        out = self.base_layer(x)
        gates, probs, chosen = self.gates(x, need_probs=self.training)
        self.balance_loss = (load_balance_loss(probs.reshape(-1, self.experts),
                                               chosen.reshape(-1, chosen.shape[-1]))
                             if self.training else None)
        z = F.linear(self.dropout(x), self.expert_A)  # (..., E r): every A_i x at once
        gates = gates.to(z.dtype)
        if self.r == 1:
            z = z * gates
        else:  # scale each expert's r coordinates by its gate
            z = (z.unflatten(-1, (self.experts, self.r)) * gates.unsqueeze(-1)).flatten(-2)
        return out + self.scaling * F.linear(z, self.expert_B)

    def extra_repr(self) -> str:
        return f"experts={self.experts}, r={self.r}, top_k={self.top_k}, scaling={self.scaling:g}"


def experts_at(layer: int, n_layers: int, cfg: MixtureConfig) -> int:
    """Experts of a module at ``layer`` of a tower with ``n_layers`` layers (docs/method.md sec. 3).

    ``cfg.layer_experts`` (MoLA) splits the depth into len(layer_experts) equal slices, shallow
    to deep, and layer l falls in slice floor(len * l / n_layers); without it, ``cfg.experts``.
    """
    if not cfg.layer_experts:
        return cfg.experts
    return cfg.layer_experts[len(cfg.layer_experts) * layer // n_layers]


def mixture_layers(model: nn.Module) -> dict[str, MixtureLinear]:
    """Native module path -> mixture layer, for every :class:`MixtureLinear` in ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, MixtureLinear)}


def add_mixtures(model: nn.Module, infos: list[ModuleInfo], cfg: MixtureConfig,
                 n_layers: Mapping[str, int]) -> dict[str, MixtureLinear]:
    """Swap each module of ``infos`` for a :class:`MixtureLinear` in place; returns them by path.

    ``n_layers``: tower -> its number of layers (for MoLA's depth slices, :func:`experts_at`).
    The model keeps its class, its ``generate`` and its module paths, as with
    :class:`dmole_lab.experts.Experts`.
    """
    out = {}
    for info in infos:
        if isinstance(model.get_submodule(info.path), MixtureLinear):
            raise ValueError(f"{info.path} already holds a mixture")
        experts = experts_at(info.layer, n_layers[info.tower], cfg)
        layer = swap_linear(model, info.path, lambda lin, experts=experts: MixtureLinear(
            lin, experts, cfg.r, cfg.alpha, cfg.dropout, cfg.top_k, scale_experts=cfg.experts))
        out[info.path] = layer
    return out
