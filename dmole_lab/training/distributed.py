"""The processes a run trains with: one per GPU (or CPU worker) under ``accelerate launch``,
or just this one (docs/scale.md).

Data parallelism here is explicit rather than a wrapped model, because the methods change the
model between stages (experts join, branches freeze) and read gradients in callbacks:

- every process holds the whole model and the whole data, draws the same seeded batch order,
  and trains on its shard of each batch (:meth:`Processes.shard`);
- the loss of a shard is its token sum over the global batch's answer-token count, and the
  gradients are summed over processes (:meth:`Processes.sum_grads`), so a step's gradient is
  the single-process token-mean gradient of the whole batch (docs/method.md section 2);
- anything decided from data (D-MoLE's batch vote, the router features) is computed from
  tensors every process holds alike, so every process decides the same.

With one process every collective is a no-op and nothing is wrapped: a run without a launcher
is the plain loop it always was.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from typing import Iterator

import numpy as np
import torch
import torch.distributed as td

from dmole_lab.config import MIXED_PRECISION


def _launched() -> bool:
    """True under a launcher that starts several processes (torchrun / accelerate launch)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true")


def main_process() -> bool:
    """True in the process that reports and writes (rank 0, or the only process)."""
    return int(os.environ.get("RANK", "0")) == 0


class Processes:
    """The processes of a run and the few collectives the toolkit needs (no-ops alone).

    ``mixed_precision`` ("no", "bf16", "fp16") is the autocast of forward passes
    (:meth:`autocast`); the Accelerator, if any, set up the process group.
    """

    def __init__(self, mixed_precision: str = "no", accelerator=None,
                 zero_stage: int | None = None):
        if mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed precision {mixed_precision!r}; allowed: "
                             f"{', '.join(MIXED_PRECISION)}")
        self.mixed_precision = mixed_precision
        self.accelerator = accelerator
        #: DeepSpeed ZeRO stage (1 or 2) that shards the trainable state, or None
        self.zero_stage = zero_stage
        on = td.is_available() and td.is_initialized()
        self.world = td.get_world_size() if on else 1
        self.rank = td.get_rank() if on else 0

    @property
    def is_main(self) -> bool:
        """The process that writes the run store (rank 0)."""
        return self.rank == 0

    # ------------------------------------------------------------------ data
    def shard(self, idx) -> np.ndarray:
        """This process's contiguous share of a global batch (sizes differ by at most one)."""
        idx = np.asarray(idx)
        return idx if self.world == 1 else np.array_split(idx, self.world)[self.rank]

    def mine(self, n: int) -> list[int]:
        """Indices 0..n-1 this process handles when work is dealt round-robin (eval batches)."""
        return list(range(self.rank, n, self.world))

    # ------------------------------------------------------------------ collectives
    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` summed over processes (a new tensor; float64 sums stay float64)."""
        if self.world == 1:
            return x
        y = x.detach().clone()
        td.all_reduce(y, op=td.ReduceOp.SUM)
        return y

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum every parameter's ``.grad`` over processes, in place, as one flat buffer.

        A parameter no process produced a gradient for keeps ``grad = None``, so the optimiser
        skips it as it would in one process (AdamW moves a parameter with a zero gradient).
        """
        if self.world == 1 or not params:
            return
        ref = params[0]
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32,
                           device=ref.device)
        td.all_reduce(has, op=td.ReduceOp.SUM)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          .to(torch.float32) for p in params])
        td.all_reduce(flat, op=td.ReduceOp.SUM)
        offset = 0
        for p, any_grad in zip(params, has.tolist()):
            n = p.numel()
            if any_grad:
                p.grad = flat[offset: offset + n].view_as(p).to(p.dtype)
            offset += n

    def same_start(self, params: list[torch.nn.Parameter]) -> None:
        """Rank 0's values of ``params`` in every process (a stage's freshly initialised
        adapters start equal even where a device's random streams differ)."""
        if self.world == 1 or not params:
            return
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1).to(torch.float32) for p in params])
            td.broadcast(flat, src=0)
            offset = 0
            for p in params:
                p.copy_(flat[offset: offset + p.numel()].view_as(p))
                offset += p.numel()

    def gather(self, obj) -> list:
        """Every process's ``obj``, in rank order (picklable objects)."""
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        td.all_gather_object(out, obj)
        return out

    def concat(self, items: list) -> list:
        """Every process's ``items``, one list in rank order (picklable items)."""
        return [x for part in self.gather(items) for x in part]

    def in_order(self, pairs: list[tuple[int, object]]) -> list:
        """The values of every process's (index, value) pairs, by index: the results of work
        dealt with :meth:`mine`, as one process would have produced them."""
        return [v for _, v in sorted(self.concat(pairs), key=lambda pair: pair[0])]

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every process (picklable objects)."""
        if self.world == 1:
            return obj
        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world > 1:
            td.barrier()

    # ------------------------------------------------------------------ precision
    def autocast(self, device: torch.device):
        """The forward passes' autocast context (none with mixed precision "no")."""
        if self.mixed_precision == "no":
            return nullcontext()
        dtype = torch.bfloat16 if self.mixed_precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """A loss scaler for fp16 (None otherwise): fp16 gradients underflow without one."""
        if self.mixed_precision != "fp16":
            return None
        return torch.amp.GradScaler(device.type)


_CURRENT = Processes()


def processes() -> Processes:
    """The processes of the run in progress (a single process outside :func:`launched`)."""
    return _CURRENT


@contextmanager
def launched(mixed_precision: str = "no", cpu: bool = False) -> Iterator[Processes]:
    """The run's processes for the duration of the block.

    Under ``accelerate launch`` (or torchrun) this builds an ``accelerate.Accelerator``, which
    joins the process group the launcher describes (gloo on CPUs, NCCL on GPUs); alone, with
    no mixed precision, nothing is built at all. The launcher's own ``--mixed_precision`` must
    agree with ``train.mixed_precision`` (the run's folder is named by its config).
    """
    global _CURRENT
    if _flag("ACCELERATE_USE_FSDP"):
        raise ValueError(
            "the launcher's config asks for FSDP, which dmole_lab does not drive; use "
            "configs/accelerate/zero2.yaml (DeepSpeed ZeRO-2) or plain data parallelism "
            "(configs/accelerate/multi-gpu.yaml) (docs/scale.md)")
    zero_stage = None
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        zero_stage = int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))
        if zero_stage not in (1, 2):
            raise ValueError(
                f"the launcher's config asks for DeepSpeed ZeRO stage {zero_stage}; allowed: "
                "1 or 2 (stage 3 shards the weights, which the methods read and wrap; "
                "docs/scale.md)")
    asked = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if asked not in ("no", mixed_precision):
        raise ValueError(
            f"the launcher asks for mixed precision {asked!r} but train.mixed_precision="
            f"{mixed_precision!r}; set --train.mixed_precision={asked} (the run's config "
            "names its precision)")
    accelerator = None
    if zero_stage is not None and _launched():
        # DeepSpeed engines are built per stage by the training loop (training.zero); the
        # process group is torch's, from the launcher's environment
        if not td.is_initialized():
            td.init_process_group("gloo" if cpu else "nccl")
    elif _launched():
        from accelerate import Accelerator

        accelerator = Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    previous, _CURRENT = _CURRENT, Processes(mixed_precision, accelerator, zero_stage)
    try:
        yield _CURRENT
    finally:
        _CURRENT = previous


def local_device(device: torch.device) -> torch.device:
    """``cuda`` without an index means this process's own GPU (LOCAL_RANK) under a launcher."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device
