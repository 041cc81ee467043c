"""End-to-end runs of the continual trainer on the micro model (seconds each)."""

import numpy as np
import pandas as pd
import pytest
import torch

from dmole_lab.analysis.metrics import matrix_from_scores
from dmole_lab.config import build_config
from dmole_lab.engine import continual
from dmole_lab.methods import METHODS
from dmole_lab.store import RunStore
from dmole_lab.viz import report


def test_run_writes_matrix_metrics_and_heatmap(smoke_overrides, one_thread):
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


#: Stages finished before the resume test's runs are interrupted (2 of the 3 stages), and the
#: training steps of each stage (train.max_steps = 2 of ``resume_overrides``).
DONE, STEPS = 2, 2


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_resumes_an_interrupted_run_to_the_uninterrupted_one(
        method, resume_overrides, shared_run, one_thread_run, interrupted, interrupt_after,
        tmp_path):
    """Killed on the first step after stage 2 and run again, a run restores stages 1-2 from
    their saved state, trains stage 3 only, and ends where the uninterrupted run ends: the
    same score matrix and predictions, the same losses in the stage it trained after
    restoring, the same saved state."""
    over = {**resume_overrides, "method": method}
    reference = shared_run(over)
    cfg = build_config(overrides={**over, "runs_dir": str(tmp_path)})
    with pytest.raises(interrupted):  # first training step of stage 3
        one_thread_run(cfg, callbacks=(interrupt_after(DONE * STEPS),))
    store = RunStore(tmp_path / RunStore.run_name(cfg))
    assert [store.stage_done(t) for t in range(4)] == [True, True, True, False]
    written = {t: (store.stage_dir(t) / "scores.parquet").stat().st_mtime_ns
               for t in range(DONE + 1)}

    steps = []
    resumed = one_thread_run(cfg, callbacks=(lambda step, loss, model: steps.append(step),))
    assert resumed.root == store.root and resumed.manifest()["status"] == "complete"
    assert steps == list(range(STEPS))  # only stage 3 trained
    assert {t: (store.stage_dir(t) / "scores.parquet").stat().st_mtime_ns
            for t in range(DONE + 1)} == written  # finished stages neither evaluated again

    pd.testing.assert_frame_equal(resumed.summary("score_matrix"),
                                  reference.summary("score_matrix"))
    pd.testing.assert_frame_equal(resumed.table("predictions"), reference.table("predictions"))
    # Stage 3 trained on the restored model: a method that restored stages 1-2 wrongly would
    # train from other weights or history (other losses, tables, state) even where the scores
    # do not move. Every table of the stage (losses, dynamics, routing, allocation...), its
    # manifest figures and its saved state match; only wall times differ.
    tables = sorted(p.stem for p in reference.stage_dir(3).glob("*.parquet"))
    assert "train_log" in tables
    assert sorted(p.stem for p in resumed.stage_dir(3).glob("*.parquet")) == tables
    for name in tables:
        pd.testing.assert_frame_equal(
            *(s.stage_table(3, name).drop(columns=["seconds"], errors="ignore")
              for s in (resumed, reference)), obj=name)
    untimed = [{k: v for k, v in s.manifest()["stages"]["3"].items()
                if not k.endswith("seconds")} for s in (resumed, reference)]
    assert untimed[0] == untimed[1]
    got, want = resumed.stage_state(3), reference.stage_state(3)
    assert got.keys() == want.keys() and want
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0,
                                   msg=lambda m, k=k: f"{k}: {m}")


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


def test_general_sets_can_be_left_out(smoke_overrides, one_thread):
    cfg = build_config(overrides={**smoke_overrides, "eval.general": "false",
                                  "stream.tasks": "ocr"})
    store = continual.run(cfg, progress=False)
    assert set(store.summary("score_matrix")["eval_task"]) == {"ocr"}
