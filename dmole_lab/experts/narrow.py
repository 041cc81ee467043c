"""The up-projection of a low-rank adapter, with a backward pass laid out for the CPU.

A LoRA adapter ends in y = u B^T with u: (rows, r) and B: (out, r), r of 4 to 32. Its backward
needs two products whose inner or outer dimension is r: du = g B and dB = g^T u (g: (rows, out)).
Laid out as autograd lays them out, both run at about 6 GFLOP/s on this toolkit's CPU, against
60-80 GFLOP/s for the layer's full-width products; the same products computed transposed,
du = (B^T g^T)^T and dB = (u^T g)^T, put r on the output's rows and run 4 to 6 times faster
(benchmarks/profile_step.py, ``narrow``). The result is the same sum, rounded in another order.

Measured, not adopted: on the tiny model the whole training step is not measurably faster
(benchmarks/README.md, "profile_step.py"), and the changed rounding would change every shipped
figure, so the methods keep autograd's own products. :func:`use_narrow_products` switches a
model over for that measurement.

:func:`narrow_linear` is ``F.linear(u, weight)`` with that backward on CPU tensors and the plain
``F.linear`` elsewhere (GPU libraries handle the narrow shapes themselves).
:class:`NarrowLinear` is an ``nn.Linear`` that uses it, and :func:`use_narrow_products` turns
the ``lora_B`` factors of a model's peft LoRA layers and D-MoLE experts into one, in place
(their class only: parameters, state-dict keys and peft's merging stay as they were), and back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _NarrowProduct(torch.autograd.Function):
    """u W^T with the transposed backward products (module docstring)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(u, weight)
        return F.linear(u, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        u, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        du = dw = None
        if ctx.needs_input_grad[0]:
            du = (weight.t() @ g.t()).t().reshape(u.shape)
        if ctx.needs_input_grad[1]:
            dw = (u.reshape(-1, u.shape[-1]).t() @ g).t()
        return du, dw


def narrow_linear(u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(u, weight)`` (no bias) for a narrow input u: (..., r), weight: (out, r).

    Same values; on the CPU under autograd (without autocast) its backward uses the faster
    layouts of the module docstring."""
    if (u.device.type != "cpu" or not torch.is_grad_enabled()
            or not (u.requires_grad or weight.requires_grad)
            or torch.is_autocast_enabled("cpu")):  # autocast casts F.linear's inputs itself
        return F.linear(u, weight)
    return _NarrowProduct.apply(u, weight)


class NarrowLinear(nn.Linear):
    """An ``nn.Linear`` without bias whose product is :func:`narrow_linear`."""

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            return F.linear(u, self.weight, self.bias)
        return narrow_linear(u, self.weight)


def use_narrow_products(model: nn.Module, on: bool = True) -> int:
    """Make every ``lora_B`` factor of ``model`` (peft LoRA layers, D-MoLE experts) a
    :class:`NarrowLinear` (``on=False``: a plain ``nn.Linear`` again, for side-by-side
    timing), in place; returns how many were changed."""
    src, dst = (nn.Linear, NarrowLinear) if on else (NarrowLinear, nn.Linear)
    changed = 0
    for module in model.modules():
        factors = getattr(module, "lora_B", None)
        if not isinstance(factors, nn.ModuleDict):
            continue
        for factor in factors.values():
            if type(factor) is src and factor.bias is None:
                factor.__class__ = dst
                changed += 1
    return changed
