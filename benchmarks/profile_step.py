"""Where a training step of the embedded default goes, and how far it is from its floor.

Usage: python benchmarks/profile_step.py [--methods seq-lora,dmole] [--steps 30] [--threads 1]
                                         [--preset tiny] [overrides...]

For each method the tiny model gets the adapters of the first task (as a stage sets them up),
and a batch of ``train.batch_size`` samples of that task trains with AdamW and the method's
callbacks, as ``make demo``'s workers do (one torch thread each by default). Reported per step:

- the step time of ``training.stage.train_stage`` over ``--steps`` steps, and its split into
  phases (shares of a wall clock around each, in a loop of the same steps): building the batch,
  the forward pass, the backward pass, and clipping plus the optimiser step;
- the operator count of each phase and the matrix products' share of the profiled time
  (``torch.profiler``; the profiler's own overhead inflates the times it reports, so shares are
  read from it and seconds from the wall clock);
- narrow products: the step with the LoRA up-projections' backward laid out for the CPU
  (:mod:`dmole_lab.experts.narrow`) against autograd's own layout, alternating blocks;
- dropout: the step with adapter dropout ``--dropout`` (the library's default 0.05; the tiny
  preset has none) against the same step without it, in alternating blocks (dropout draws one
  random mask per adapter and forward pass);
- the floor: the step's FLOPs (``torch.utils.flop_counter``) over the rate this CPU reaches on
  the step's own matrix shapes (every distinct product of the step timed alone), i.e. the time
  of the step's products with no framework cost at all; step and products are timed in
  alternating blocks (medians over ``--rounds``), since this machine's speed drifts.

Writes benchmarks/results/profile_step.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dmole_lab.config import build_config, parse_cli_overrides
from dmole_lab.data.encode import encode, to_device, train_batch
from dmole_lab.data.stream import build_stream
from dmole_lab.experts.narrow import use_narrow_products
from dmole_lab.methods import make_method
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.loading import load_model
from dmole_lab.probes.recorders import TowerDynamics
from dmole_lab.seeding import seed_everything
from dmole_lab.training.stage import train_stage

DROPOUT_KEY = {"seq-lora": "lora.dropout", "seq-ft": "lora.dropout", "dmole": "dmole.dropout",
               "moelora": "moelora.dropout", "mole": "mole.dropout", "mola": "mola.dropout",
               "branchlora": "branch.dropout"}
PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm")


def setup(preset: str, overrides: dict, method: str):
    """The model with ``method``'s first-task adapters, that task's data, the trainable
    parameters and the stage's callbacks (the method's and the per-step recorder)."""
    cfg = build_config(preset, {**overrides, "method": method})
    seed_everything(cfg.seed)
    model, processor = load_model(cfg.model)
    anatomy = anatomy_of(model)
    stream = build_stream(cfg.stream, progress=False)
    task = cfg.stream.tasks[0]
    data = encode(processor, stream.train[task])
    m = make_method(cfg, anatomy)
    model = m.begin_task(model, 1, task, data)
    callbacks = m.callbacks() + (TowerDynamics(model, anatomy, cfg.probe.record_every),)
    return cfg, model, data, m.trainable_parameters(model), callbacks


def phases(cfg, model, data, params, callbacks, steps: int) -> dict:
    """Each phase's share of a step, and the step time of a stage's loop."""
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, foreach=True)  # as training.stage
    rng = np.random.default_rng(cfg.seed)
    model.train()
    seconds = Counter()
    for step in range(steps + 3):
        idx = rng.choice(len(data), cfg.train.batch_size, replace=False).tolist()
        t0 = time.perf_counter()
        for cb in callbacks:
            if hasattr(cb, "on_step_begin"):
                cb.on_step_begin(step, idx, model)
        batch = to_device(train_batch(data, idx), "cpu", torch.float32)
        t1 = time.perf_counter()
        loss = model(**batch).loss
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if step >= 3:
            seconds.update(batch=t1 - t0, forward=t2 - t1, backward=t3 - t2, optimiser=t4 - t3)
    total = sum(seconds.values())
    out = {f"{k}_share": v / total for k, v in seconds.items()}
    # the step itself, timed as a stage runs it (the loop above only splits it into phases)
    train_stage(model, data, params, replace(cfg.train, max_steps=3), cfg.seed,
                callbacks=callbacks, progress=False)
    t = time.perf_counter()
    train_stage(model, data, params, replace(cfg.train, max_steps=steps), cfg.seed,
                callbacks=callbacks, progress=False)
    out["step_ms"] = 1e3 * (time.perf_counter() - t) / steps
    return out


def operators(cfg, model, data, params) -> dict:
    """Operator counts per phase and the products' share of profiled time, one step."""
    from torch.profiler import ProfilerActivity, profile

    opt = torch.optim.AdamW(params, lr=cfg.train.lr, foreach=True)
    batch = to_device(train_batch(data, list(range(cfg.train.batch_size))), "cpu",
                      torch.float32)
    model.train()
    counts, product_us, total_us = {}, 0.0, 0.0
    loss = None

    def forward():
        nonlocal loss
        loss = model(**batch).loss

    for name, fn in [("forward", forward), ("backward", lambda: loss.backward()),
                     ("optimiser", lambda: (torch.nn.utils.clip_grad_norm_(params, 1.0),
                                            opt.step()))]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        ka = prof.key_averages()
        counts[f"{name}_ops"] = sum(k.count for k in ka)
        product_us += sum(k.self_cpu_time_total for k in ka if k.key in PRODUCTS)
        total_us += sum(k.self_cpu_time_total for k in ka)
    opt.zero_grad(set_to_none=True)
    return {**counts, "products_share_of_profiled": product_us / total_us}


