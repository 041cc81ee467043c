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

from dmole_lab.config import RunConfig, check_config, resolve_path
from dmole_lab.data.encode import encode
from dmole_lab.data.stream import (
    build_stream,
    check_stream_config,
    stream_file_of,
    stream_fingerprint_of,
)
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.loading import check_model_folder, load_model, resolve_device
from dmole_lab.probes.sensitivity import check_proxies, probe_batches, sensitivity
from dmole_lab.seeding import seed_everything, stage_seed
from dmole_lab.store import METHOD_SECTION_NAMES, RunStore

#: Config sections a probe does not read (kept out of its folder's hash): no method's section, so
#: a preset that changes, say, a mixture's dropout still finds its probe.
PROBE_EXCLUDE = ("runs_dir", "pretrain", "method", "lora", "eval",
                 *METHOD_SECTION_NAMES)


def probe_plan(cfg: RunConfig, n_train: int | None = None) -> tuple[int, int, list[int]]:
    """(batch size, K+1 of the method, every batch count to store) for ``cfg``.

    ``n_train``: the size of a task's training set (default ``stream.n_train``; a stream
    file's tasks differ in size, so there ``probe.batches`` must be set, or the smallest
    task's size is passed)."""
    bs = cfg.probe.batch_size or cfg.train.batch_size
    n_train = cfg.stream.n_train if n_train is None else n_train
    default = cfg.probe.batches or probe_batches(n_train, bs, cfg.probe.share)
    counts = sorted({*cfg.probe.sweep, default})
    if counts[0] < 1 or bs < 1:
        raise ValueError(f"probe batch counts and batch size must be >= 1; got counts {counts}, "
                         f"batch size {bs}")
    return bs, default, counts


def probe_store(cfg: RunConfig) -> RunStore:
    """The run folder that holds (or will hold) the probe of ``cfg`` (opened: manifest written
    if new)."""
    return RunStore.for_config(cfg, resolve_path(cfg.runs_dir), kind="probe",
                               exclude=PROBE_EXCLUDE)


def check_probe(cfg: RunConfig) -> tuple[int, int, list[int]]:
    """Every check of a probe that needs no weights (config, tasks, proxies, batch plan, model
    folder, device); returns :func:`probe_plan`. Bad input fails here, before any write."""
    check_config(cfg)
    check_stream_config(cfg.stream)
    check_proxies(cfg.probe.proxies)
    plan = probe_plan(cfg, 1 if stream_file_of(cfg.stream) else None)
    check_model_folder(resolve_path(cfg.model.path))
    resolve_device(cfg.model.device)
    return plan


def probe_stream(cfg: RunConfig, progress: bool = True) -> RunStore:
    """Sensitivity of every task of ``cfg.stream`` with every proxy of ``cfg.probe``."""
    check_probe(cfg)
    store = RunStore.of(cfg, "probe", PROBE_EXCLUDE)
    with store.locked():
        _probe(cfg, store, progress)
    return store


def _probe(cfg: RunConfig, store: RunStore, progress: bool) -> None:
    """The body of :func:`probe_stream`, with the run folder locked."""
    model, processor = load_model(cfg.model)
    anatomy = anatomy_of(model)
    stream = build_stream(cfg.stream, progress=progress)
    bs, default, counts = probe_plan(
        cfg, None if stream.source is None else min(len(v) for v in stream.train.values()))
    # the manifest: the probe exists
    store.start(cfg, kind="probe", exclude=PROBE_EXCLUDE, tasks=list(stream.tasks),
                data=stream_fingerprint_of(stream))
    store.update_manifest(probe_batches=default, batch_counts=counts, batch_size=bs)
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
    store.update_manifest(status="complete")


def load_sensitivity(store: RunStore) -> pd.DataFrame:
    """The stored sensitivity table of a finished probe."""
    return store.summary("sensitivity")
