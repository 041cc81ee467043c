"""Probe every task of a stream on the frozen base model and store the sensitivity table.

One "stage" per task, so an interrupted probe resumes at the next unprobed task. The stored
table (``tables/sensitivity.parquet``) is what the allocation, the notebooks and the
proxy-vs-oracle benchmark read; columns: task, tower, layer, module, kind, n_params, proxy,
batches, score.
"""

from __future__ import annotations

import time

import pandas as pd
from tqdm.auto import tqdm

from ..anatomy import anatomy_of
from ..config import RunConfig, resolve_path
from ..encode import encode
from ..models import load_model
from ..seeding import seed_everything, stage_seed
from ..store import RunStore
from ..stream import build_stream, validate_tasks
from .sensitivity import check_proxies, probe_batches, sensitivity

#: Config sections a probe does not read (kept out of its folder's hash).
PROBE_EXCLUDE = ("runs_dir", "pretrain", "method", "lora", "eval", "dmole")


def probe_plan(cfg: RunConfig) -> tuple[int, int, list[int]]:
    """(batch size, K+1 of the method, every batch count to store) for ``cfg``."""
    bs = cfg.probe.batch_size or cfg.train.batch_size
    default = cfg.probe.batches or probe_batches(cfg.stream.n_train, bs, cfg.probe.share)
    counts = sorted({*cfg.probe.sweep, default})
    if counts[0] < 1 or bs < 1:
        raise ValueError(f"probe batch counts and batch size must be >= 1; got counts {counts}, "
                         f"batch size {bs}")
    return bs, default, counts


def probe_store(cfg: RunConfig) -> RunStore:
    """The run folder that holds (or will hold) the probe of ``cfg``."""
    return RunStore.for_config(cfg, resolve_path(cfg.runs_dir), kind="probe",
                               exclude=PROBE_EXCLUDE)


def probe_stream(cfg: RunConfig, progress: bool = True) -> RunStore:
    """Sensitivity of every task of ``cfg.stream`` with every proxy of ``cfg.probe``."""
    validate_tasks(cfg.stream.tasks)
    check_proxies(cfg.probe.proxies)
    bs, default, counts = probe_plan(cfg)
    model, processor = load_model(cfg.model)
    anatomy = anatomy_of(model)
    store = probe_store(cfg)
    store.update_manifest(probe_batches=default, batch_counts=counts, batch_size=bs)
    stream = build_stream(cfg.stream, progress=progress)
    bar = tqdm(list(enumerate(stream.tasks, 1)), desc="probing tasks", disable=not progress)
    for t, task in bar:
        bar.set_postfix(task=task)
        if store.stage_done(t):
            continue
        seed_everything(stage_seed(cfg.seed, t))
        data = encode(processor, stream.train[task][: max(counts) * bs])
        start = time.perf_counter()
        table = sensitivity(model, data, cfg.probe.proxies, batches=max(counts), batch_size=bs,
                            seed=stage_seed(cfg.seed, t), snapshots=tuple(counts),
                            anatomy=anatomy)
        seconds = time.perf_counter() - start
        store.finish_stage(t, {"sensitivity": table.assign(task=task)},
                           info={"task": task, "seconds": seconds})
    table = store.table("sensitivity")
    store.write_summary("sensitivity", table)
    write_probe_figures(store)
    store.update_manifest(status="complete")
    return store


def write_probe_figures(store: RunStore) -> None:
    """Figure-1 heatmaps (one file per proxy) at the method's default number of batches."""
    from .. import plots
    from ..profiles import layer_profiles

    m = store.manifest()
    table = store.summary("sensitivity")
    for proxy in sorted(set(table["proxy"])):
        prof = layer_profiles(table, proxy=proxy, batches=m["probe_batches"])
        fig = plots.sensitivity_heatmaps(prof, tasks=m["tasks"],
                                         title=f"{proxy}, {m['probe_batches']} batches")
        fig.savefig(store.figure_path(f"sensitivity_{proxy}"), dpi=120, bbox_inches="tight")
        plots.close(fig)


def load_sensitivity(store: RunStore) -> pd.DataFrame:
    """The stored sensitivity table of a finished probe."""
    return store.summary("sensitivity")
