"""Oracle layer importance: what training one layer alone actually buys on a task.

For each layer of each tower, a LoRA on that layer's candidate modules alone is trained from the
base model for a fixed small number of steps, and the reduction of the held-out loss is the
layer's oracle gain. The proxy is right to the extent that it ranks layers like these gains
(Spearman, :func:`dmole_lab.analysis.profiles.proxy_vs_oracle`). Costs one short training run per
layer,
so it is a benchmark (benchmarks/bench_proxy_oracle.py), not something a method runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from dmole_lab.config import TrainConfig
from dmole_lab.data.encode import Encoded, placement, to_device, train_batch
from dmole_lab.models.anatomy import Anatomy, anatomy_of
from dmole_lab.models.compat import get_peft_model_quietly
from dmole_lab.seeding import seed_everything
from dmole_lab.store import METHOD_SECTION_NAMES
from dmole_lab.training.stage import train_stage

#: Config sections that no oracle reads: it trains one plain LoRA (``lora.r``, ``lora.alpha``, no
#: dropout) per layer with ``train`` on ``stream`` and ``model``, so neither a method's section nor
#: ``lora.dropout`` may rename its cache, or a preset that turns dropout off would retrain hours of
#: parts that come out the same.
ORACLE_EXCLUDE = ("runs_dir", "pretrain", "method", "eval", "probe", "lora",
                  *METHOD_SECTION_NAMES)


def oracle_key(cfg, preset: str) -> str:
    """The part of a cache folder's name that says which oracle it holds: ``preset``, the hash of
    the sections the oracle reads, and the adapter's rank and scale (its one use of ``lora``)."""
    from dmole_lab.config import config_hash

    return f"{preset}-{config_hash(cfg, ORACLE_EXCLUDE)}-r{cfg.lora.r}-a{cfg.lora.alpha:g}"


def oracle_parts(cfg, preset: str, steps: int) -> Path:
    """Where the oracle benchmarks keep each finished (task, seed) of ``preset`` at ``steps``
    steps per layer: one folder per oracle, so every benchmark that trains this oracle finds
    what another one already trained."""
    from dmole_lab.config import resolve_path

    return resolve_path(cfg.runs_dir) / "oracle-parts" / f"{oracle_key(cfg, preset)}-{steps}steps"


@torch.no_grad()
def held_out_loss(model: torch.nn.Module, data: Encoded, batch_size: int = 32) -> float:
    """Mean next-token loss over answer tokens of ``data`` (token-weighted over batches)."""
    device, dtype = placement(model)
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(data), batch_size):
        idx = list(range(start, min(start + batch_size, len(data))))
        batch = to_device(train_batch(data, idx), device, dtype)
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += float(model(**batch).loss) * n
        tokens += n
    model.train(was_training)
    return total / tokens


def oracle_gains(model: torch.nn.Module, train: Encoded, held_out: Encoded,
                 train_cfg: TrainConfig, r: int = 4, alpha: float = 8.0,
                 layers: list[tuple[str, int]] | None = None, seed: int = 0,
                 anatomy: Anatomy | None = None, progress: bool = False) -> pd.DataFrame:
    """Held-out loss reduction from a LoRA on each single layer (tower, layer) of ``model``.

    Every layer gets the same data order, steps and learning rate (``train_cfg``), starting
    from the same base weights (the LoRA is removed, not merged, after each layer). Returns
    tower, layer, loss_before, loss_after, gain (= before - after), and seconds (what training
    and scoring that layer's LoRA took, so a cached oracle keeps its cost).
    """
    from peft import LoraConfig

    anatomy = anatomy or anatomy_of(model)
    if layers is None:
        layers = [(t, i) for t in ("vision", "llm") for i in range(anatomy.n_layers(t))]
    before = held_out_loss(model, held_out)
    rows = []
    for tower, layer in tqdm(layers, desc="oracle layers", disable=not progress, leave=False):
        targets = [m.path for m in anatomy.candidates(tower) if m.layer == layer]
        if not targets:
            raise ValueError(f"{tower} layer {layer} has no candidate module")
        t0 = time.perf_counter()
        seed_everything(seed)
        peft_model = get_peft_model_quietly(model, LoraConfig(
            r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets))
        params = [p for p in peft_model.parameters() if p.requires_grad]
        train_stage(peft_model, train, params, train_cfg, seed, progress=False)
        after = held_out_loss(peft_model, held_out)
        model = peft_model.unload()
        for p in model.parameters():
            p.requires_grad_(False)
        rows.append({"tower": tower, "layer": layer, "loss_before": before,
                     "loss_after": after, "gain": before - after,
                     "seconds": time.perf_counter() - t0})
    return pd.DataFrame(rows)


def oracle_cost(oracle: pd.DataFrame) -> dict:
    """What an oracle table (task, seed, ..., seconds from :func:`oracle_gains`) cost to train:
    seconds summed over its rows, and how many of its (task, seed) parts carry a time (parts
    cached before times were kept have none), so a rerun from the cache still reports it."""
    parts = oracle.groupby(["task", "seed"], sort=False)
    if "seconds" not in oracle:
        return {"train_seconds": 0.0, "parts": int(parts.ngroups), "parts_timed": 0}
    return {"train_seconds": round(float(oracle["seconds"].sum()), 1),
            "parts": int(parts.ngroups),
            "parts_timed": int((parts["seconds"].count() > 0).sum())}
