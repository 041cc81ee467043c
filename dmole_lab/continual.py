"""The continual trainer: run a method over the stream, evaluating every set after each stage.

Stage 0 evaluates the untouched model (the zero-shot row); stage t trains task t and evaluates
every task and the general set, filling row t of the score matrix a[t, i]. Each finished stage
is stored; a re-run with the same config skips finished stages (replaying their saved state)
and continues where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .anatomy import anatomy_of
from .config import RunConfig, resolve_path
from .encode import encode
from .evaluation import evaluate
from .methods import check_method, make_method
from .metrics import matrix_from_scores, summary
from .models import load_model
from .probes.recorders import TowerDynamics
from .scoring import METRICS
from .seeding import seed_everything, stage_seed
from .store import RunStore
from .stream import build_stream, validate_tasks
from .training import train_stage


def run(cfg: RunConfig, progress: bool = True, callbacks: tuple = ()) -> RunStore:
    """Run ``cfg`` to completion (resuming if its folder exists); returns the run store."""
    # Cheap checks first, so bad input fails before the model loads.
    validate_tasks(cfg.stream.tasks)
    check_method(cfg.method)
    model, processor = load_model(cfg.model)
    store = RunStore.for_config(cfg, resolve_path(cfg.runs_dir))
    seed_everything(cfg.seed)
    stream = build_stream(cfg.stream, progress=progress)
    anatomy = anatomy_of(model)
    method = make_method(cfg, anatomy)
    method.artifacts = store.root
    wanted = stream.eval_sets() if cfg.eval.general else stream.test
    eval_sets = {name: encode(processor, samples) for name, samples in wanted.items()}

    def finish(stage: int, state=None, log=None, extra_info=None, extra_tables=None) -> None:
        scores, preds = evaluate(
            model, processor, eval_sets, cfg.eval, stage, progress=progress,
            before_batch=lambda name, idx: method.before_eval_batch(model, name,
                                                                     eval_sets[name], idx))
        tables = {"scores": scores, "predictions": preds, **(extra_tables or {})}
        tables.update({k: v.assign(stage=stage) for k, v in method.after_eval(model).items()})
        info = {**(extra_info or {}), **method.info()}
        if log is not None:
            tables["train_log"] = log.table().assign(stage=stage)
            info["train_seconds"] = log.seconds
        store.finish_stage(stage, tables, state, info)

    if not store.stage_done(0):
        finish(0, extra_info={"task": None})
    bar = tqdm(list(enumerate(stream.tasks, 1)), desc=f"{cfg.method} stages",
               disable=not progress)
    for t, task in bar:
        bar.set_postfix(task=task)
        if store.stage_done(t):
            model = method.restore_task(model, t, task, store.stage_state(t))
            continue
        seed_everything(stage_seed(cfg.seed, t))
        train_data = encode(processor, stream.train[task])
        start = time.perf_counter()
        model = method.begin_task(model, t, task, train_data)
        setup_seconds = time.perf_counter() - start
        params = method.trainable_parameters(model)
        n_trainable = sum(p.numel() for p in params)
        recorders = ()
        if cfg.probe.record_training:
            recorders = (TowerDynamics(model, anatomy, cfg.probe.record_every),)
        log = train_stage(model, method.training_data(train_data), params, cfg.train,
                          stage_seed(cfg.seed, t),
                          extra_loss=method.extra_loss,
                          callbacks=method.callbacks() + recorders + tuple(callbacks),
                          desc=f"stage {t}: {task}", progress=progress)
        start = time.perf_counter()
        model, state = method.end_task(model, t, task)
        end_seconds = time.perf_counter() - start
        extra = {"dynamics": recorders[0].table().assign(stage=t, task=task)} if recorders else {}
        # Method set-up (probe, router, ...) and wrap-up (merge, save) timed apart from the
        # training loop, so methods compare on total training cost.
        finish(t, state, log, {"task": task, "trainable_params": n_trainable,
                               "setup_seconds": setup_seconds, "end_seconds": end_seconds},
               extra)
    write_summaries(store)
    store.update_manifest(status="complete")
    return store


def score_matrix(store: RunStore) -> pd.DataFrame:
    """Tidy score matrix of a run: stage, eval_task, metric, value (main metric per task)."""
    scores = store.table("scores")
    main = scores[scores["metric"].isin(METRICS)]
    return main[["stage", "eval_task", "metric", "value"]].reset_index(drop=True)


def write_summaries(store: RunStore) -> dict[str, Path]:
    """Write the score matrix, the metrics table and the heatmap of a finished run."""
    from . import plots

    manifest = store.manifest()
    tasks = manifest["tasks"]
    sm = score_matrix(store)
    A = matrix_from_scores(sm[sm["eval_task"].isin(tasks)], tasks)
    rows = []
    for divisor in ("T-1", "T"):
        for mode in ("first", "max"):
            for k, v in summary(A, divisor, mode).items():
                rows.append({"method": manifest["method"], "seed": manifest["seed"],
                             "metric": k, "value": v, "bwt_divisor": divisor,
                             "forgetting_mode": mode})
    for name in sorted(set(sm["eval_task"]) - set(tasks)):
        g = sm[sm["eval_task"] == name].sort_values("stage")["value"]
        label = "General" if name == "general" else f"General ({name})"
        for metric, value in ((label, g.iloc[-1]), (f"{label} zero-shot", g.iloc[0])):
            rows.append({"method": manifest["method"], "seed": manifest["seed"],
                         "metric": metric, "value": float(value), "bwt_divisor": "-",
                         "forgetting_mode": "-"})
    metrics = pd.DataFrame(rows)
    paths = {
        "score_matrix": store.write_summary("score_matrix", sm),
        "metrics": store.write_summary("metrics", metrics),
    }
    title = f"{manifest['method']} (seed {manifest['seed']})"
    figures = [
        ("heatmap", "score_matrix", lambda: plots.score_matrix_heatmap(sm, tasks, title=title)),
        ("curves", "forgetting_curves", lambda: plots.forgetting_curves(sm, tasks, title=title)),
    ]
    try:
        dynamics = store.table("dynamics")
        paths["dynamics"] = store.write_summary("dynamics", dynamics)
        figures.append(("tower_dynamics", "tower_dynamics",
                        lambda: plots.tower_dynamics(dynamics, title=title)))
    except FileNotFoundError:  # recorders were off
        pass
    if _has_table(store, "allocation"):
        _expert_summaries(store, tasks, title, paths, figures)
    for key, name, draw in figures:
        fig = draw()
        paths[key] = store.figure_path(name)
        fig.savefig(paths[key], dpi=120, bbox_inches="tight")
        plots.close(fig)
    return paths


def _has_table(store: RunStore, name: str) -> bool:
    return any((store.stage_dir(int(t)) / f"{name}.parquet").exists()
               for t in store.manifest()["stages"])


def _expert_summaries(store: RunStore, tasks: list[str], title: str, paths: dict,
                      figures: list) -> None:
    """Allocation, router accuracy per stage, router confusion and expert usage of a run with
    experts and routers (D-MoLE): tables into ``paths``, figure makers into ``figures``."""
    from . import plots, usage

    alloc = store.table("allocation")
    sens = store.table("sensitivity")
    n_layers = (sens.groupby("tower")["layer"].max() + 1).astype(int).to_dict()
    paths["allocation"] = store.write_summary("allocation", alloc)
    paths["sensitivity"] = store.write_summary("sensitivity", sens)
    if _has_table(store, "curriculum"):
        paths["curriculum"] = store.write_summary("curriculum", store.table("curriculum"))
    figures.append(("allocation", "allocation", lambda: plots.allocation_heatmaps(
        alloc, tasks, n_layers, title=f"{title}: experts per task and layer")))
    if not _has_table(store, "routing"):
        return
    routing = store.table("routing")
    paths["routing"] = store.write_summary("routing", routing)
    if _has_table(store, "train_routing"):
        paths["train_routing"] = store.write_summary("train_routing",
                                                     store.table("train_routing"))
    paths["router_accuracy"] = store.write_summary(
        "router_accuracy", usage.accuracy_by_stage(routing, tasks))
    paths["expert_usage"] = store.write_summary(
        "expert_usage", usage.expert_usage(routing, alloc))
    conf = usage.confusion(routing, normalise=True, tasks=tasks)
    last = int(routing["stage"].max())
    figures.append(("router_confusion", "router_confusion", lambda: plots.routing_confusion(
        conf, title=f"{title}: routing after stage {last}")))
