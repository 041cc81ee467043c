"""What a gradient-norm score is made of, per candidate module (docs/method.md section 5).

For a linear module y = W x summed over tokens, grad W = sum_tokens delta x^T: its norm grows
with the scale of the module's input x and of the gradient delta reaching its output. Where one
layer's proxy dominates every task's profile (the tiny model's layer 0), these factors say
which of them carries it. Read on the frozen base model over the same seeded K+1 batches as the
proxy (:func:`dmole_lab.probes.sensitivity.sensitivity`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from dmole_lab.data.encode import Encoded, placement, to_device, train_batch
from dmole_lab.models.anatomy import Anatomy, anatomy_of

from .hooks import hooked
from .sensitivity import _module_params, _only_grad_on

#: The measured factors (columns of :func:`layer_factors`).
FACTORS = {
    "grad_norm": "||accumulated grad||_F of weight + bias (the proxy, docs/method.md section 2)",
    "weight_norm": "||W||_F + ||b|| of the base module",
    "input_rms": "RMS of the module's input over tokens and batches",
    "grad_out_rms": "RMS of the loss gradient at the module's output",
    "norm_gain": "mean |gain| of the first normalisation inside the module's layer",
    "resid_rms": "RMS of the hidden state entering the module's layer (before its norm)",
}


def _norm_gain(model: torch.nn.Module, layer_path: str) -> float:
    """Mean |weight| of the first normalisation module inside a layer (NaN if none)."""
    for mod in model.get_submodule(layer_path).modules():
        if "norm" in type(mod).__name__.lower() and getattr(mod, "weight", None) is not None:
            return float(mod.weight.detach().abs().mean())
    return float("nan")


def layer_factors(model: torch.nn.Module, data: Encoded, batches: int = 2,
                  batch_size: int = 16, seed: int = 0, anatomy: Anatomy | None = None
                  ) -> pd.DataFrame:
    """Per candidate module: tower, layer, module and every :data:`FACTORS` column.

    Samples are drawn in the proxy's seeded order, so ``grad_norm`` equals the ``grad_norm``
    proxy of a probe with the same ``batches``, ``batch_size`` and ``seed``."""
    anatomy = anatomy or anatomy_of(model)
    candidates = anatomy.candidates()
    params = {m.alias: _module_params(model, m) for m in candidates}
    sq_in = {m.alias: [0.0, 0] for m in candidates}
    sq_out = {m.alias: [0.0, 0] for m in candidates}
    layers = sorted({(m.tower, m.layer) for m in candidates})
    sq_resid = {key: [0.0, 0] for key in layers}

    def entering(key):
        def hook(mod, args):
            h = args[0].detach().float()
            sq_resid[key][0] += float(h.pow(2).sum())
            sq_resid[key][1] += h.numel()
        return hook

    def forward(alias):
        def hook(mod, args, out):
            x = args[0].detach().float()
            sq_in[alias][0] += float(x.pow(2).sum())
            sq_in[alias][1] += x.numel()
            if out.requires_grad:
                def grad_hook(g):
                    sq_out[alias][0] += float(g.float().pow(2).sum())
                    sq_out[alias][1] += g.numel()
                out.register_hook(grad_hook)
        return hook

    device, dtype = placement(model)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(data))
                            for _ in range(math.ceil(batches * batch_size / len(data)))])
    trainable = [p for ps in params.values() for p in ps]
    with _only_grad_on(model, trainable), \
            hooked(model, {m.path: forward(m.alias) for m in candidates},
                   pre={f"{anatomy.layer_paths[t]}.{i}": entering((t, i)) for t, i in layers}):
        for b in range(batches):
            idx = order[b * batch_size: (b + 1) * batch_size]
            model(**to_device(train_batch(data, idx), device, dtype)).loss.backward()
        rows = []
        for m in candidates:
            ps = params[m.alias]
            rows.append({
                "tower": m.tower, "layer": m.layer, "module": m.alias,
                "grad_norm": sum(float(p.grad.float().norm()) for p in ps),
                "weight_norm": sum(float(p.detach().float().norm()) for p in ps),
                "input_rms": math.sqrt(sq_in[m.alias][0] / max(1, sq_in[m.alias][1])),
                "grad_out_rms": math.sqrt(sq_out[m.alias][0] / max(1, sq_out[m.alias][1])),
                "norm_gain": _norm_gain(model, f"{anatomy.layer_paths[m.tower]}.{m.layer}"),
                "resid_rms": math.sqrt(sq_resid[m.tower, m.layer][0]
                                       / max(1, sq_resid[m.tower, m.layer][1])),
            })
    return pd.DataFrame(rows)


def layer_zero_excess(factors: pd.DataFrame) -> pd.DataFrame:
    """Per tower and factor, layer 0's value over the mean of the other layers (module means
    per layer first): above 1 where layer 0 stands out. Rows tower, factor, ratio."""
    per_layer = factors.groupby(["tower", "layer"], sort=False)[list(FACTORS)].mean()
    rows = []
    for tower, d in per_layer.groupby(level="tower", sort=False):
        d = d.droplevel("tower")
        for f in FACTORS:
            rows.append({"tower": tower, "factor": f,
                         "ratio": float(d.loc[0, f] / d.drop(index=0)[f].mean())})
    return pd.DataFrame(rows)
