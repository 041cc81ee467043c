"""`dmole-lab probe` over a stream, the oracle, and shipping results (micro model, seconds)."""

import pandas as pd
import pytest
import torch

from dmole_lab.cli import main
from dmole_lab.config import ModelConfig, TrainConfig, build_config
from dmole_lab.data.encode import encode
from dmole_lab.data.tasks import make_samples
from dmole_lab.engine.probe_stream import (
    PROBE_EXCLUDE,
    probe_plan,
    probe_store,
    probe_stream,
)
from dmole_lab.models.loading import load_model
from dmole_lab.probes.oracle import held_out_loss, oracle_gains, oracle_key
from dmole_lab.store import RunStore
from dmole_lab.viz import report, results


@pytest.fixture()
def probe_overrides(smoke_overrides):
    return {**smoke_overrides, "probe.sweep": "1,2"}


def test_probe_stream_stores_every_task_proxy_and_batch_count(probe_overrides):
    cfg = build_config(overrides=probe_overrides)
    bs, k1, counts = probe_plan(cfg)
    assert (bs, k1, counts) == (4, 2, [1, 2])  # 2 batches per task: K = max(1, 0) = 1
    store = probe_stream(cfg, progress=False)
    table = store.summary("sensitivity")
    assert set(table.task) == {"caption", "grounding", "ocr"}
    assert set(table.proxy) == set(cfg.probe.proxies) and set(table.batches) == {1, 2}
    assert set(table.tower) == {"vision", "llm"} and (table.score >= 0).all()
    # accumulated gradients never shrink from 1 to 2 batches in sum over a tower
    g = table[table.proxy == "grad_norm"].groupby(["task", "batches"]).score.sum().unstack()
    assert (g[2] > g[1]).all()
    m = store.manifest()
    assert m["kind"] == "probe" and m["status"] == "complete" and m["probe_batches"] == 2
    report.write_probe_figures(store)
    assert {p.name for p in (store.root / "figures").iterdir()} == {
        f"sensitivity_{p}.png" for p in cfg.probe.proxies}
    # a method or LoRA setting does not change what a probe measures: same folder
    other = build_config(overrides={**probe_overrides, "method": "seq-lora", "lora.r": 2})
    assert probe_store(other).root == store.root


def test_interrupted_probe_resumes_at_the_next_task(probe_overrides):
    cfg = build_config(overrides=probe_overrides)
    store = probe_stream(cfg, progress=False)
    reference = store.summary("sensitivity")
    first = (store.stage_dir(1) / "sensitivity.parquet").stat().st_mtime_ns
    m = store.manifest()
    del m["stages"]["3"]  # as if the process died while probing the third task
    m["status"] = "running"
    store.update_manifest(**m)
    again = probe_stream(cfg, progress=False)
    assert (store.stage_dir(1) / "sensitivity.parquet").stat().st_mtime_ns == first
    assert again.stage_done(3)
    pd.testing.assert_frame_equal(again.summary("sensitivity"), reference)


def test_probe_command_prints_the_tower_split(probe_overrides, capsys):
    argv = [f"--{k}={v}" for k, v in probe_overrides.items()]
    assert main(["probe", "--quiet", *argv]) == 0
    out = capsys.readouterr().out
    assert "rho_V" in out and "grounding" in out and "sensitivity.parquet" in out
    assert main(["probe", "--quiet", *argv, "--probe.proxies=grad_norm,magic"]) == 2
    assert "unknown proxy 'magic'" in capsys.readouterr().err


def test_oracle_trains_each_layer_alone_and_leaves_the_base_untouched(micro_model_dir):
    model, processor = load_model(ModelConfig(path=str(micro_model_dir)))
    data = encode(processor, make_samples("ocr", 8, "train", 0))
    base = {k: v.clone() for k, v in model.state_dict().items()}
    before = held_out_loss(model, data)
    cfg = TrainConfig(batch_size=4, max_steps=3, lr=5e-2, warmup_ratio=0.0)
    gains = oracle_gains(model, data, data, cfg, r=2, alpha=4.0,
                         layers=[("vision", 1), ("llm", 0), ("llm", 1)])
    assert list(zip(gains.tower, gains.layer)) == [("vision", 1), ("llm", 0), ("llm", 1)]
    assert gains.loss_before.tolist() == pytest.approx([before] * 3)
    assert (gains.gain > 0).all()  # fitting the very data it is scored on must lower the loss
    assert (gains.seconds > 0).all()  # each layer keeps what it cost
    after = model.state_dict()
    assert after.keys() == base.keys()
    assert all(torch.equal(after[k], v) for k, v in base.items())
    assert not any(p.requires_grad for p in model.parameters())
    assert held_out_loss(model, data) == pytest.approx(before)
    with pytest.raises(ValueError, match="vision layer 7 has no candidate module"):
        oracle_gains(model, data, data, cfg, layers=[("vision", 7)])


@pytest.mark.parametrize("key,value,renames", [
    ("lora.dropout", 0.0, False), ("dmole.dropout", 0.0, False), ("mola.dropout", 0.0, False),
    ("branch.dropout", 0.0, False), ("method", "dmole", False), ("eval.max_new_tokens", 3, False),
    ("lora.r", 8, True), ("train.lr", 1e-3, True), ("stream.n_train", 64, True), ("seed", 1, True),
])
def test_oracle_and_probe_caches_are_named_by_what_they_read(key, value, renames):
    """Neither trains with an adapter dropout nor reads a method's section, so turning dropout
    off in a preset must not retrain them; what they do read names a new cache."""
    base, other = build_config("tiny"), build_config("tiny", {key: value})
    assert (oracle_key(base, "tiny") != oracle_key(other, "tiny")) == renames
    if not key.startswith("lora."):  # the probe reads no adapter settings at all
        assert (RunStore.run_name(base, "probe", PROBE_EXCLUDE)
                != RunStore.run_name(other, "probe", PROBE_EXCLUDE)) == renames


def test_ship_and_open_a_stored_run(probe_overrides, tmp_path):
    store = probe_stream(build_config(overrides=probe_overrides), progress=False)
    dest = results.ship(store, "probe-micro", results_dir=tmp_path / "results")
    assert not (dest / "stages").exists()
    opened = results.open_run("probe-micro", results_dir=tmp_path / "results")
    pd.testing.assert_frame_equal(opened.summary("sensitivity"), store.summary("sensitivity"))
    with pytest.raises(FileNotFoundError, match="no stored run 'nope'"):
        results.open_run("nope", results_dir=tmp_path / "results")
    assert "probe-tiny" in results.available()  # shipped with the project


def test_oracle_cost_sums_the_kept_times_and_counts_parts_without_one():
    from dmole_lab.probes.oracle import oracle_cost

    oracle = pd.DataFrame({"task": ["a", "a", "a", "a", "b", "b"], "seed": [0, 0, 1, 1, 0, 0],
                           "seconds": [1.0, 2.0, 3.0, 4.0, None, None]})
    assert oracle_cost(oracle) == {"train_seconds": 10.0, "parts": 3, "parts_timed": 2}
    assert oracle_cost(oracle.drop(columns="seconds")) == {"train_seconds": 0.0, "parts": 3,
                                                          "parts_timed": 0}
