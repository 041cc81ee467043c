"""Phase 1 of pre-training: teach the vision tower to see, as CLIP does for a real VLM.

A language model trained from scratch together with a random vision tower and projector does
not learn to read the image in a CPU budget: the loss settles on the text prior and the
projector stays a bottleneck (measured: shape decodable from the projected tokens at chance
level). Real VLMs start from a pre-trained vision encoder and an aligned projector; our stand-in
is a short supervised phase: the image tokens the language model will see (vision tower +
projector), pooled per 16-pixel grid cell, predict what occupies that cell (nothing / shape /
digit, colour, shape, size, digit value). The heads are discarded afterwards.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dmole_lab.data.tasks import Sample
from dmole_lab.data.world import CELL, COLOURS, IMAGE_SIZE, SHAPES, SIZES

GRID = IMAGE_SIZE // CELL
HEADS = {
    "kind": ["none", "shape", "digit"],
    "colour": list(COLOURS),
    "shape": list(SHAPES),
    "size": list(SIZES),
    "digit": [str(d) for d in range(10)],
    # where the object sits inside its cell (left and top edge offsets, in pixels)
    "x": [str(v) for v in range(CELL)],
    "y": [str(v) for v in range(CELL)],
}


def cell_labels(samples: list[Sample]) -> dict[str, torch.Tensor]:
    """Per-cell targets (N, 9) for every head; -100 where a head does not apply."""
    n = len(samples)
    out = {k: torch.full((n, GRID * GRID), -100, dtype=torch.long) for k in HEADS}
    out["kind"].fill_(0)
    for i, s in enumerate(samples):
        for o in s.meta["objects"]:
            c = o["cell"][0] * GRID + o["cell"][1]
            out["kind"][i, c] = HEADS["kind"].index(o["kind"])
            out["x"][i, c] = o["box"][0] - o["cell"][1] * CELL
            out["y"][i, c] = o["box"][1] - o["cell"][0] * CELL
            if o["kind"] == "digit":
                out["digit"][i, c] = int(o["value"])
            else:
                out["colour"][i, c] = HEADS["colour"].index(o["colour"])
                out["shape"][i, c] = HEADS["shape"].index(o["shape"])
                out["size"][i, c] = HEADS["size"].index(o["size"])
    return out


class CellProbe(nn.Module):
    """Linear heads on patch features average-pooled over each grid cell."""

    def __init__(self, hidden: int, patches_per_side: int):
        super().__init__()
        self.pps = patches_per_side
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, len(v)) for k, v in HEADS.items()})

    def forward(self, patch_feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """patch_feats (B, P, H) with P = pps^2 -> logits (B, 9, classes) per head."""
        b, _, h = patch_feats.shape
        x = patch_feats.reshape(b, self.pps, self.pps, h).permute(0, 3, 1, 2)
        x = nn.functional.adaptive_avg_pool2d(x, GRID).flatten(2).transpose(1, 2)
        return {k: head(x) for k, head in self.heads.items()}


def image_tokens(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The projected image tokens a LLaVA model feeds its language model, (B, N, D)."""
    out = model.model.get_image_features(pixel_values=pixel_values)
    feats = getattr(out, "pooler_output", out)
    return torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats


def pretrain_vision(model: nn.Module, pixel_values: torch.Tensor, samples: list[Sample],
                    steps: int, lr: float, batch_size: int, seed: int,
                    progress: bool = True) -> list[float]:
    """Train a LLaVA model's vision tower and projector with cell heads; returns the losses."""
    labels = cell_labels(samples)
    tower, projector = model.model.vision_tower, model.model.multi_modal_projector
    hidden = model.config.text_config.hidden_size
    pps = IMAGE_SIZE // tower.config.patch_size
    probe = CellProbe(hidden, pps)
    params = list(tower.parameters()) + list(projector.parameters()) + list(probe.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    rng = np.random.default_rng(seed)
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="pretrain vision", disable=not progress, leave=False):
        idx = torch.as_tensor(rng.choice(len(samples), batch_size, replace=False))
        logits = probe(image_tokens(model, pixel_values[idx]))
        loss = sum(nn.functional.cross_entropy(logits[k].flatten(0, 1), labels[k][idx].flatten(),
                                               ignore_index=-100) for k in HEADS)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval()
    return losses
