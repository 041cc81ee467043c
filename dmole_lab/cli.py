"""Command line: ``dmole-lab {pretrain,run,probe,compare,report,config,export,plan,check-data}``
(also ``python -m dmole_lab``).

``check-data --stream.file=PATH`` checks a stream file's data and reads no config. Every other
command takes ``--preset NAME`` (a file in ``configs/``) and strict dotted overrides such
as ``--train.lr=1e-4``; an unknown key, a value of the wrong type or out of range stops with a
one-line message that names the key and what is allowed (exit status 2), before anything is
loaded or written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dmole_lab.config import (
    ConfigError,
    allowed_values,
    build_config,
    describe,
    list_presets,
    parse_cli_overrides,
    resolve_path,
    to_dict,
)


def _parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a config override such as --method=x or --seed=1 must not be taken
    # for an abbreviation of --methods or --seeds
    p = argparse.ArgumentParser(
        prog="dmole-lab", allow_abbrev=False,
        description="Continual multimodal instruction tuning lab (D-MoLE and peers).",
        epilog="Overrides: any config key as --section.key=value; "
               "`dmole-lab config --keys` lists them.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in [
        ("pretrain", "pre-train the embedded tiny model on the base mix"),
        ("run", "train a method over the stream and write its score matrix"),
        ("probe", "sensitivity of every task of the stream on the frozen base model"),
        ("compare", "run methods x seeds (resumable, shardable) and write the comparison table"),
        ("report", "print and plot the score matrix and metrics of a finished run"),
        ("config", "print the resolved config (or --keys: every key with its help)"),
        ("export", "write the synthetic stream as files in the field's formats (PNG images, "
                   "LLaVA training JSON, CoIN test files, a stream YAML)"),
        ("plan", "parameters per tower, trainable parameters per method and estimated GPU "
                 "memory of a preset, without training"),
    ]:
        sp = sub.add_parser(name, help=help_, allow_abbrev=False)
        sp.add_argument("--preset", default=None,
                        help=f"preset name or YAML path; shipped: {', '.join(list_presets())}")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "run":
            sp.add_argument("--methods", default=None,
                            help="comma-separated methods run on the same stream and compared "
                                 "(replaces --method)")
            sp.add_argument("--jobs", type=int, default=1,
                            help="with --methods: run that many methods at once, each in its own "
                                 "process with cores / jobs torch threads (default 1: one after "
                                 "the other)")
        if name == "compare":
            sp.add_argument("--methods", default=None,
                            help="comma-separated variants: a method, method+key=value..., or "
                                 "an ablation dmole-v1..dmole-v4 (default: every peer)")
            sp.add_argument("--no-ablations", action="store_true",
                            help="leave out D-MoLE's ablations dmole-v1..v4")
            sp.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
            sp.add_argument("--shard", default="1/1",
                            help="i/n: run only every n-th job from the i-th (split the work "
                                 "over processes or machines sharing runs_dir)")
            sp.add_argument("--threads", type=int, default=0,
                            help="torch threads per process (0 = torch's default); 1 when "
                                 "several shards share a small CPU")
            sp.add_argument("--out", default=None,
                            help="folder of the tables (default: <runs_dir>/compare-<preset>)")
            sp.add_argument("--table-only", action="store_true",
                            help="train nothing: write the table of the finished runs")
            sp.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                            help="train nothing: tabulate the finished runs of this sweep found "
                                 "in these runs folders (shards run on several machines); "
                                 "refuses runs of another config or code version")
        if name == "report":
            sp.add_argument("--run-dir", default=None,
                            help="a run folder (default: the run of the preset + overrides)")
            sp.add_argument("--rescore", default=None, metavar="SCORER",
                            help="re-score the stored predictions with a field scorer (exact, "
                                 "substring, vqa, cider, ...) and print and write its score "
                                 "matrix and metrics next to the stored ones")
        if name == "config":
            sp.add_argument("--keys", action="store_true", help="list every key with its help")
        if name == "plan":
            sp.add_argument("--no-activations", action="store_true",
                            help="skip measuring activations (a real-width two-layer copy of "
                                 "the model runs one step on the CPU: seconds to minutes)")
        if name == "export":
            sp.add_argument("--out", required=True,
                            help="an empty folder; run on it with --stream.file=OUT/stream.yaml")
    cd = sub.add_parser("check-data", allow_abbrev=False,
                        help="check every file of a stream file (no config, writes nothing)")
    cd.add_argument("--stream.file", "--stream-file", dest="stream_file", required=True,
                    help="stream YAML (configs/streams/coin.yaml, dmole.yaml, or one written "
                         "by dmole-lab export)")
    cd.add_argument("--images", choices=["exists", "verify"], default="exists",
                    help="exists: image files exist; verify: also decode their headers")
    return p


def _cmd_pretrain(cfg, args) -> int:
    from dmole_lab.models.pretrain import pretrain

    out = pretrain(cfg, progress=not args.quiet)
    print(f"saved the pre-trained tiny model to {out}")
    return 0


def _cmd_run(cfg, args) -> int:
    from dataclasses import replace

    from dmole_lab.engine.continual import check_run, run
    from dmole_lab.methods import check_method
    from dmole_lab.training.distributed import main_process

    if not args.methods:
        if args.jobs != 1:
            raise ValueError(f"--jobs {args.jobs} needs --methods: one run is one process")
        store = run(cfg, progress=not args.quiet)
        if main_process():  # under a launcher the others trained alongside; one reports
            _print_report(store)
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:  # all names checked before the first run starts
        check_method(m)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    cfgs = [replace(cfg, method=m) for m in methods]
    for c in cfgs:  # every run's cheap checks before the first one writes anything
        check_run(c)
    if args.jobs > 1 and "WORLD_SIZE" in os.environ:
        raise ValueError(f"--jobs {args.jobs} starts its own processes; under a launcher "
                         "use --jobs 1 (the launcher's processes train each run together)")
    if args.jobs > 1:
        from dmole_lab.engine.parallel import run_parallel

        stores = run_parallel(cfgs, args.jobs, progress=not args.quiet)
        for store in stores:
            _print_report(store)
    else:
        stores = []
        for c in cfgs:
            stores.append(run(c, progress=not args.quiet))
            if main_process():
                _print_report(stores[-1])
    if main_process():
        _print_comparison(stores, cfg)
    return 0


def _print_comparison(stores, cfg) -> None:
    import pandas as pd

    from dmole_lab.analysis.compare import headline_table
    from dmole_lab.viz.report import write_comparison

    names = "_vs_".join(s.manifest()["method"] for s in stores)
    out = resolve_path(cfg.runs_dir) / "compare" / f"{names}-seed{cfg.seed}"
    paths = write_comparison(stores, out)
    table = headline_table(stores).drop(columns=["seed"]).set_index("method")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"\ncomparison (seed {cfg.seed}; BWT divisor T-1; training time = set-up + "
              "training + wrap-up):")
        print(table.round(2).to_string())
    for k, v in paths.items():
        print(f"{k}: {v}")


def _cmd_compare(cfg, args) -> int:
    import pandas as pd
    import torch

    from dmole_lab.analysis.compare import format_table, parse_seeds, parse_shard, parse_variants
    from dmole_lab.engine.sweep import merge, sweep
    from dmole_lab.viz.report import write_figures

    variants = parse_variants(args.methods, ablations=not args.no_ablations)
    seeds = parse_seeds(args.seeds)
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    shard = parse_shard(args.shard)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = Path(args.preset or "default").stem
    out = Path(args.out) if args.out else resolve_path(cfg.runs_dir) / f"compare-{name}"
    if args.merge:
        if args.shard != "1/1" or args.table_only:
            raise ValueError("--merge trains nothing: it takes no --shard or --table-only")
        result = merge(cfg, variants, seeds, [resolve_path(d) for d in args.merge], out)
    else:
        result = sweep(cfg, variants, seeds, out, shard=shard, table_only=args.table_only,
                       progress=not args.quiet, on_finish=write_figures)
    if not result.done:
        print("no finished run yet: nothing to tabulate")
        return 1 if result.failed else 0
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(f"\n{len(result.done)} of {len(result.done) + len(result.missing)} runs finished; "
              "mean +- std over seeds (BWT divisor T-1, forgetting 'first'):")
        print(format_table(result.table).to_string())
    if result.missing:
        print("missing: " + ", ".join(f"{v.name} (seed {s})" for v, s in result.missing))
    for k, v in result.paths.items():
        print(f"{k}: {v}")
    if result.failed:
        print("failed (traceback above): " + ", ".join(result.failed), file=sys.stderr)
        return 1
    return 0


def _cmd_probe(cfg, args) -> int:
    import pandas as pd

    from dmole_lab.analysis.profiles import tower_split
    from dmole_lab.engine.probe_stream import probe_stream
    from dmole_lab.viz.report import write_probe_figures

    store = probe_stream(cfg, progress=not args.quiet)
    write_probe_figures(store)
    m = store.manifest()
    table = store.summary("sensitivity")
    split = tower_split(table, "grad_norm" if "grad_norm" in cfg.probe.proxies
                        else cfg.probe.proxies[0], m["probe_batches"])
    seconds = sum(s.get("seconds", 0.0) for s in m["stages"].values())
    with pd.option_context("display.width", 200):
        print(f"\nprobe: {store.root}\nper-tower sensitivity at K+1 = {m['probe_batches']} "
              f"batches of {m['batch_size']} (rho_V = vision share, docs/method.md section 2):")
        print(split.round(4).to_string(index=False))
    print(f"probing time (all proxies, {max(m['batch_counts'])} batches per task): "
          f"{seconds:.1f} s")
    print(f"table: {store.root / 'tables' / 'sensitivity.parquet'}")
    print(f"figures: {store.root / 'figures'}")
    return 0


def _print_report(store) -> None:
    import pandas as pd

    from dmole_lab.viz.report import write_report

    paths = write_report(store)
    sm = store.summary("score_matrix")
    tasks = store.manifest()["tasks"]
    piv = sm.pivot_table(index="stage", columns="eval_task", values="value")
    piv = piv.reindex(columns=tasks + sorted(set(piv.columns) - set(tasks)))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"\nrun: {store.root}\nscore matrix a[t, i] (row 0 = zero-shot):")
        print(piv.round(1).to_string())
        m = store.summary("metrics")
        m = m[(m["bwt_divisor"].isin(["T-1", "-"])) & (m["forgetting_mode"].isin(["first", "-"]))]
        print("\nmetrics (BWT divisor T-1, forgetting 'first'):")
        print(m[["metric", "value"]].round(2).to_string(index=False))
        stages = store.manifest()["stages"]
        params = [s["trainable_params"] for s in stages.values() if "trainable_params" in s]
        if params:
            print(f"trainable parameters per task: {sum(params) / len(params):,.0f} (mean)")
        if "router_accuracy" in paths:
            acc = store.summary("router_accuracy")
            print("router accuracy after each stage (tasks learned so far, no task id):")
            print(acc.round(3).to_string(index=False))
    for k, v in paths.items():
        print(f"{k}: {v}")


def _print_rescore(store, scorer: str) -> None:
    """The stored and the re-scored score matrix and metrics side by side; writes
    tables/score_matrix_<scorer>.parquet and tables/metrics_<scorer>.parquet."""
    import pandas as pd

    from dmole_lab.analysis.rescore import rescore, rescored_metrics
    from dmole_lab.analysis.summaries import metrics_table, score_matrix

    manifest = store.manifest()
    tasks = manifest["tasks"]
    new = rescore(store, scorer)
    new_metrics = rescored_metrics(store, scorer, new)
    stored = score_matrix(store)
    stored = stored[stored["eval_task"].isin(tasks)]
    old_metrics = metrics_table(stored, manifest)
    paths = {f"score_matrix_{scorer}": store.write_summary(f"score_matrix_{scorer}", new),
             f"metrics_{scorer}": store.write_summary(f"metrics_{scorer}", new_metrics)}
    both = pd.concat({"stored": stored.pivot_table(index="stage", columns="eval_task",
                                                   values="value")[tasks],
                      scorer: new.pivot_table(index="stage", columns="eval_task",
                                              values="value")[tasks]}, axis=1)

    def default_convention(m: pd.DataFrame) -> pd.Series:
        m = m[(m["bwt_divisor"] == "T-1") & (m["forgetting_mode"] == "first")]
        return m.set_index("metric")["value"]

    metrics = pd.DataFrame({"stored": default_convention(old_metrics),
                            scorer: default_convention(new_metrics)})
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(f"\nrun: {store.root}\nscore matrix a[t, i] (row 0 = zero-shot), stored and "
              f"re-scored with {scorer!r}:")
        print(both.round(1).to_string())
        print(f"\nmetrics (BWT divisor T-1, forgetting 'first'), stored and {scorer!r}:")
        print(metrics.round(2).to_string())
    for k, v in paths.items():
        print(f"{k}: {v}")


def _cmd_report(cfg, args) -> int:
    from dmole_lab.store import RunStore

    if args.rescore is not None:  # checked before the run is read
        from dmole_lab.analysis.rescore import check_scorer

        check_scorer(args.rescore)
    if args.run_dir:
        store = RunStore(resolve_path(args.run_dir))
    else:
        store = RunStore.of(cfg)
    if not store.manifest_path.exists():
        raise FileNotFoundError(
            f"no run at {store.root}; run it first with `dmole-lab run` and the same preset "
            "and overrides, or pass --run-dir"
        )
    if store.manifest().get("status") != "complete":
        print(f"note: run {store.root.name} is not complete; reporting finished stages only")
    if args.rescore is not None:
        _print_rescore(store, args.rescore)
        return 0
    _print_report(store)
    return 0


def _cmd_config(cfg, args) -> int:
    import yaml

    if args.keys:
        for key, tp, default, help_ in describe():
            print(f"{key:28s} {tp:16s} {default!s:24.24s} {help_} [{allowed_values(key)}]")
    else:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return 0


def _cmd_export(cfg, args) -> int:
    from dmole_lab.data.export import export_stream

    path = export_stream(cfg.stream, Path(args.out), progress=not args.quiet)
    print(f"wrote the stream to {path.parent}; train on it with --stream.file={path}")
    return 0


def _cmd_plan(cfg, args) -> int:
    import pandas as pd

    from dmole_lab.engine.plan import plan

    p = plan(cfg, activations=not args.no_activations, progress=not args.quiet)
    towers = p.towers.copy()
    for col in ("parameters", "candidate_parameters"):
        towers[col] = (towers[col] / 1e6).map("{:,.1f}M".format)
    methods = p.methods.merge(p.memory, on="method")
    shown = pd.DataFrame({
        "method": methods["method"],
        "trainable / task": [f"{lo / 1e6:.2f}M" if lo == hi else
                             f"{lo / 1e6:.2f}-{hi / 1e6:.2f}M"
                             for lo, hi in zip(methods["trainable_min"], methods["trainable"])],
        "weights GiB": methods["weights_gib"].round(2),
        "trainable state GiB": methods["trainable_state_gib"].round(3),
        "activations GiB": methods["activations_gib"].round(2),
        "total GiB": methods["total_gib"].round(2)})
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"{p.model_type} ({p.source}), {cfg.model.dtype}, batch {cfg.train.batch_size}")
        print(towers.to_string(index=False))
        print()
        print(shown.to_string(index=False))
    print("\nActivations: counted on a real-width copy with two layers per tower, scaled to the "
          "full depth; the CUDA context and allocator overhead are not included (docs/models.md)")
    return 0


def _cmd_check_data(args) -> int:
    """Print the counts per task and every problem of a stream file's data; 2 on errors."""
    from dmole_lab.data.stream_file import check_stream, load_stream_file

    report = check_stream(load_stream_file(args.stream_file), images=args.images)
    print(report.summary())
    if not report.ok:
        print(f"dmole-lab check-data: error: {len(report.errors)} error(s) in the data of "
              f"{args.stream_file} (listed above)", file=sys.stderr)
        return 2
    return 0


