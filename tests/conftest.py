"""Shared fixtures: a micro LLaVA built in code and saved like a real checkpoint, the overrides
of the fast presets, runs shared between tests, and the helpers tests build their inputs with.

Test modules take everything from here as fixtures; none imports another test module or this
file."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from dmole_lab.models.tiny import TinySpec  # noqa: E402

STREAMS = Path(__file__).resolve().parents[1] / "configs" / "streams"
MICRO = TinySpec(vision_hidden=32, vision_layers=2, vision_heads=2, patch_size=16,
                 text_hidden=32, text_layers=2, text_heads=2, vocab_size=256)


@pytest.fixture(scope="session")
def micro_spec():
    """The shape of the micro model (2 layers of width 32 per tower)."""
    return MICRO


@pytest.fixture(scope="session")
def micro_processor():
    from dmole_lab.models.tiny import build_processor

    return build_processor(MICRO)


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory, micro_processor):
    """A randomly initialised micro model + processor in Hugging Face format."""
    import torch

    from dmole_lab.models.tiny import build_model

    torch.manual_seed(0)
    model = build_model(micro_processor, MICRO)
    path = tmp_path_factory.mktemp("micro-llava")
    model.save_pretrained(path)
    micro_processor.save_pretrained(path)
    return path


def _smoke(micro_model_dir) -> dict:
    """A seconds-long run of the micro model on a 3-task stream (2 steps per stage)."""
    return {
        "model.path": str(micro_model_dir),
        "stream.tasks": "caption,grounding,ocr",
        "stream.n_train": 8,
        "stream.n_test": 4,
        "stream.n_general": 4,
        "train.batch_size": 4,
        "train.epochs": 1,
        "eval.batch_size": 8,
        "eval.max_new_tokens": 4,
    }


@pytest.fixture()
def smoke_overrides(micro_model_dir, tmp_path):
    """Overrides for a seconds-long run of the micro model on a 3-task stream."""
    return {**_smoke(micro_model_dir), "runs_dir": str(tmp_path / "runs")}


@pytest.fixture(scope="session")
def resume_overrides(micro_model_dir):
    """The smoke stream capped at 2 steps per stage, shared by the per-method runs (no
    ``runs_dir``: :func:`shared_run` and the tests set it). D-MoLE's settings are those of
    ``test_dmole``'s small experts."""
    return {**_smoke(micro_model_dir), "train.max_steps": 2, "dmole.router_epochs": 5,
            "dmole.r": 2, "dmole.alpha": 4.0}


@pytest.fixture(scope="session")
def route_overrides(micro_model_dir):
    """Overrides of ``--preset route`` for the micro model: three tasks of 192 training and 16
    test samples, on which D-MoLE's and BranchLoRA's routers recognise the test sets and the
    routed experts change the answers (on the smoke stream the experts leave the learned tasks'
    scores at the base model's, so a router that never switched them on would pass). No
    ``runs_dir``."""
    return {"model.path": str(micro_model_dir)}


