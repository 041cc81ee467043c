"""The memory and precision levers of a stage: gradient accumulation and checkpointing leave the
results as they are; mixed precision trains; a launcher that disagrees with the config is
refused before anything is written."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from dmole_lab.config import build_config
from dmole_lab.engine.continual import run
from dmole_lab.training.distributed import Processes, launched


@pytest.fixture(scope="module")
def base(micro_model_dir) -> dict:
    """Sequential LoRA on the micro stream; no dropout, so micro-batches draw no masks."""
    return {"model.path": str(micro_model_dir), "method": "seq-lora",
            "stream.tasks": "caption,ocr", "stream.n_train": 8, "stream.n_test": 4,
            "stream.n_general": 4, "train.batch_size": 4, "train.epochs": 1,
            "eval.batch_size": 8, "eval.max_new_tokens": 4, "lora.dropout": 0.0}


def _run(overrides: dict, runs) -> tuple[pd.DataFrame, dict]:
    store = run(build_config(None, {**overrides, "runs_dir": str(runs)}), progress=False)
    log = pd.concat(store.stage_table(t, "train_log") for t in (1, 2))
    return log, load_file(store.stage_dir(2) / "state.safetensors")


@pytest.fixture(scope="module")
def reference(base, tmp_path_factory):
    return _run(base, tmp_path_factory.mktemp("ref"))


def test_gradient_accumulation_gives_the_same_steps(base, reference, tmp_path):
    """Two micro-batches per step: token-weighted, so the step is the whole batch's (float
    rounding apart: the two halves' gradients are added)."""
    log, state = _run({**base, "train.grad_accum": 2}, tmp_path)
    ref_log, ref_state = reference
    pd.testing.assert_series_equal(log["loss"], ref_log["loss"], rtol=1e-5)
    for k in ref_state:
        torch.testing.assert_close(state[k], ref_state[k], rtol=1e-5, atol=1e-6)


def test_uneven_micro_batches_are_weighted_by_their_answer_tokens(base, reference, tmp_path):
    """Three micro-batches of 2, 1 and 1 samples with different answer lengths: a plain mean
    of micro-batch losses would give another gradient."""
    log, state = _run({**base, "train.grad_accum": 3}, tmp_path)
    ref_log, ref_state = reference
    pd.testing.assert_series_equal(log["loss"], ref_log["loss"], rtol=1e-5)
    for k in ref_state:
        torch.testing.assert_close(state[k], ref_state[k], rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_results(base, reference, tmp_path, monkeypatch):
    """Recomputed activations, the same numbers (and the checkpointed layers do recompute)."""
    from transformers import modeling_utils

    calls = []
    original = modeling_utils.checkpoint
    monkeypatch.setattr(modeling_utils, "checkpoint",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    log, state = _run({**base, "train.grad_checkpointing": True}, tmp_path)
    assert calls
    ref_log, ref_state = reference
    pd.testing.assert_series_equal(log["loss"], ref_log["loss"], rtol=1e-6)
    for k in ref_state:
        torch.testing.assert_close(state[k], ref_state[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_near_the_float32_run(base, reference, tmp_path, precision):
    """Autocast changes the arithmetic, not the recipe: losses stay within a few percent of
    float32's and the experts move (fp16 through a gradient scaler)."""
    log, state = _run({**base, "train.mixed_precision": precision}, tmp_path)
    ref_log, ref_state = reference
    assert log["loss"].notna().all()
    assert (log["loss"] - ref_log["loss"]).abs().max() < 0.05 * ref_log["loss"].abs().max()
    assert any(not torch.equal(state[k], ref_state[k]) for k in ref_state)
    assert all(torch.isfinite(v).all() for v in state.values())


def test_a_launcher_asking_for_another_precision_is_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(ValueError, match="train.mixed_precision=bf16"):
        with launched("no"):
            pass


@pytest.mark.parametrize("env, message", [
    ({"ACCELERATE_USE_FSDP": "true"}, "asks for FSDP"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
     "ZeRO stage 3; allowed: 1 or 2"),
])
def test_a_launcher_config_for_an_engine_we_do_not_drive_is_refused(monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=message):
        with launched("no"):
            pass


@pytest.mark.parametrize("override, message", [
    ({"train.grad_accum": 2}, "train.grad_accum=2 under DeepSpeed ZeRO"),
    ({"train.mixed_precision": "fp16"}, "train.mixed_precision=fp16 under DeepSpeed ZeRO"),
])
def test_what_zero_cannot_do_is_refused_before_anything_is_written(base, tmp_path, monkeypatch,
                                                                   override, message):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    cfg = build_config(None, {**base, **override, "runs_dir": str(tmp_path / "runs")})
    with pytest.raises(ValueError, match=message):
        run(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


def test_a_process_alone_shards_nothing_and_reduces_nothing():
    procs = Processes()
    assert procs.world == 1 and procs.is_main
    assert procs.shard([3, 1, 2]).tolist() == [3, 1, 2]
    assert procs.mine(3) == [0, 1, 2]
    x = torch.tensor([1.5])
    assert procs.sum(x) is x
    assert procs.gather({"a": 1}) == [{"a": 1}]
    with pytest.raises(ValueError, match="allowed: no, bf16, fp16"):
        Processes("fp8")
