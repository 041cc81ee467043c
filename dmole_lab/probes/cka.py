"""Layer scores from representation similarity (centered kernel alignment, CKA).

HiDe-LLaVA (Guo et al., ACL 2025, section 3) picks the layers a task needs of its own by how
much fine-tuning on different tasks moves each layer's representations, measured with linear
CKA (Kornblith et al., ICML 2019, eq. 5). Two per-layer scores for one task, both in [0, 1],
higher = the layer matters more to the task (docs/method.md section 5):

- ``cka_change``: 1 - CKA(base model's layer output, tuned model's layer output) on the task's
  held-out samples, after a short LoRA tuning of every layer on the task (not zero-cost: it
  trains once per task, against once per layer for the oracle);
- ``cka_transform``: 1 - CKA(layer input, layer output) on the frozen base model: how far the
  layer reshapes the task's samples (zero-cost: forward passes only).

A sample's representation at a layer is the mean of its hidden states over the positions the
attention mask keeps (vision: every patch).
"""

from __future__ import annotations

import pandas as pd
import torch

from dmole_lab.data.encode import Encoded, placement, to_device, train_batch
from dmole_lab.models.anatomy import Anatomy, anatomy_of

from .hooks import hooked, record

#: The CKA layer scores (docs/method.md section 5).
CKA_SCORES = {
    "cka_change": "1 - CKA(base, tuned) of each layer's output after a short LoRA on every layer",
    "cka_transform": "1 - CKA(layer input, layer output) on the frozen base model",
}


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between representations ``x`` (n, p) and ``y`` (n, q) of the same n samples:
    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), columns centred (Kornblith et al. 2019,
    eq. 5). 1 = the same up to rotation and scale; invariant to isotropic scaling."""
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"CKA needs the same n >= 2 samples on both sides, got {x.shape[0]} "
                         f"and {y.shape[0]}")
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    num = (y.T @ x).pow(2).sum()
    den = (x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()
    return float(num / den) if den > 0 else float("nan")


def _pool(h: torch.Tensor, mask: torch.Tensor | None, n: int) -> torch.Tensor:
    """Per-sample mean over kept positions; rows of tiled images are averaged per sample."""
    if mask is not None and h.shape[:2] == mask.shape:
        m = mask.to(h.dtype).unsqueeze(-1)
        return (h * m).sum(1) / m.sum(1).clamp(min=1)
    return h.reshape(n, -1, h.shape[-1]).mean(1)


@torch.no_grad()
def layer_representations(model: torch.nn.Module, data: Encoded, batch_size: int = 32,
                          anatomy: Anatomy | None = None, inputs: bool = False
                          ) -> dict[tuple[str, int, str], torch.Tensor]:
    """Pooled hidden states of every layer of both towers on ``data`` (no gradients).

    Keys are (tower, layer, "out"), and with ``inputs`` also (tower, layer, "in"): what the
    layer receives. Values are (n_samples, width) float tensors on the CPU."""
    anatomy = anatomy or anatomy_of(model)
    device, dtype = placement(model)
    layers = [(t, i) for t in anatomy.layer_paths for i in range(anatomy.n_layers(t))]
    pooled: dict[tuple[str, int, str], list[torch.Tensor]] = {}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(data), batch_size):
            idx = list(range(start, min(start + batch_size, len(data))))
            batch = to_device(train_batch(data, idx), device, dtype)
            mask = batch.get("attention_mask")
            seen: dict = {}

            def pre(tower, i, seen=seen):
                def hook(mod, args):
                    seen[tower, i, "in"] = args[0].detach() if args else None
                return hook

            pres = {f"{anatomy.layer_paths[t]}.{i}": pre(t, i) for t, i in layers} if inputs else {}
            with record(model, layers=layers, anatomy=anatomy) as cache, hooked(model, pre=pres):
                model(**batch)
            for t, i in layers:
                keys = [(t, i, "out")] + ([(t, i, "in")] if inputs else [])
                for key in keys:
                    h = cache[t, i] if key[2] == "out" else seen[key]
                    m = mask if t == "llm" else None
                    pooled.setdefault(key, []).append(_pool(h.float(), m, len(idx)).cpu())
    finally:
        model.train(was_training)
    return {k: torch.cat(v) for k, v in pooled.items()}


def cka_transform(reps: dict) -> pd.DataFrame:
    """``cka_transform`` per layer from :func:`layer_representations` (``inputs=True``):
    tower, layer, score."""
    rows = [{"tower": t, "layer": i, "score": 1.0 - linear_cka(reps[t, i, "in"], h)}
            for (t, i, kind), h in reps.items() if kind == "out"]
    return pd.DataFrame(rows)


def cka_change(base: dict, tuned: dict) -> pd.DataFrame:
    """``cka_change`` per layer from two :func:`layer_representations` of the same samples:
    tower, layer, score."""
    rows = [{"tower": t, "layer": i, "score": 1.0 - linear_cka(h, tuned[t, i, kind])}
            for (t, i, kind), h in base.items() if kind == "out"]
    return pd.DataFrame(rows)


def tuned_representations(model: torch.nn.Module, train: Encoded, held_out: Encoded,
                          train_cfg, r: int = 4, alpha: float = 8.0, seed: int = 0,
                          anatomy: Anatomy | None = None) -> dict:
    """:func:`layer_representations` of ``held_out`` after a LoRA on every candidate module
    trained on ``train`` with ``train_cfg`` (its ``max_steps``), as the oracle trains one layer
    (:func:`dmole_lab.probes.oracle.oracle_gains`). ``model`` is left as it was: the LoRA is
    removed, not merged."""
    from peft import LoraConfig

    from dmole_lab.models.compat import get_peft_model_quietly
    from dmole_lab.seeding import seed_everything
    from dmole_lab.training.stage import train_stage

    anatomy = anatomy or anatomy_of(model)
    seed_everything(seed)
    peft_model = get_peft_model_quietly(model, LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=0.0,
        target_modules=[m.path for m in anatomy.candidates()]))
    params = [p for p in peft_model.parameters() if p.requires_grad]
    train_stage(peft_model, train, params, train_cfg, seed, progress=False)
    try:
        # LoRA is injected in place: the unwrapped model keeps the paths ``anatomy`` names.
        return layer_representations(peft_model.get_base_model(), held_out, anatomy=anatomy)
    finally:
        for p in peft_model.unload().parameters():
            p.requires_grad_(False)