@contextmanager
def single_thread():
    """One torch thread (restored afterwards): the micro model gains nothing from threads, a
    shared 2-core machine runs it several times slower with two, and runs compared value for
    value must use the same thread count."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture()
def one_thread():
    """One torch thread for the test (see :func:`single_thread`)."""
    with single_thread():
        yield


@pytest.fixture(scope="session")
def one_thread_run():
    """``run(cfg, **kwargs)``: :func:`dmole_lab.engine.continual.run` with one torch thread,
    no progress bars."""
    from dmole_lab.engine import continual

    def run(cfg, **kwargs):
        with single_thread():
            return continual.run(cfg, progress=False, **kwargs)

    return run


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory, one_thread_run):
    """``shared_run(overrides, preset=None)``: the finished run of that config, made once per
    session (single-threaded, in a session folder) and shared by every test that asks for it.
    Tests only read it."""
    from dmole_lab.config import build_config

    root = tmp_path_factory.mktemp("shared-runs")
    done = {}

    def get(overrides: dict, preset: str | None = None):
        key = (preset, tuple(sorted((k, str(v)) for k, v in overrides.items())))
        if key not in done:
            cfg = build_config(preset, {**overrides, "runs_dir": str(root)})
            done[key] = one_thread_run(cfg)
        return done[key]

    return get


class Interrupted(Exception):
    """Raised by :func:`interrupt_after` to simulate a run killed mid-stage."""


@pytest.fixture(scope="session")
def interrupted():
    """The exception a callback of :func:`interrupt_after` raises."""
    return Interrupted


@pytest.fixture(scope="session")
def interrupt_after():
    """``interrupt_after(n_steps)``: a step callback that raises :class:`Interrupted` on
    training step ``n_steps + 1`` (counted over the whole run)."""

    def make(n_steps: int):
        calls = {"n": 0}

        def callback(step, loss, model):
            calls["n"] += 1
            if calls["n"] > n_steps:
                raise Interrupted

        return callback

    return make


# ------------------------------------------------------------------ hand-made tables
#: Per-layer scores of three tasks; each layer has two modules that share the layer's score.
PROFILES = {
    "shallow": {"vision": [8, 4, 2, 1], "llm": [4, 3, 2, 1]},
    "deep": {"vision": [1, 2, 4, 8], "llm": [1, 2, 3, 4]},
    "also_shallow": {"vision": [9, 5, 3, 1], "llm": [6, 2, 1.5, 1]},
}


def _sensitivity_table(batches=(1, 2)) -> pd.DataFrame:
    rows = []
    for task, towers in PROFILES.items():
        for tower, scores in towers.items():
            for layer, s in enumerate(scores):
                for module in ("q", "v"):
                    for proxy, f in (("grad_norm", 1.0), ("snip", -1.0)):
                        for b in batches:
                            rows.append({"task": task, "tower": tower, "layer": layer,
                                         "module": f"{tower}.{layer}.{module}", "proxy": proxy,
                                         "batches": b, "score": b * (s / 2 if f > 0 else 10 - s)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def sensitivity_table():
    """``sensitivity_table(batches=(1, 2))``: a sensitivity table of the three tasks of
    :data:`PROFILES` (4 layers per tower, modules q and v sharing their layer's score s;
    ``grad_norm`` = batches * s / 2, ``snip`` = batches * (10 - s))."""
    return _sensitivity_table


@pytest.fixture(scope="session")
def profiles():
    """The per-layer scores behind :func:`sensitivity_table`."""
    return PROFILES


def _compare_scores(variant, seed, A, general=(80.0, 40.0)):
    tasks = [f"t{i}" for i in range(A.shape[1])]
    rows = [{"variant": variant, "method": variant, "seed": seed, "stage": t, "eval_task": task,
             "value": A[t, i]} for t in range(A.shape[0]) for i, task in enumerate(tasks)]
    rows += [{"variant": variant, "method": variant, "seed": seed, "stage": t,
              "eval_task": "general", "value": general[0] if t == 0 else general[1]}
             for t in range(A.shape[0])]
    run = {"variant": variant, "method": variant, "seed": seed, "tasks": ",".join(tasks),
           "params_per_task": 10.0, "training_seconds": 5.0 + seed,
           "general": general[1], "general_zero_shot": general[0]}
    return pd.DataFrame(rows), run


@pytest.fixture(scope="session")
def compare_scores():
    """``compare_scores(variant, seed, A, general=(80, 40))``: (tidy scores, runs row) of one
    run of a comparison with score matrix ``A`` (tasks t0, t1, ...) and general-set scores
    (zero-shot, after every stage)."""
    return _compare_scores


def _stored_run(root, budget):
    from dmole_lab.store import RunStore, write_json, write_table

    store = RunStore(root)
    write_json(store.manifest_path, {"status": "complete", "seed": 0, "stages": {},
                                     "config": {"method": "dmole", "dmole": {"budget": budget}}})
    write_table(root / "tables" / "metrics.parquet", pd.DataFrame(
        {"metric": ["AVG", "Last", "BWT"], "value": [40.0, 35.0, -2.5],
         "bwt_divisor": "T-1", "forgetting_mode": "first"}))
    return store


@pytest.fixture(scope="session")
def stored_run():
    """``stored_run(root, budget)``: a complete D-MoLE run folder with only a manifest and
    metrics (AVG 40, Last 35, BWT -2.5), as ``find_runs`` sees shipped runs."""
    return _stored_run


@pytest.fixture(scope="session")
def shaped_sensitivity_table():
    """:func:`sensitivity_table` with module shapes: vision 4 -> 8, LLM 8 -> 8."""
    t = _sensitivity_table()
    return t.assign(in_features=np.where(t.tower == "vision", 4, 8), out_features=8)


# ------------------------------------------------------------------ data in the field's formats

def _img(i: int) -> np.ndarray:
    return np.full((6, 6, 3), 20 * i % 255, dtype=np.uint8)


def _samples(task: str, n: int = 2, box: bool = False) -> list:
    from dmole_lab.data.tasks import Sample

    if box:
        return [Sample(task, _img(i), f"where {i}?", "[0.1, 0.2, 0.5, 0.6]",
                       {"box": [0.1, 0.2, 0.5, 0.6]}) for i in range(n)]
    return [Sample(task, _img(i), f"question {i}?", "A" if i % 2 == 0 else "B")
            for i in range(n)]


def _build_stream_data(root: Path) -> None:
    """A few records per task, in the layout each shipped stream file documents."""
    from dmole_lab.data.formats import (
        write_coin,
        write_llava,
        write_mme,
        write_mmmu,
        write_pope,
    )
    from dmole_lab.data.stream_file import load_stream_file
    from dmole_lab.data.tasks import Sample

    cl = root / "cl_dataset"
    for t in load_stream_file(STREAMS / "coin.yaml").tasks:
        d = root / "playground" / "Instructions_Original" / t.name
        write_llava(_samples(t.name), d / "train.json", cl, image_subdir=t.name)
        write_coin(_samples(t.name, box=t.name == "Grounding"), d / "test.json", None, cl,
                   image_subdir=t.name)
    (cl / "ScienceQA" / "problems.json").write_text(json.dumps(
        {str(i): {"answer": i, "choices": ["x", "y"]} for i in range(2)}))
    (cl / "TextVQA" / "TextVQA_0.5.1_val.json").write_text(json.dumps(
        {"data": [{"question_id": i, "answers": ["a"] * 10} for i in range(2)]}))
    for t in load_stream_file(STREAMS / "dmole.yaml").tasks:
        box = t.scorer == "grounding"
        write_llava(_samples(t.name, box=box), t.train, t.image_root)
        write_llava(_samples(t.name, box=box), t.test, t.image_root)
    for split in ("random", "popular", "adversarial"):
        write_pope([Sample("pope", _img(i), "Is there a cat?", "yes" if i else "no")
                    for i in range(2)], root / "pope" / f"coco_pope_{split}.json",
                   root / "coco" / "val2014", image_subdir=split, split=split)
    write_mme([Sample("mme", _img(1), q, a, {"subtask": "existence", "image_id": "im1"})
               for q, a in [("Is it red?", "Yes"), ("Is it blue?", "No")]],
              root / "MME_Benchmark_release_version")
    write_mmmu([Sample("mmmu", _img(i), "Which?", "B",
                       {"options": ["p", "q"], "subject": "Art", "id": f"validation_Art_{i}"})
                for i in range(2)], root / "mmmu" / "validation.jsonl")


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """DATA_ROOT of a fixture in the layout of configs/streams/coin.yaml and dmole.yaml: two
    records per task (6x6 images), POPE's three splits, one MME image pair, two MMMU
    questions."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    _build_stream_data(tmp_path / "data")
    return tmp_path / "data"
