"""DeepSpeed ZeRO stage 1 or 2 around one stage's optimiser (docs/scale.md).

Under ``accelerate launch --config_file configs/accelerate/zero2.yaml`` the trainable state
(AdamW's two moments, stage 1; and the gradients, stage 2) is sharded over the processes, each
holding 1/N of it. The weights are not sharded (that is stage 3, which the methods cannot
run under: they read and wrap whole modules), so ZeRO pays where the trainable state is
large: full fine-tuning (``seq-ft``), not rank-8 adapters.

One engine per stage: a stage's trainable parameters are new (experts, branches), and the
engine of the previous stage is destroyed, which removes its gradient hooks. The loop keeps its
own batches, loss weighting, learning-rate schedule and callbacks; the engine reduces the
gradients, clips them over all shards (``train.max_grad_norm``) and steps the optimiser. Per-
parameter gradients are not assembled, so callbacks that read ``p.grad`` (the per-tower
gradient norm of ``TowerDynamics``) see none; update sizes are still recorded.
"""

from __future__ import annotations

import math

import torch

from dmole_lab.config import TrainConfig


def zero_engine(model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                stage: int, world: int):
    """A DeepSpeed engine over ``model`` that shards ``optimizer``'s state at ZeRO ``stage``.

    The engine averages gradients over processes: the loop multiplies each process's loss by
    ``world`` so that the sum of the token-weighted shards comes out (training.stage)."""
    import deepspeed

    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    config = {
        "train_micro_batch_size_per_gpu": max(1, math.ceil(cfg.batch_size / world)),
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16},
    }
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config,
                                      dist_init_required=False)
    return engine
