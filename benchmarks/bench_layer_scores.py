"""Why does layer 0 dominate the proxy, and does any other layer score rank layers like the oracle?

Usage: python benchmarks/bench_layer_scores.py [--preset tiny] [--tasks a,b] [--batches 2]
                                               [--tune-steps 80] [--oracle DIR] [overrides...]

For every task of the preset's stream, on the frozen base model:
1. reads what each candidate module's gradient norm is made of over the same K+1 probe batches
   as the proxy (``--batches``; :func:`dmole_lab.probes.factors.layer_factors`): weight norm,
   input RMS, RMS of the gradient at its output, the layer's normalisation gain, and the RMS of
   the hidden state entering the layer; and the layer-0 excess of each factor;
2. forms the named layer scores: the factor scores of
   :data:`dmole_lab.analysis.profiles.FACTOR_SCORES`, ``snip`` and ``fisher``, the cross-task
   normalisations of ``grad_norm`` (:data:`~dmole_lab.analysis.profiles.ACROSS_TASKS`), and the
   CKA scores of :mod:`dmole_lab.probes.cka` (``cka_change`` trains one LoRA on every layer for
   ``--tune-steps`` steps per task);
3. compares each with the oracle gains of ``--oracle`` (benchmarks/bench_proxy_oracle.py):
   Spearman over a tower's layers, per task, then mean and std over tasks.

Each task's measurements are kept under <runs_dir>/layer-score-parts as they finish, so an
interrupted run resumes and a rerun against another oracle measures nothing again.

Writes results/layer-scores-<preset>/ (notebook 05) and benchmarks/results/layer_scores.json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from dmole_lab.analysis.profiles import (
    ACROSS_TASKS,
    across_tasks,
    factor_scores,
    layer_profiles,
    oracle_profiles,
    score_agreement,
)
from dmole_lab.config import build_config, parse_cli_overrides, resolve_path, to_dict
from dmole_lab.data.encode import encode
from dmole_lab.data.stream import build_stream
from dmole_lab.models.loading import load_model
from dmole_lab.probes.cka import (
    cka_change,
    cka_transform,
    layer_representations,
    tuned_representations,
)
from dmole_lab.probes.factors import layer_factors, layer_zero_excess
from dmole_lab.probes.oracle import oracle_key
from dmole_lab.probes.sensitivity import sensitivity
from dmole_lab.store import write_json, write_table
from dmole_lab.viz.results import RESULTS_DIR, open_run


def task_scores(cfg, model, processor, stream, task, batches, tune_steps,
                cache: Path | None = None):
    """One task's factors table and its CKA and snip/fisher layer scores; read back from
    ``cache`` when this config, batch count and tuning length already produced them (so an
    interrupted run resumes, and a new oracle is compared without measuring again)."""
    done = [cache / f"{task}-{kind}.parquet" for kind in ("factors", "scores")] if cache else []
    if done and all(p.is_file() for p in done):
        return tuple(pd.read_parquet(p) for p in done)
    bs = cfg.train.batch_size
    probe = encode(processor, stream.train[task][: batches * bs])
    held_out = encode(processor, stream.test[task])
    factors = layer_factors(model, probe, batches=batches, batch_size=bs).assign(task=task)
    table = sensitivity(model, probe, ("snip", "fisher"), batches=batches, batch_size=bs)
    parts = [layer_profiles(table.assign(task=task), p).assign(score_name=p)
             for p in ("snip", "fisher")]
    base = layer_representations(model, held_out, inputs=True)
    parts.append(cka_transform(base).assign(task=task, score_name="cka_transform"))
    if tune_steps:
        train = encode(processor, stream.train[task][: tune_steps * bs])
        tuned = tuned_representations(model, train, held_out,
                                      replace(cfg.train, max_steps=tune_steps, epochs=10**6),
                                      cfg.lora.r, cfg.lora.alpha)
        parts.append(cka_change(base, tuned).assign(task=task, score_name="cka_change"))
    other = pd.concat(parts, ignore_index=True)
    for path, table in zip(done, (factors, other)):
        write_table(path, table)
    return factors, other


def all_scores(factors: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """Every named layer score: task, tower, layer, score_name, score."""
    fs = factor_scores(factors)
    grad = fs[fs.score_name == "grad_norm"].drop(columns="score_name")
    cross = [across_tasks(grad, how).assign(score_name=f"grad_norm:{how}") for how in ACROSS_TASKS]
    return pd.concat([fs, other, *cross], ignore_index=True)[
        ["task", "tower", "layer", "score_name", "score"]]


def main(argv=None) -> int:
    """Measure, compare and store."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--tasks", default=None, help="comma-separated (default: the whole stream)")
    p.add_argument("--batches", type=int, default=2, help="K+1 probe batches (D-MoLE: 2)")
    p.add_argument("--tune-steps", type=int, default=80,
                   help="LoRA steps before cka_change (0: leave cka_change out)")
    p.add_argument("--oracle", default=None,
                   help="folder holding oracle-<preset> (default: the shipped results/)")
    p.add_argument("--results-dir", default=str(RESULTS_DIR),
                   help="where layer-scores-<preset> goes")
    p.add_argument("--json", default=str(Path(__file__).with_name("results")
                                          / "layer_scores.json"))
    args, rest = p.parse_known_args(argv)
    if args.batches < 1 or args.tune_steps < 0:
        raise SystemExit(f"--batches must be >= 1 and --tune-steps >= 0, got {args.batches} "
                         f"and {args.tune_steps}")
    cfg = build_config(args.preset, parse_cli_overrides(rest))
    tasks = args.tasks.split(",") if args.tasks else list(cfg.stream.tasks)
    oracle_run = open_run(f"oracle-{args.preset}",
                          Path(args.oracle) if args.oracle else RESULTS_DIR)
    oracle_gain = oracle_profiles(oracle_run.summary("oracle"), "gain")

    model, processor = load_model(cfg.model)
    stream = build_stream(cfg.stream, progress=False)
    t0 = time.perf_counter()
    factors, other = [], []
    cache = (resolve_path(cfg.runs_dir) / "layer-score-parts"
             / f"{oracle_key(cfg, args.preset)}-k{args.batches}-tune{args.tune_steps}")
    for task in tasks:
        f, o = task_scores(cfg, model, processor, stream, task, args.batches, args.tune_steps,
                           cache)
        factors.append(f)
        other.append(o)
        print(f"{task}: {time.perf_counter() - t0:.1f} s", flush=True)
    factors = pd.concat(factors, ignore_index=True)
    scores = all_scores(factors, pd.concat(other, ignore_index=True))
    per_task, pooled = score_agreement(scores, oracle_gain)
    excess = pd.concat([layer_zero_excess(d).assign(task=t)
                        for t, d in factors.groupby("task", sort=False)], ignore_index=True)

    out = Path(args.results_dir) / f"layer-scores-{args.preset}"
    for name, t in (("factors", factors), ("scores", scores), ("agreement", per_task),
                    ("agreement_pooled", pooled), ("layer_zero_excess", excess)):
        write_table(out / "tables" / f"{name}.parquet", t)
    write_json(out / "manifest.json", {
        "name": out.name, "kind": "layer-scores", "method": "layer-scores", "tasks": tasks,
        "probe_batches": args.batches, "tune_steps": args.tune_steps,
        "oracle_seeds": int(oracle_run.summary("oracle")["seed"].nunique()),
        "oracle_steps": oracle_run.manifest().get("steps"), "stages": {},
        "config": to_dict(cfg), "status": "complete"})
    result = {
        "preset": args.preset, "tasks": tasks, "probe_batches": args.batches,
        "tune_steps": args.tune_steps, "seconds": round(time.perf_counter() - t0, 1),
        "spearman_with_oracle": {f"{r.tower}/{r.score_name}": f"{r['mean']:+.2f} +- {r['std']:.2f}"
                                 for _, r in pooled.iterrows()},
        "layer_zero_excess_mean_over_tasks": {
            f"{tw}/{f}": round(float(d["ratio"].mean()), 2)
            for (tw, f), d in excess.groupby(["tower", "factor"], sort=False)},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
