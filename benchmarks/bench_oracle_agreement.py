"""How many seeds until the oracle agrees with itself? Its split-half agreement against seeds.

Usage: python benchmarks/bench_oracle_agreement.py [--preset tiny] [--tower vision]
                                                   [--steps 80] [--seeds 12] [--ship]
                                                   [overrides...]

Trains the oracle of benchmarks/bench_proxy_oracle.py (a LoRA on one layer alone, ``--steps``
steps from the base model, the held-out loss it removes) for one tower's layers at seeds
0 .. ``--seeds`` - 1. Seeds that bench_proxy_oracle.py already trained for both towers are
read from its cache (<runs_dir>/oracle-parts), new ones are kept in their own cache, so an
interrupted run resumes. For n = 2, 4, ... seeds it reports the oracle's split-half agreement
(even seeds' mean against odd seeds' mean, mean over tasks;
:func:`dmole_lab.analysis.profiles.oracle_ceiling`) and the mean single-seed agreement, and,
when the probe that bench_proxy_oracle.py shipped (results/probe-<preset>) is there, each
proxy's Spearman with the oracle of those n seeds (is the proxy's weak showing the oracle's
noise?), and what the tower's oracle cost to train (``cost``: seconds kept in every part,
cached or new). Writes benchmarks/results/oracle_agreement.json; ``--ship`` also stores the
oracle, both curves and the per-task agreement at all seeds (``oracle_ceiling``, as
bench_proxy_oracle.py ships it) as results/oracle-<tower>-<preset> (notebook 05).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from dmole_lab.analysis.profiles import ceiling_by_seeds, oracle_ceiling, proxy_by_seeds
from dmole_lab.config import build_config, parse_cli_overrides, to_dict
from dmole_lab.data.encode import encode
from dmole_lab.data.stream import build_stream
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.loading import load_model
from dmole_lab.probes.oracle import oracle_cost, oracle_gains, oracle_parts
from dmole_lab.store import write_json, write_table
from dmole_lab.viz.results import RESULTS_DIR, open_run


def tower_oracle(cfg, tasks, tower, steps, seeds, both: Path, own: Path) -> pd.DataFrame:
    """Gains of ``tower``'s layers for every task and seed: from the two-tower cache ``both``
    where a seed is there, else trained now and kept in ``own``."""
    model, processor = load_model(cfg.model)
    stream = build_stream(cfg.stream, progress=False)
    layers = [(tower, i) for i in range(anatomy_of(model).n_layers(tower))]
    train_cfg = replace(cfg.train, max_steps=steps, epochs=10**6)
    parts = []
    for task in tasks:
        data = None
        for seed in range(seeds):
            shared, mine = both / f"{task}-seed{seed}.parquet", own / f"{task}-seed{seed}.parquet"
            if shared.is_file() or mine.is_file():
                g = pd.read_parquet(shared if shared.is_file() else mine)
                parts.append(g[g["tower"] == tower])
                continue
            if data is None:
                data = (encode(processor, stream.train[task][: steps * cfg.train.batch_size]),
                        encode(processor, stream.test[task]))
            t0 = time.perf_counter()
            g = oracle_gains(model, *data, train_cfg, cfg.lora.r, cfg.lora.alpha, layers=layers,
                             seed=seed).assign(task=task, seed=seed)
            write_table(mine, g)
            parts.append(g)
            print(f"oracle {task} {tower} seed {seed}: {time.perf_counter() - t0:.1f} s",
                  flush=True)
    return pd.concat(parts, ignore_index=True)


def main(argv=None) -> int:
    """Train what is missing, then report the agreement against the number of seeds."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--tasks", default=None, help="comma-separated (default: the whole stream)")
    p.add_argument("--tower", default="vision", choices=("vision", "llm"))
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--seeds", type=int, default=12)
    p.add_argument("--json", default=str(Path(__file__).with_name("results")
                                          / "oracle_agreement.json"))
    p.add_argument("--results-dir", default=str(RESULTS_DIR),
                   help="where bench_proxy_oracle.py shipped probe-PRESET, and where "
                        "--ship writes")
    p.add_argument("--ship", action="store_true",
                   help="store the oracle and both curves as oracle-TOWER-PRESET (notebook 05)")
    args, rest = p.parse_known_args(argv)
    if args.seeds < 2 or args.steps < 1:
        raise SystemExit(f"--seeds must be >= 2 and --steps >= 1, got {args.seeds} and "
                         f"{args.steps}")
    cfg = build_config(args.preset, parse_cli_overrides(rest))
    tasks = args.tasks.split(",") if args.tasks else list(cfg.stream.tasks)
    shared = oracle_parts(cfg, args.preset, args.steps)
    t0 = time.perf_counter()
    oracle = tower_oracle(cfg, tasks, args.tower, args.steps, args.seeds, shared,
                          shared.with_name(f"{shared.name}-{args.tower}"))
    curve = ceiling_by_seeds(oracle)
    result = {"preset": args.preset, "tower": args.tower, "steps": args.steps, "tasks": tasks,
              "seconds_this_call": round(time.perf_counter() - t0, 1),
              "cost": oracle_cost(oracle),
              "agreement": [{"seeds": int(r.seeds), "split_half": round(r.split_half, 3),
                             "single": round(r.single, 3)} for r in curve.itertuples()]}
    tables = {"oracle": oracle, "agreement": curve, "oracle_ceiling": oracle_ceiling(oracle)}
    probe = Path(args.results_dir) / f"probe-{args.preset}"
    if (probe / "manifest.json").is_file():
        run = open_run(probe.name, Path(args.results_dir))
        k1 = run.manifest()["probe_batches"]
        tables["proxy_by_seeds"] = proxies = proxy_by_seeds(run.summary("sensitivity"), oracle,
                                                            k1)
        result["proxy_vs_oracle"] = {
            "probe": probe.name, "probe_batches": k1,
            "by_seeds": [{"seeds": int(n), **dict(zip(d["proxy"], d["spearman"].round(3)))}
                         for n, d in proxies.groupby("seeds")]}
    if args.ship:
        out = Path(args.results_dir) / f"oracle-{args.tower}-{args.preset}"
        for name, table in tables.items():
            write_table(out / "tables" / f"{name}.parquet", table)
        write_json(out / "manifest.json", {
            "name": out.name, "kind": "oracle", "method": "oracle", "tower": args.tower,
            "tasks": tasks, "steps": args.steps, "seeds": args.seeds, "stages": {},
            "config": to_dict(cfg), "status": "complete"})
        print(f"shipped {out}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
