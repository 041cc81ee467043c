"""Is the zero-cost proxy right? Proxy scores vs oracle layer gains, and how different tasks are.

Usage: python benchmarks/bench_proxy_oracle.py [--tasks a,b] [--steps 40] [--seeds 2]
                                               [--preset tiny] [overrides...]

1. Probes every task of the preset's stream (``dmole-lab probe``; resumes if already done).
2. For each task and each layer of both towers, trains a LoRA on that layer alone for
   ``--steps`` steps from the base model and records the held-out loss reduction (the oracle
   gain), for ``--seeds`` seeds; the oracle is their mean. Each (task, seed) is kept under
   <runs_dir>/oracle-parts, so an interrupted run resumes and more seeds train only the new
   ones. The agreement of the even seeds' mean with the odd seeds' mean says how far the
   oracle can be trusted (the ceiling a proxy can reach).
3. Reports Spearman(proxy per-layer score, oracle gain) per task, tower and proxy, and the
   diversity of the tasks' per-layer profiles (pairwise Spearman) under the proxy and the oracle.

Writes results/oracle-<preset>/{manifest.json,tables/*.parquet} (read by notebook 01), ships
the probe to results/probe-<preset>, and writes benchmarks/results/proxy_oracle.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

from dmole_lab.analysis.profiles import (
    TOWERS,
    layer_profiles,
    mean_offdiagonal,
    oracle_ceiling,
    oracle_profiles,
    proxy_vs_oracle,
    task_correlations,
    vision_share,
)
from dmole_lab.config import build_config, parse_cli_overrides, to_dict
from dmole_lab.data.encode import encode
from dmole_lab.data.stream import build_stream
from dmole_lab.engine.probe_stream import probe_stream
from dmole_lab.models.loading import load_model
from dmole_lab.probes.oracle import oracle_cost, oracle_gains, oracle_parts
from dmole_lab.store import write_json, write_table
from dmole_lab.viz.report import write_probe_figures
from dmole_lab.viz.results import RESULTS_DIR, ship


def oracle_table(cfg, tasks, steps, seeds, progress=True, cache: Path | None = None
                 ) -> pd.DataFrame:
    """Oracle gains of every layer for every task and seed (task, seed, tower, layer, gain).

    Each (task, seed) part is written to ``cache`` as it finishes and read back from there
    when the same config and steps run again, so an interrupted oracle resumes and a run
    with more seeds trains only the new ones."""
    from dataclasses import replace

    model, processor = load_model(cfg.model)
    stream = build_stream(cfg.stream, progress=False)
    train_cfg = replace(cfg.train, max_steps=steps, epochs=10**6)
    parts = []
    for task in tasks:
        train = encode(processor, stream.train[task][: steps * cfg.train.batch_size])
        test = encode(processor, stream.test[task])
        for seed in range(seeds):
            done = cache / f"{task}-seed{seed}.parquet" if cache else None
            if done is not None and done.is_file():
                parts.append(pd.read_parquet(done))
                continue
            t0 = time.perf_counter()
            g = oracle_gains(model, train, test, train_cfg, cfg.lora.r, cfg.lora.alpha,
                             seed=seed, progress=progress).assign(task=task, seed=seed)
            if done is not None:
                write_table(done, g)
            parts.append(g)
            print(f"oracle {task} seed {seed}: {time.perf_counter() - t0:.1f} s", flush=True)
    return pd.concat(parts, ignore_index=True)


def main(argv=None) -> int:
    """Run the probe and the oracle, then print and store the comparison."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--tasks", default=None, help="comma-separated (default: the whole stream)")
    p.add_argument("--steps", type=int, default=40, help="LoRA steps per layer")
    p.add_argument("--seeds", type=int, default=2, help="oracle seeds per task")
    p.add_argument("--results-dir", default=str(RESULTS_DIR),
                   help="where probe-PRESET and oracle-PRESET are shipped")
    p.add_argument("--json", default=str(Path(__file__).with_name("results")
                                          / "proxy_oracle.json"))
    args, rest = p.parse_known_args(argv)
    cfg = build_config(args.preset, parse_cli_overrides(rest))
    tasks = args.tasks.split(",") if args.tasks else list(cfg.stream.tasks)

    probe = probe_stream(cfg, progress=False)
    write_probe_figures(probe)
    ship(probe, f"probe-{args.preset}", Path(args.results_dir))
    table = probe.summary("sensitivity")
    k1 = probe.manifest()["probe_batches"]
    t0 = time.perf_counter()
    oracle = oracle_table(cfg, tasks, args.steps, args.seeds,
                          cache=oracle_parts(cfg, args.preset, args.steps))
    oracle_seconds = time.perf_counter() - t0
    mean_oracle = oracle_profiles(oracle, "gain")
    per_task, pooled = proxy_vs_oracle(table[table.task.isin(tasks)], mean_oracle, k1)
    ceiling = oracle_ceiling(oracle)

    diversity = {}
    oracle_prof = mean_oracle.rename(columns={"gain": "score"})
    for name, prof in (("proxy grad_norm", layer_profiles(table, "grad_norm", k1)),
                       ("oracle", oracle_prof)):
        prof = prof[prof.task.isin(tasks)]
        diversity[name] = {t: round(mean_offdiagonal(task_correlations(prof, t, tasks)), 3)
                           for t in TOWERS}

    proxy_share = vision_share(layer_profiles(table, "grad_norm", k1))
    oracle_share = vision_share(oracle_prof)
    out = Path(args.results_dir) / f"oracle-{args.preset}"
    write_table(out / "tables" / "oracle.parquet", oracle)
    write_table(out / "tables" / "proxy_vs_oracle.parquet", per_task)
    write_table(out / "tables" / "proxy_vs_oracle_pooled.parquet", pooled)
    write_table(out / "tables" / "oracle_ceiling.parquet", ceiling)
    write_json(out / "manifest.json", {
        "name": out.name, "kind": "oracle", "method": "oracle", "tasks": tasks,
        "steps": args.steps, "seeds": args.seeds, "probe_batches": k1, "stages": {},
        "config": to_dict(cfg), "status": "complete"})
    result = {
        "preset": args.preset, "tasks": tasks, "steps_per_layer": args.steps,
        "seeds": args.seeds, "probe_batches": k1, "oracle_seconds": round(oracle_seconds, 1),
        "oracle_cost": oracle_cost(oracle),
        "spearman_proxy_vs_oracle": {
            f"{r.tower}/{r.proxy}": f"{r['mean']:+.2f} +- {r['std']:.2f}"
            for _, r in pooled.iterrows()},
        "oracle_seed_agreement": {
            t: round(float(ceiling[ceiling.tower == t].spearman.mean()), 3) for t in TOWERS}
        if len(ceiling) else {},
        "oracle_single_seed_agreement": {
            t: round(float(ceiling[ceiling.tower == t].single.mean()), 3) for t in TOWERS}
        if len(ceiling) else {},
        "task_profile_mean_pairwise_spearman": diversity,
        "vision_share": {"proxy grad_norm (rho_V)": proxy_share.round(3).to_dict(),
                         "oracle": oracle_share.round(3).to_dict()},
        "vision_share_spearman_over_tasks": round(float(
            spearmanr(proxy_share[tasks], oracle_share[tasks]).statistic), 3),
        "oracle_best_layer": {
            t: {tw: int(d[d.tower == tw].sort_values("gain").layer.iloc[-1]) for tw in TOWERS}
            for t, d in mean_oracle.groupby("task", sort=False)},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(pooled.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
