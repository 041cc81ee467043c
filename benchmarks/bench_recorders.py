"""Cost of the per-step training recorders (TowerDynamics), measured side by side.

Usage: python benchmarks/bench_recorders.py [--rounds 30] [--steps 10] [--preset tiny]
                                            [overrides...]

The model of the preset gets the sequential-LoRA adapter of the first task; then blocks of
``--steps`` training steps run alternately without and with the recorder (same data, seed and
optimiser set-up), ``--rounds`` times each, so drift of the machine hits both alike. Reports

- the A/B overhead: median over rounds of (block time with the recorder / the block without it
  just before) - 1, and the same from the median block times;
- the recorder's own time: seconds spent inside its two hooks (timed around each call) as a
  share of the recorded blocks' step time (the precise figure; the A/B ratio carries noise).

Writes benchmarks/results/recorders.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from dmole_lab.config import build_config, parse_cli_overrides
from dmole_lab.data.encode import encode
from dmole_lab.data.stream import build_stream
from dmole_lab.methods import make_method
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.loading import load_model
from dmole_lab.probes.recorders import TowerDynamics
from dmole_lab.seeding import seed_everything
from dmole_lab.training.stage import TrainCallback, train_stage


class Timed(TrainCallback):
    """Wraps a callback and adds up the seconds spent inside its hooks."""

    def __init__(self, inner: TrainCallback):
        self.inner, self.seconds = inner, 0.0

    def on_backward(self, step, model):
        """Time the wrapped on_backward."""
        t = time.perf_counter()
        self.inner.on_backward(step, model)
        self.seconds += time.perf_counter() - t

    def on_step(self, step, loss, model):
        """Time the wrapped on_step."""
        t = time.perf_counter()
        self.inner.on_step(step, loss, model)
        self.seconds += time.perf_counter() - t


def main(argv=None) -> int:
    """Alternate blocks with and without the recorder; print and store the overhead."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--steps", type=int, default=10, help="training steps per block")
    p.add_argument("--json", default=str(Path(__file__).with_name("results") / "recorders.json"))
    args, rest = p.parse_known_args(argv)
    cfg = build_config(args.preset, parse_cli_overrides(rest))
    seed_everything(cfg.seed)
    model, processor = load_model(cfg.model)
    anatomy = anatomy_of(model)
    stream = build_stream(cfg.stream, progress=False)
    task = cfg.stream.tasks[0]
    data = encode(processor, stream.train[task])
    method = make_method(cfg, anatomy)
    model = method.begin_task(model, 1, task, data)
    params = method.trainable_parameters(model)
    block_cfg = replace(cfg.train, max_steps=args.steps)

    train_stage(model, data, params, block_cfg, cfg.seed, progress=False)  # warm-up
    plain, recorded, hook_seconds, rows = [], [], 0.0, 0
    for r in range(args.rounds):
        log = train_stage(model, data, params, block_cfg, cfg.seed + r, progress=False)
        plain.append(log.seconds)
        rec = Timed(TowerDynamics(model, anatomy, cfg.probe.record_every))
        log = train_stage(model, data, params, block_cfg, cfg.seed + r, callbacks=(rec,),
                          progress=False)
        recorded.append(log.seconds)
        hook_seconds += rec.seconds
        rows += len(rec.inner.rows)
        if r % 10 == 9:
            print(f"{r + 1} rounds", flush=True)
    step_ms = statistics.median(plain) / args.steps * 1e3
    result = {
        "preset": args.preset, "task": task, "batch_size": cfg.train.batch_size,
        "rounds": args.rounds, "steps_per_block": args.steps,
        "trainable_params": sum(p.numel() for p in params),
        "median_step_ms_without": round(step_ms, 2),
        "median_step_ms_with": round(statistics.median(recorded) / args.steps * 1e3, 2),
        "ab_overhead_pct_paired": round(100 * (statistics.median(
            [w / wo for w, wo in zip(recorded, plain)]) - 1), 2),
        "ab_overhead_pct_of_medians": round(
            100 * (statistics.median(recorded) / statistics.median(plain) - 1), 2),
        "hook_ms_per_step": round(hook_seconds / (args.rounds * args.steps) * 1e3, 3),
        "hook_share_of_step_pct": round(100 * hook_seconds / sum(recorded), 2),
        "rows_per_step": rows / (args.rounds * args.steps),
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