def products(cfg, model, data) -> tuple[float, Counter]:
    """The step's FLOPs and its matrix products: (shape pair) -> calls per step."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    shapes: Counter = Counter()

    class Shapes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket.__name__)
            if name in ("mm", "addmm", "bmm"):
                ts = [a for a in args if isinstance(a, torch.Tensor)][-2:]
                shapes[(name, tuple(ts[0].shape), tuple(ts[1].shape))] += 1
            return func(*args, **(kwargs or {}))

    batch = to_device(train_batch(data, list(range(cfg.train.batch_size))), "cpu",
                      torch.float32)
    model.train()
    with FlopCounterMode(display=False) as fc, Shapes():
        model(**batch).loss.backward()
    for p in model.parameters():
        p.grad = None
    return fc.get_total_flops(), shapes


def products_seconds(shapes: Counter, reps: int = 20) -> float:
    """Seconds of one step's products, each timed alone on fresh operands of its shape."""
    total = 0.0
    for (name, a, b), n in shapes.items():
        x, y = torch.randn(a), torch.randn(b)
        fn = ((lambda x=x, y=y: torch.bmm(x, y)) if name == "bmm"
              else (lambda x=x, y=y: x @ y))
        for _ in range(3):
            fn()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        total += n * (time.perf_counter() - t) / reps
    return total


def floor(cfg, model, data, params, callbacks, steps: int, rounds: int) -> dict:
    """The step against its products alone, in alternating blocks (medians over rounds): how
    far framework cost puts the step above the time of its arithmetic."""
    flops, shapes = products(cfg, model, data)
    step, alone = [], []
    for r in range(rounds):
        t = time.perf_counter()
        train_stage(model, data, params, replace(cfg.train, max_steps=steps), r,
                    callbacks=callbacks, progress=False)
        step.append((time.perf_counter() - t) / steps)
        alone.append(products_seconds(shapes))
    s, a = statistics.median(step), statistics.median(alone)
    return {"gflop_per_step": flops / 1e9, "distinct_products": len(shapes),
            "products_alone_ms": 1e3 * a, "gflops_at_own_shapes": flops / a / 1e9,
            "step_ms_beside_floor": 1e3 * s, "step_over_floor": s / a}


def dropout_ab(preset, overrides, method, steps: int, rounds: int, dropout: float) -> dict:
    """Step time with adapter dropout ``dropout`` against without, alternating blocks."""
    key = DROPOUT_KEY[method]
    runs = {label: setup(preset, {**overrides, key: value}, method)
            for label, value in (("with", dropout), ("without", 0.0))}
    times = {label: [] for label in runs}
    for r in range(rounds + 1):
        for label, (cfg, model, data, params, callbacks) in runs.items():
            t = time.perf_counter()
            train_stage(model, data, params, replace(cfg.train, max_steps=steps), r,
                        callbacks=callbacks, progress=False)
            if r:
                times[label].append((time.perf_counter() - t) / steps * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    section, name = key.split(".")
    return {"dropout": float(getattr(getattr(runs["with"][0], section), name)),
            "with_dropout_ms": med["with"], "without_dropout_ms": med["without"],
            "dropout_share": 1 - med["without"] / med["with"]}


def narrow_ab(cfg, model, data, params, callbacks, steps: int, rounds: int) -> dict:
    """Step time with the narrow-product backward of the LoRA up-projections
    (:mod:`dmole_lab.experts.narrow`) against autograd's own layout, alternating blocks on the
    same model."""
    times = {"narrow": [], "plain": []}
    factors = 0
    for r in range(rounds + 1):
        for label in times:
            factors = max(factors, use_narrow_products(model, on=label == "narrow"))
            t = time.perf_counter()
            train_stage(model, data, params, replace(cfg.train, max_steps=steps), r,
                        callbacks=callbacks, progress=False)
            if r:
                times[label].append((time.perf_counter() - t) / steps * 1e3)
    use_narrow_products(model)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"narrow_factors": factors, "narrow_ms": med["narrow"], "plain_ms": med["plain"],
            "narrow_saves": 1 - med["narrow"] / med["plain"]}


def main(argv=None) -> int:
    """Profile each method's step; print and store the figures."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--methods", default="seq-lora,dmole")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3, help="alternating blocks for the dropout A/B")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.05,
                   help="the adapter dropout whose cost is measured (against none)")
    p.add_argument("--json", default=str(Path(__file__).with_name("results")
                                         / "profile_step.json"))
    args, rest = p.parse_known_args(argv)
    torch.set_num_threads(args.threads)
    overrides = parse_cli_overrides(rest)
    rows = {}
    for method in args.methods.split(","):
        cfg, model, data, params, callbacks = setup(args.preset, overrides, method)
        row = phases(cfg, model, data, params, callbacks, args.steps)
        row.update(operators(cfg, model, data, params))
        row.update(floor(cfg, model, data, params, callbacks, args.steps, args.rounds))
        row.update(narrow_ab(cfg, model, data, params, callbacks, args.steps, args.rounds))
        row.update(dropout_ab(args.preset, overrides, method, args.steps, args.rounds,
                              args.dropout))
        rows[method] = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
        print(method, json.dumps(rows[method], indent=1))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"preset": args.preset, "threads": args.threads,
                               "overrides": overrides, "torch": torch.__version__,
                               "methods": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
