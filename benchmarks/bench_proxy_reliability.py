"""How many probe batches does the zero-cost proxy need? Its stability and its agreement with
the oracle as a function of K+1.

Usage: python benchmarks/bench_proxy_reliability.py [--preset tiny] [--seeds 4]
           [--batches 1,2,4,8,16,32] [--tasks a,b] [--oracle results/oracle-tiny]
           [--results-dir results] [--json benchmarks/results/proxy_reliability.json]
           [overrides...]

For every task of the preset's stream, probes the frozen base model (docs/method.md section 2
step 1) with ``--seeds`` different seeded orders of the task's whole training set, reading every
proxy after each batch count of ``--batches`` (one pass: gradients accumulate, so the scores
after n batches are what a probe of n batches gives). Then, per batch count, tower and proxy:

- **stability**: the Spearman correlation between two probe seeds' per-layer profiles of a
  task, averaged over the pairs of seeds, then over tasks (1 = the ranking of layers does not
  depend on which batches were drawn);
- **agreement with the oracle**: the Spearman correlation between a probe's per-layer profile
  and the oracle's layer gains (``--oracle``: a folder written by bench_proxy_oracle.py, gains
  averaged over its seeds), averaged over seeds and tasks.

Writes ``results/proxy-reliability-<preset>`` (read by notebook 01) and the JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

from dmole_lab.analysis.profiles import layer_profiles, oracle_profiles, proxy_vs_oracle
from dmole_lab.config import build_config, parse_cli_overrides, to_dict
from dmole_lab.data.encode import encode
from dmole_lab.data.stream import build_stream
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.loading import load_model
from dmole_lab.probes.sensitivity import sensitivity
from dmole_lab.store import write_json, write_table
from dmole_lab.viz.results import RESULTS_DIR


def probe_seeds(cfg, tasks: list[str], seeds: int, counts: list[int]) -> pd.DataFrame:
    """The sensitivity table of every task under ``seeds`` seeded orders of its training set,
    read at every batch count in ``counts`` (columns of the probe's table, task, probe_seed)."""
    model, processor = load_model(cfg.model)
    anatomy = anatomy_of(model)
    stream = build_stream(cfg.stream, progress=False)
    bs = cfg.probe.batch_size or cfg.train.batch_size
    parts = []
    for task in tasks:
        data = encode(processor, stream.train[task])
        for seed in range(seeds):
            t0 = time.perf_counter()
            table = sensitivity(model, data, cfg.probe.proxies, batches=max(counts),
                                batch_size=bs, seed=seed, snapshots=tuple(counts),
                                anatomy=anatomy)
            parts.append(table.assign(task=task, probe_seed=seed))
            print(f"probe {task} seed {seed}: {time.perf_counter() - t0:.1f} s", flush=True)
    return pd.concat(parts, ignore_index=True)


def stability(table: pd.DataFrame) -> pd.DataFrame:
    """Per batch count, proxy, task and tower: the mean Spearman correlation between the
    per-layer profiles of every pair of probe seeds."""
    rows = []
    seeds = sorted(set(table["probe_seed"]))
    for (batches, proxy), part in table.groupby(["batches", "proxy"], sort=True):
        profiles = {s: layer_profiles(part[part["probe_seed"] == s], proxy, batches)
                    .set_index(["task", "tower", "layer"])["score"] for s in seeds}
        both = pd.DataFrame(profiles)
        for (task, tower), d in both.groupby(level=["task", "tower"], sort=False):
            rhos = [spearmanr(d[a], d[b]).statistic for a, b in itertools.combinations(seeds, 2)]
            rows.append({"batches": int(batches), "proxy": proxy, "task": task, "tower": tower,
                         "spearman": float(pd.Series(rhos).mean())})
    return pd.DataFrame(rows)


def against_oracle(table: pd.DataFrame, oracle: pd.DataFrame) -> pd.DataFrame:
    """Per batch count, probe seed, proxy, task and tower: Spearman(proxy profile, oracle gain)
    (``oracle``: task, tower, layer, gain)."""
    parts = []
    for (batches, seed), part in table.groupby(["batches", "probe_seed"], sort=True):
        per_task, _ = proxy_vs_oracle(part, oracle, batches)
        parts.append(per_task.assign(batches=int(batches), probe_seed=int(seed)))
    return pd.concat(parts, ignore_index=True)


def reliability(stable: pd.DataFrame, agree: pd.DataFrame | None) -> pd.DataFrame:
    """Per batch count, tower and proxy: stability and agreement with the oracle, each as the
    mean and std over tasks (agreement: averaged over probe seeds first)."""
    keys = ["batches", "tower", "proxy"]
    out = (stable.groupby(keys)["spearman"].agg(["mean", "std"])
           .rename(columns={"mean": "stability", "std": "stability_std"}))
    if agree is not None:
        per_task = agree.groupby([*keys, "task"])["spearman"].mean()
        out = out.join(per_task.groupby(level=keys).agg(["mean", "std"])
                       .rename(columns={"mean": "oracle", "std": "oracle_std"}))
    return out.reset_index()


def main(argv=None) -> int:
    """Probe with several seeds, tabulate stability and agreement, store them."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--tasks", default=None, help="comma-separated (default: the whole stream)")
    p.add_argument("--seeds", type=int, default=4, help="probe seeds (orders of the data)")
    p.add_argument("--batches", default="1,2,4,8,16,32", help="batch counts K+1 to read")
    p.add_argument("--oracle", default=str(RESULTS_DIR / "oracle-tiny"),
                   help="a bench_proxy_oracle.py folder, or 'none'")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    p.add_argument("--json", default=str(Path(__file__).with_name("results")
                                          / "proxy_reliability.json"))
    args, rest = p.parse_known_args(argv)
    counts = sorted({int(b) for b in args.batches.split(",")})
    if args.seeds < 2 or counts[0] < 1:
        raise SystemExit(f"need --seeds >= 2 and batch counts >= 1; got {args.seeds}, {counts}")
    cfg = build_config(args.preset, parse_cli_overrides(rest))
    tasks = args.tasks.split(",") if args.tasks else list(cfg.stream.tasks)
    oracle = None
    if args.oracle != "none":
        path = Path(args.oracle) / "tables" / "oracle.parquet"
        if not path.is_file():
            raise SystemExit(f"no oracle table at {path}: run bench_proxy_oracle.py, or pass "
                             "--oracle none")
        oracle = oracle_profiles(pd.read_parquet(path), "gain")
    t0 = time.perf_counter()
    table = probe_seeds(cfg, tasks, args.seeds, counts)
    seconds = time.perf_counter() - t0
    stable = stability(table)
    agree = against_oracle(table, oracle) if oracle is not None else None
    result = reliability(stable, agree)
    out = Path(args.results_dir) / f"proxy-reliability-{args.preset}"
    write_table(out / "tables" / "reliability.parquet", result)
    write_table(out / "tables" / "stability.parquet", stable)
    if agree is not None:
        write_table(out / "tables" / "against_oracle.parquet", agree)
    write_json(out / "manifest.json", {
        "name": out.name, "kind": "proxy-reliability", "method": "probe", "tasks": tasks,
        "probe_seeds": args.seeds, "batches": counts, "oracle": args.oracle, "stages": {},
        "config": to_dict(cfg), "status": "complete"})
    summary = {"preset": args.preset, "tasks": tasks, "probe_seeds": args.seeds,
               "batches": counts, "probe_seconds": round(seconds, 1),
               "rows": result.round(3).to_dict(orient="records")}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(summary, indent=2))
    print(result[result.proxy == "grad_norm"].round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