COMMANDS = {"pretrain": _cmd_pretrain, "run": _cmd_run, "probe": _cmd_probe,
            "compare": _cmd_compare, "report": _cmd_report,
            "config": _cmd_config, "export": _cmd_export, "plan": _cmd_plan}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status.

    Bad input (a config key, type or value, a method, a model folder, a run folder that another
    process holds) exits 2 with a one-line reason and no traceback; the config is checked in
    full before anything is loaded or written."""
    from dmole_lab.data.stream import StreamCheckError
    from dmole_lab.models.loading import ModelLoadError
    from dmole_lab.store import RunFolderError

    args, rest = _parser().parse_known_args(argv)
    try:
        if args.command == "check-data":  # reads no config: only the stream file
            if rest:
                raise ValueError(f"unrecognized arguments: {' '.join(rest)}")
            return _cmd_check_data(args)
        cfg = build_config(args.preset, parse_cli_overrides(rest))
        return COMMANDS[args.command](cfg, args)
    except StreamCheckError as e:  # the whole list, as check-data prints it, then one line
        print(e.report.summary(limit=20), file=sys.stderr)
        print(f"dmole-lab {args.command}: error: the stream's data fails the check "
              f"({len(e.report.errors)} error(s), listed above); nothing was written",
              file=sys.stderr)
        return 2
    except (ConfigError, ModelLoadError, RunFolderError, ValueError, FileNotFoundError,
            FileExistsError) as e:
        reason = " ".join(str(e).split())  # one line, whatever the message
        print(f"dmole-lab {args.command}: error: {reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished stages are saved; run the same command to resume",
              file=sys.stderr)
        return 130


__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
