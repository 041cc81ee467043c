"""End-to-end runs of the continual trainer on the micro model (seconds each)."""

import numpy as np
import pandas as pd
import pytest
import torch

from dmole_lab.analysis.metrics import matrix_from_scores
from dmole_lab.config import build_config
from dmole_lab.engine import continual
from dmole_lab.viz import report
from tests.conftest import Interrupted, interrupt_after


def test_run_writes_matrix_metrics_and_heatmap(smoke_overrides):
    cfg = build_config(overrides=smoke_overrides)
    store = continual.run(cfg, progress=False)
    m = store.manifest()
    assert m["status"] == "complete" and set(m["stages"]) == {"0", "1", "2", "3"}
    sm = store.summary("score_matrix")
    A = matrix_from_scores(sm[sm.eval_task != "general"], list(cfg.stream.tasks))
    assert A.shape == (4, 3) and np.isfinite(A).all()
    metrics = store.summary("metrics")
    assert {"AVG", "Last", "BWT", "Forgetting", "FWT", "MFT", "General"} <= set(metrics.metric)
    assert not (store.root / "figures").exists()  # the training loop draws nothing
    figures = report.write_figures(store)
    assert set(figures) == {"heatmap", "curves", "tower_dynamics"}
    assert (store.root / "figures" / "score_matrix.png").stat().st_size > 1000
    assert (store.root / "figures" / "forgetting_curves.png").stat().st_size > 1000
    assert (store.root / "figures" / "tower_dynamics.png").stat().st_size > 1000
    dyn = store.summary("dynamics")
    assert set(dyn.stage) == {1, 2, 3} and set(dyn.quantity) == {"grad_norm", "rel_update"}
    preds = store.table("predictions")
    assert {"prediction", "reference", "score"} <= set(preds.columns)
    assert m["stages"]["1"]["trainable_params"] > 0
    for key in ("setup_seconds", "train_seconds", "end_seconds"):
        assert all(m["stages"][str(t)][key] > 0 for t in (1, 2, 3))


def test_interrupted_run_resumes_without_recomputing(smoke_overrides, tmp_path):
    cfg = build_config(overrides=smoke_overrides)
    reference = continual.run(cfg, progress=False)
    ref_scores = reference.table("predictions")

    cfg2 = build_config(overrides={**smoke_overrides, "runs_dir": str(tmp_path / "other")})

    with pytest.raises(Interrupted):  # 2 steps per stage: die inside stage 3
        continual.run(cfg2, progress=False, callbacks=(interrupt_after(2 * 2),))
    from dmole_lab.store import RunStore

    store = RunStore(tmp_path / "other" / RunStore.run_name(cfg2))
    assert store.stage_done(2) and not store.stage_done(3)
    done_mtime = (store.stage_dir(1) / "scores.parquet").stat().st_mtime_ns

    steps = []
    resumed = continual.run(cfg2, progress=False,
                            callbacks=(lambda step, loss, model: steps.append(step),))
    assert len(steps) == 2  # only stage 3 trained again
    assert (store.stage_dir(1) / "scores.parquet").stat().st_mtime_ns == done_mtime
    # same seed, same results: the resumed run predicts exactly what the uninterrupted one did
    pd.testing.assert_frame_equal(resumed.table("predictions"), ref_scores)


def test_seq_lora_merges_its_adapter(micro_model_dir):
    from dmole_lab.config import ModelConfig, RunConfig
    from dmole_lab.methods import make_method
    from dmole_lab.models.anatomy import anatomy_of
    from dmole_lab.models.loading import load_model

    model, _ = load_model(ModelConfig(path=str(micro_model_dir), device="cpu"))
    an = anatomy_of(model)
    method = make_method(RunConfig(), an)
    path = an.by_alias["llm.1.attn.q"].path
    w0 = model.get_submodule(path).weight.detach().clone()
    peft_model = method.begin_task(model, 1, "ocr", None)
    params = method.trainable_parameters(peft_model)
    assert params and all("lora_" in n for n, p in peft_model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        for p in params:
            p.normal_()
    merged, state = method.end_task(peft_model, 1, "ocr")
    a = [v for k, v in state.items() if "language_model.layers.1.self_attn.q_proj.lora_A" in k][0]
    b = [v for k, v in state.items() if "language_model.layers.1.self_attn.q_proj.lora_B" in k][0]
    expected = w0 + (RunConfig().lora.alpha / RunConfig().lora.r) * b @ a
    torch.testing.assert_close(merged.get_submodule(path).weight, expected)
    # replaying the saved state on a fresh copy rebuilds the same weights
    fresh, _ = load_model(ModelConfig(path=str(micro_model_dir), device="cpu"))
    rebuilt = method.restore_task(fresh, 1, "ocr", state)
    torch.testing.assert_close(rebuilt.get_submodule(path).weight, expected)


def test_general_sets_can_be_left_out(smoke_overrides):
    cfg = build_config(overrides={**smoke_overrides, "eval.general": "false",
                                  "stream.tasks": "ocr"})
    store = continual.run(cfg, progress=False)
    assert set(store.summary("score_matrix")["eval_task"]) == {"ocr"}
