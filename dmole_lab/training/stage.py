"""One stage of training: AdamW, linear warm-up then cosine decay, gradient clipping.

Methods plug in through three hooks: which parameters train, an optional extra loss term and
callbacks that see every step (recorders, loggers). The loss is the model's next-token
cross-entropy over answer tokens only, averaged over tokens (docs/method.md section 2).

Under several processes each trains on its shard of every batch, optionally in
``train.grad_accum`` micro-batches, each micro-batch's token-mean loss weighted by its share of
the global batch's answer tokens; the gradients are then summed over processes
(:mod:`dmole_lab.training.distributed`), so the step's gradient is the one-process gradient
of the whole batch, up to float rounding (docs/scale.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from dmole_lab.config import TrainConfig
from dmole_lab.data.encode import Encoded, answer_tokens, placement, to_device, train_batch
from dmole_lab.training.distributed import processes


class StepCallback(Protocol):
    """A plain function called after every optimiser step."""

    def __call__(self, step: int, loss: float, model: torch.nn.Module) -> None: ...


class TrainCallback:
    """A callback that also sees the gradients: override either hook (both default to no-op).

    ``on_backward`` runs after ``loss.backward()`` and before clipping, so ``p.grad`` holds the
    raw gradient of the step; ``on_step`` runs after the optimiser step (the parameters hold
    their new values). Plain functions passed as callbacks are called as ``on_step``.
    """

    def on_step_begin(self, step: int, idx: list[int], model: torch.nn.Module) -> None:
        """Before ``step``; ``idx`` are the whole (global) batch's sample indices, the same
        in every process."""

    def on_batch(self, step: int, idx: list[int], model: torch.nn.Module) -> None:
        """Before each forward pass of ``step``; ``idx`` are the samples this pass sees (the
        whole batch in one process without accumulation, else this process's micro-batch)."""

    def on_backward(self, step: int, model: torch.nn.Module) -> None:
        """Gradients of ``step`` are in ``p.grad``."""

    def on_step(self, step: int, loss: float, model: torch.nn.Module) -> None:
        """The optimiser has applied ``step``."""


@dataclass
class StageLog:
    """What a stage of training did: per-step loss and learning rate, and wall time."""

    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> pd.DataFrame:
        """Tidy per-step log."""
        return pd.DataFrame({"step": np.arange(len(self.losses)), "loss": self.losses,
                             "lr": self.lrs})


def n_steps(n_samples: int, cfg: TrainConfig) -> int:
    """Optimiser steps of one stage: epochs x ceil(n / batch), capped by max_steps."""
    steps = cfg.epochs * math.ceil(n_samples / cfg.batch_size)
    return min(steps, cfg.max_steps) if cfg.max_steps > 0 else steps


def lr_factor(step: int, total: int, warmup_ratio: float) -> float:
    """Linear warm-up over ceil(warmup_ratio * total) steps, then cosine decay to zero."""
    warm = math.ceil(warmup_ratio * total)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def use_checkpointing(model: torch.nn.Module) -> None:
    """Recompute activations in the backward pass (``train.grad_checkpointing``).

    Non-reentrant checkpointing: frozen inputs need no ``requires_grad`` trick, and the RNG
    state is replayed, so dropout masks and the results are those of a run without it.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(model).__name__} does not support gradient checkpointing; "
                         "set train.grad_checkpointing=false")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def train_stage(
    model: torch.nn.Module,
    data: Encoded,
    params: list[torch.nn.Parameter],
    cfg: TrainConfig,
    seed: int,
    extra_loss: Callable[[torch.nn.Module, dict, object], torch.Tensor | None] | None = None,
    callbacks: tuple[TrainCallback | StepCallback, ...] = (),
    desc: str = "train",
    progress: bool = True,
) -> StageLog:
    """Train ``params`` of ``model`` on ``data`` for one stage; returns the stage log.

    Every process draws the same seeded batches and trains on its shard of each one
    (module docstring); the logged loss is the global batch's.
    """
    if not params:
        raise ValueError("no trainable parameters for this stage")
    procs = processes()
    device, dtype = placement(model)
    total = n_steps(len(data), cfg)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    # foreach: a handful of multi-tensor kernels instead of ~30 operators per parameter (the
    # CPU default); the same arithmetic, bit for bit (benchmarks/profile_step.py)
    # (only non-empty groups: DeepSpeed drops empty ones, which would leave the schedule
    # with more groups than the optimiser)
    groups = [{"params": ps, "weight_decay": wd}
              for ps, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)) if ps]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, cfg.warmup_ratio))
    procs.same_start(params)
    scaler = procs.grad_scaler(device)
    engine = None
    if procs.zero_stage is not None:
        from dmole_lab.training.zero import zero_engine

        engine = zero_engine(model, opt, cfg, procs.zero_stage, procs.world)
    try:
        rng = np.random.default_rng(seed)
        order: list[int] = []
        log = StageLog()
        start = time.perf_counter()
        hooks = [cb for cb in callbacks if isinstance(cb, TrainCallback)]
        step_hooks = [cb.on_step if isinstance(cb, TrainCallback) else cb for cb in callbacks]
        model.train()
        bar = tqdm(range(total), desc=desc, disable=not progress or not procs.is_main, leave=False)
        for step in bar:
            if len(order) < cfg.batch_size:
                order += rng.permutation(len(data)).tolist()
            idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
            for cb in hooks:
                cb.on_step_begin(step, idx, model)
            micro = [m.tolist() for m in np.array_split(procs.shard(idx), cfg.grad_accum) if len(m)]
            batches = [to_device(train_batch(data, m), device, dtype) for m in micro]
            counts = [answer_tokens(data, m) for m in micro]
            n_global = int(procs.sum(torch.tensor(sum(counts), dtype=torch.float64)))
            # A parameter-only term (EWC, O-LoRA) is added once per step in all: 1/parts each.
            parts = procs.world * cfg.grad_accum
            step_loss = None
            for m, batch, n in zip(micro, batches, counts):
                for cb in hooks:
                    cb.on_batch(step, m, model)
                with procs.autocast(device):
                    out = model(**batch)
                    loss = out.loss if n == n_global else out.loss * (n / n_global)
                    if extra_loss is not None:
                        extra = extra_loss(model, batch, out)
                        if extra is not None:
                            loss = loss + (extra if parts == 1 else extra / parts)
                if engine is not None:  # the engine averages over processes; we want the sum
                    engine.backward(loss * procs.world)
                else:
                    (scaler.scale(loss) if scaler else loss).backward()
                step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
            if engine is not None and not micro:  # an empty shard still joins the reduction
                engine.backward(sum(p.sum() for p in params) * 0.0)
            if engine is None:
                procs.sum_grads(params)
            if scaler is not None:
                scaler.unscale_(opt)
            for cb in hooks:
                cb.on_backward(step, model)
            if engine is not None:
                engine.step()  # reduces, clips over every shard, steps
            elif scaler is not None:
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                scaler.step(opt)
                scaler.update()
            else:
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
            log.lrs.append(sched.get_last_lr()[0])
            sched.step()
            opt.zero_grad(set_to_none=True)
            if step_loss is None:  # this process's shard was empty (batch smaller than processes)
                step_loss = torch.zeros((), device=device)
            log.losses.append(float(procs.sum(step_loss.float())))
            for hook in step_hooks:
                hook(step, log.losses[-1], model)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{log.losses[-1]:.3f}")
        model.eval()
        log.seconds = time.perf_counter() - start
    finally:
        if engine is not None:
            engine.destroy()  # its gradient hooks must not outlive the stage
    return log
