"""Every supported architecture as a user's checkpoint: built small from its own config classes,
saved with its processor, loaded through ``model.path``; then a probe, two D-MoLE stages, one
stage of every other method (evaluation by generation included), and a task adapter that peft
loads to the same logits."""

import json

import pytest
import torch

from dmole_lab.config import METHOD_NAMES, build_config
from dmole_lab.models.zoo import ARCHITECTURES, build_architecture

#: The smallest stream that still trains and evaluates every part: 8 training samples and 2
#: steps per stage, 4 test samples, greedy answers of up to 4 tokens.
FAST = {"stream.n_train": 8, "stream.n_test": 4, "stream.n_general": 4,
        "train.batch_size": 4, "train.max_steps": 2, "eval.batch_size": 8,
        "eval.max_new_tokens": 4, "dmole.router_epochs": 5, "dmole.r": 2,
        "dmole.alpha": 4.0, "probe.sweep": "1"}


@pytest.fixture(scope="session")
def arch_dirs(tmp_path_factory):
    """name -> checkpoint folder of each architecture (random weights, 2 layers per tower)."""
    root = tmp_path_factory.mktemp("architectures")
    out = {}
    for name in ARCHITECTURES:
        build_architecture(name, root / name)
        out[name] = root / name
    return out


def _overrides(arch_dirs, name, tmp_path, **extra):
    return {**FAST, "model.path": str(arch_dirs[name]), "runs_dir": str(tmp_path / "runs"),
            **extra}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_folder_loads_as_a_users_checkpoint(arch_dirs, name):
    from dmole_lab.config import ModelConfig
    from dmole_lab.models.anatomy import anatomy_of
    from dmole_lab.models.loading import load_model

    model, processor = load_model(ModelConfig(path=str(arch_dirs[name]), device="cpu"))
    assert model.config.model_type == name
    a = anatomy_of(model)
    assert a.n_layers("vision") == a.n_layers("llm") == 2
    assert {m.tower for m in a.candidates()} == {"vision", "llm"}
    # every parameter is in a tower, the projector, or the embeddings / head
    towers = {a.tower_of(n) for n, _ in model.named_parameters()}
    assert {"vision", "llm", "projector"} <= towers


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_probe_and_two_dmole_stages(arch_dirs, name, tmp_path, one_thread, one_thread_run):
    from peft import PeftModel

    from dmole_lab.data.encode import encode, to_device, train_batch
    from dmole_lab.data.tasks import make_samples
    from dmole_lab.engine.probe_stream import probe_stream
    from dmole_lab.experts.model import Experts
    from dmole_lab.models.loading import load_model

    over = _overrides(arch_dirs, name, tmp_path, **{"stream.tasks": "caption,grounding"})
    probe = probe_stream(build_config(None, over), progress=False)
    table = probe.summary("sensitivity")
    assert set(table.tower) == {"vision", "llm"} and set(table.task) == {"caption", "grounding"}
    assert (table.score >= 0).all() and (table.score > 0).any()

    store = one_thread_run(build_config(None, {**over, "method": "dmole",
                                               "probe.record_training": True}))
    m = store.manifest()
    assert m["status"] == "complete" and list(m["stages"]) == ["0", "1", "2"]
    dynamics = store.table("dynamics")  # the per-step tower recorder
    assert set(dynamics.tower) >= {"vision", "llm"} and len(dynamics) > 0
    scores = store.table("scores")
    assert set(scores.eval_task) == {"caption", "grounding", "general"}
    preds = store.table("predictions")
    assert len(preds) == 3 * (4 + 4 + 4) and preds.prediction.map(type).eq(str).all()
    assert len(store.table("routing")) > 0

    # the stage's task adapter, loaded by peft on the untouched model, computes what ours does
    cfg = build_config(None, {**over, "method": "dmole", "probe.record_training": True})
    base, processor = load_model(cfg.model)
    ours, _ = load_model(cfg.model)
    adapter = store.root / "adapters" / "grounding"
    shape, state = Experts.read_pretrained(adapter)
    ex = Experts(ours, shape)
    ex.load_state_dict("grounding", state)
    ex.activate(["grounding"])
    assert json.loads((adapter / "adapter_config.json").read_text())["target_modules"]
    peft_model = PeftModel.from_pretrained(base, adapter).eval()
    data = encode(processor, make_samples("grounding", 3, "test", 0))
    batch = to_device(train_batch(data, [0, 1, 2]), torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**batch).logits, ours(**batch).logits)
        ex.activate([])
        assert not torch.allclose(peft_model(**batch).logits, ours(**batch).logits)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_one_stage_of_every_other_method(arch_dirs, name, tmp_path, one_thread_run):
    over = _overrides(arch_dirs, name, tmp_path, **{"stream.tasks": "ocr",
                                                    "eval.general": False})
    for method in METHOD_NAMES:
        if method == "dmole":
            continue
        store = one_thread_run(build_config(None, {**over, "method": method}))
        m = store.manifest()
        assert m["status"] == "complete", method
        assert m["stages"]["1"]["trainable_params"] > 0, method
        log = store.table("train_log")
        assert len(log) == 2 and log.loss.map(float).notna().all(), method
        assert len(store.table("predictions")) == 2 * 4, method


def test_a_folder_without_an_anatomy_map_or_processor_fails_first(arch_dirs, tmp_path,
                                                                    capsys):
    import shutil

    from dmole_lab.cli import main

    bad = tmp_path / "bad"
    shutil.copytree(arch_dirs["qwen2_vl"], bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "mllama"}))
    runs = tmp_path / "runs"
    assert main(["run", f"--model.path={bad}", f"--runs_dir={runs}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model_type 'mllama' has no anatomy map; supported: " in err
    assert all(a in err for a in ARCHITECTURES) and not runs.exists()
    (bad / "config.json").write_text(json.dumps(cfg))
    (bad / "tokenizer.json").unlink()
    assert main(["run", f"--model.path={bad}", f"--runs_dir={runs}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "the processor of model_type 'qwen2_vl' cannot be built" in err
    assert "supported model types: " in err and not runs.exists()


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_images_of_any_size_batch_alike_cached_or_per_batch(arch_dirs, name, one_thread):
    """Images of three sizes: tiles, crops and image tokens vary per sample. Batches cut from
    the cache (or, where the processor's tensors are not per sample, made per batch) give the
    model the same loss as batches processed on the spot."""
    import numpy as np

    from dmole_lab.config import ModelConfig
    from dmole_lab.data.encode import encode, train_batch
    from dmole_lab.data.tasks import Sample
    from dmole_lab.models.loading import load_model

    model, processor = load_model(ModelConfig(path=str(arch_dirs[name]), device="cpu"))
    rng = np.random.default_rng(0)
    samples = [Sample("t", rng.integers(0, 255, (h, w, 3), dtype=np.uint8), f"q {k}", "a red box")
               for k, (h, w) in enumerate([(56, 40), (48, 64), (30, 100), (48, 48)])]
    cached = encode(processor, samples, chunk=2)  # chunks of different tile counts
    per_batch = encode(processor, samples, lazy=True)
    tokens = {len(cached.prompt_ids[i]) for i in range(4)}
    assert len(tokens) > 1 or name == "llava"  # only LLaVA-1.5 has a fixed image length
    with torch.no_grad():
        for idx in ([0, 2], [3, 1, 0]):
            a, b = train_batch(cached, idx), train_batch(per_batch, idx)
            assert torch.equal(a["input_ids"], b["input_ids"])
            torch.testing.assert_close(model(**a).loss, model(**b).loss)
