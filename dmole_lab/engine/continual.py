"""The continual trainer: run a method over the stream, evaluating every set after each stage.

Stage 0 evaluates the untouched model (the zero-shot row); stage t trains task t and evaluates
every task and the general set, filling row t of the score matrix a[t, i]. Each finished stage
is stored; a re-run with the same config skips finished stages (replaying their saved state)
and continues where it stopped.

Order of a run: every check that needs no weights first (:func:`check_run`: config, method,
tasks, model folder, dtype and device), so bad input fails before anything is loaded or
written; then the run folder is locked (a second process on the same run is refused); the
model, stream and method are set up; only then is the manifest written and the run starts.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

from tqdm.auto import tqdm

from dmole_lab.analysis.summaries import write_tables
from dmole_lab.config import RunConfig, check_config, resolve_path
from dmole_lab.data.encode import encode
from dmole_lab.data.stream import build_stream, check_stream_config, stream_fingerprint_of
from dmole_lab.methods import check_method, make_method
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.loading import check_model_folder, load_model, resolve_device
from dmole_lab.probes.recorders import TowerDynamics
from dmole_lab.seeding import seed_everything, stage_seed
from dmole_lab.store import RunStore
from dmole_lab.training.distributed import Processes, launched
from dmole_lab.training.evaluation import evaluate
from dmole_lab.training.stage import train_stage, use_checkpointing


def check_run(cfg: RunConfig) -> None:
    """Every check of a run that needs no model weights, so bad input fails before anything is
    loaded or written: the whole config (ConfigError), the method and the stream (ValueError:
    the task order, or a stream file's structure and every data file, as check-data does),
    the model folder and its architecture (ModelLoadError), dtype and device."""
    check_config(cfg)
    check_stream_config(cfg.stream)
    check_method(cfg.method)
    check_model_folder(resolve_path(cfg.model.path))
    resolve_device(cfg.model.device)


def check_zero(cfg: RunConfig) -> None:
    """What a run under DeepSpeed ZeRO cannot do (ValueError naming the key; docs/scale.md)."""
    if cfg.train.grad_accum > 1:
        raise ValueError(f"train.grad_accum={cfg.train.grad_accum} under DeepSpeed ZeRO; "
                         "allowed: 1 (the engine reduces every backward pass)")
    if cfg.train.mixed_precision == "fp16":
        raise ValueError("train.mixed_precision=fp16 under DeepSpeed ZeRO; allowed: no or bf16 "
                         "(DeepSpeed scales fp16 losses itself: load the model with "
                         "model.dtype=float16 instead)")


def run_store(cfg: RunConfig) -> RunStore:
    """The run folder of ``cfg`` (it may not exist yet)."""
    return RunStore.of(cfg)


def run(cfg: RunConfig, progress: bool = True, callbacks: tuple = ()) -> RunStore:
    """Run ``cfg`` to completion (resuming if its folder exists); returns the run store.

    Raises before writing anything if ``cfg`` is unusable (:func:`check_run`), and
    :class:`dmole_lab.store.RunFolderError` if another process is running the same run.
    Under ``accelerate launch`` every process runs this; each trains and evaluates its share,
    and only the main process locks and writes the run folder (docs/scale.md).
    """
    check_run(cfg)
    store = run_store(cfg)
    cpu = resolve_device(cfg.model.device).type == "cpu"
    with launched(cfg.train.mixed_precision, cpu=cpu) as procs:
        if procs.zero_stage is not None:
            check_zero(cfg)
        with store.locked() if procs.is_main else nullcontext():
            _run(cfg, store, progress and procs.is_main, callbacks, procs)
    return store


def _run(cfg: RunConfig, store: RunStore, progress: bool, callbacks: tuple,
         procs: Processes) -> None:
    """The body of :func:`run`, with the run folder locked by the main process."""
    model, processor = load_model(cfg.model)
    if cfg.train.grad_checkpointing:
        use_checkpointing(model)
    seed_everything(cfg.seed)
    stream = build_stream(cfg.stream, progress=progress)
    anatomy = anatomy_of(model)
    method = make_method(cfg, anatomy)
    wanted = stream.eval_sets() if cfg.eval.general else stream.test
    eval_sets = {name: encode(processor, samples) for name, samples in wanted.items()}
    # the manifest: from here on the run exists
    if procs.is_main:
        store.start(cfg, tasks=list(stream.tasks), data=stream_fingerprint_of(stream))
        store.update_manifest(processes=procs.world)
        method.artifacts = store.root
    # which stages to replay: the main process's reading, before anyone writes a stage
    done = procs.broadcast([t for t in range(len(stream.tasks) + 1) if store.stage_done(t)]
                           if procs.is_main else None)
    method.train_set = lambda task: encode(processor, stream.train[task])

    def finish(stage: int, state=None, log=None, extra_info=None, extra_tables=None) -> None:
        scores, preds = evaluate(
            model, processor, eval_sets, cfg.eval, stage, progress=progress,
            before_batch=lambda name, idx: method.before_eval_batch(model, name,
                                                                     eval_sets[name], idx),
            spec_of=stream.spec)
        tables = {"scores": scores, "predictions": preds, **(extra_tables or {})}
        tables.update({k: v.assign(stage=stage) for k, v in method.after_eval(model).items()})
        info = {**(extra_info or {}), **method.info()}
        if log is not None:
            tables["train_log"] = log.table().assign(stage=stage)
            info["train_seconds"] = log.seconds
        if procs.is_main:
            store.finish_stage(stage, tables, state, info)
        procs.barrier()  # no process runs ahead of a stage the store does not hold yet

    if 0 not in done:
        finish(0, extra_info={"task": None})
    bar = tqdm(list(enumerate(stream.tasks, 1)), desc=f"{cfg.method} stages",
               disable=not progress)
    for t, task in bar:
        bar.set_postfix(task=task)
        if t in done:
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
    if procs.is_main:
        write_tables(store)  # the run's results as tables; figures are drawn by viz.report
        store.update_manifest(status="complete")
