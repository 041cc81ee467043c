"""What a training step keeps for its backward pass, counted per layer.

:func:`saved_bytes` runs a forward pass under ``torch.autograd.graph.saved_tensors_hooks`` and
adds up the bytes of every tensor autograd saves, each storage once, parameters excluded (those
are the weights), attributing each to the tower layer that was running when it was first saved
("other": embeddings, projector, head, loss). That is the activation memory of the step, on any
device, CPU included, with no allocator statistics needed; :mod:`dmole_lab.engine.plan` scales
it from a cut-down model to the full depth.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import ExitStack

import torch
from torch import nn

from dmole_lab.models.anatomy import Anatomy


def saved_bytes(model: nn.Module, anatomy: Anatomy, batch: dict) -> dict[str, float]:
    """Bytes autograd saves in a forward of ``batch`` (with ``labels``: the loss included).

    Keys: "vision.<i>" / "llm.<i>" per layer, "other" for the rest, "total"."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    where = ["other"]
    out: dict[str, float] = defaultdict(float)

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in seen and storage.nbytes() > 0:
            seen.add(ptr)
            out[where[-1]] += storage.nbytes()
        return t

    def enter(name):
        def hook(_mod, _args):
            where.append(name)
        return hook

    def leave(_mod, _args, _out):
        where.pop()

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    with ExitStack() as stack:
        for tower in ("vision", "llm"):
            layers = base.get_submodule(anatomy.layer_paths[tower])
            for i, layer in enumerate(layers):
                stack.callback(layer.register_forward_pre_hook(enter(f"{tower}.{i}")).remove)
                stack.callback(layer.register_forward_hook(leave).remove)
        stack.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t))
        model.train()
        loss = model(**batch).loss
    del loss
    model.eval()
    out["total"] = sum(out.values())
    return dict(out)


__all__ = ["saved_bytes"]
