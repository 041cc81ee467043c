"""Probes on the micro model: hooks leave nothing behind, proxies match their definitions."""

import numpy as np
import pytest
import torch

from dmole_lab.config import ModelConfig
from dmole_lab.data.encode import encode, train_batch
from dmole_lab.data.tasks import make_samples
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.loading import load_model
from dmole_lab.probes import probe_batches, record, sensitivity


@pytest.fixture(scope="module")
def micro(micro_model_dir):
    model, processor = load_model(ModelConfig(path=str(micro_model_dir)))
    data = encode(processor, make_samples("ocr", 12, "train", 0))
    return model, data, anatomy_of(model)


def _n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def test_record_caches_modules_and_layers_and_removes_hooks(micro):
    model, data, anatomy = micro
    batch = train_batch(data, [0, 1])
    with torch.no_grad():
        model(**batch)  # transformers installs its own output-recording hooks on first call
    before = _n_hooks(model)
    with record(model, modules=["llm.1.attn.q", "vision.0.attn.o"],
                layers=[("vision", -1), ("llm", 0)], inputs=True) as cache:
        assert _n_hooks(model) == before + 4
        with torch.no_grad():
            model(**batch)
    assert _n_hooks(model) == before
    q = model.get_submodule(anatomy.by_alias["llm.1.attn.q"].path)
    assert torch.allclose(cache["llm.1.attn.q"], q(cache.inputs["llm.1.attn.q"]))
    assert cache["vision", -1].shape[0] == 2 and cache["llm", 0].shape[-1] == 32
    with pytest.raises(KeyError, match="was not recorded"):
        cache["llm.0.attn.k"]


def test_record_removes_hooks_when_the_block_raises(micro):
    model, _, _ = micro
    before = _n_hooks(model)
    with pytest.raises(RuntimeError):
        with record(model, modules="candidates"):
            raise RuntimeError("boom")
    assert _n_hooks(model) == before


def test_record_rejects_unknown_names(micro):
    model, _, _ = micro
    with pytest.raises(KeyError, match="unknown module alias 'llm.9.attn.q'"):
        with record(model, modules=["llm.9.attn.q"]):
            pass
    with pytest.raises(IndexError, match="vision has 2 layers"):
        with record(model, layers=[("vision", 5)]):
            pass


def test_probe_batches_follows_the_one_percent_rule():
    assert probe_batches(1200, 16) == 2  # 75 batches: K = max(1, round(0.75)) = 1
    assert probe_batches(16000, 16) == 11  # 1000 batches: K = 10
    assert probe_batches(16000, 16, share=0.05) == 51


def _manual_grads(model, anatomy, data, idx_batches):
    """Accumulated gradients of every candidate parameter, computed the plain way."""
    params = {m.alias: list(model.get_submodule(m.path).parameters())
              for m in anatomy.candidates()}
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None
    for idx in idx_batches:
        model(**train_batch(data, idx)).loss.backward()
    grads = {a: [p.grad.clone() for p in ps] for a, ps in params.items()}
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    return params, grads


def test_grad_proxies_match_their_definitions_and_touch_only_candidates(micro):
    model, data, anatomy = micro
    df = sensitivity(model, data, ("grad_norm", "snip", "grad_norm_per_param"), batches=2,
                     batch_size=4, seed=3, snapshots=(1,))
    order = np.random.default_rng(3).permutation(len(data))
    params, grads = _manual_grads(model, anatomy, data, [order[:4], order[4:8]])
    got = df[df.batches == 2].set_index(["module", "proxy"])["score"]
    for alias, gs in grads.items():
        norm = sum(float(g.norm()) for g in gs)
        assert got[alias, "grad_norm"] == pytest.approx(norm, rel=1e-4)
        snip = sum(float((p * g).abs().sum()) for p, g in zip(params[alias], gs))
        assert got[alias, "snip"] == pytest.approx(snip, rel=1e-4)
        n = sum(p.numel() for p in params[alias])
        assert got[alias, "grad_norm_per_param"] == pytest.approx(norm / n, rel=1e-4)
    # the model is left as it was: frozen, no gradients anywhere
    assert not any(p.requires_grad or p.grad is not None for p in model.parameters())
    assert set(df.batches) == {1, 2} and len(df) == 2 * 3 * len(anatomy.candidates())


def test_fisher_equals_mean_squared_per_sample_gradient(micro):
    model, data, anatomy = micro
    df = sensitivity(model, data, ("fisher",), batches=1, batch_size=4, seed=1)
    order = np.random.default_rng(1).permutation(len(data))[:4]
    expected = dict.fromkeys((m.alias for m in anatomy.candidates()), 0.0)
    for i in order:  # each sample alone: the gradient of its own token-mean loss
        _, grads = _manual_grads(model, anatomy, data, [[i]])
        for alias, gs in grads.items():
            expected[alias] += sum(float(g.pow(2).sum()) for g in gs) / 4
    got = df.set_index("module")["score"]
    for alias, value in expected.items():
        assert got[alias] == pytest.approx(value, rel=2e-3, abs=1e-9)


def test_sensitivity_rejects_unknown_proxy(micro):
    model, data, _ = micro
    with pytest.raises(ValueError, match="unknown proxy 'hessian'; allowed: grad_norm"):
        sensitivity(model, data, ("hessian",))


def test_tower_dynamics_match_direct_computation(micro):
    import copy

    from peft import LoraConfig, get_peft_model

    from dmole_lab.config import TrainConfig
    from dmole_lab.probes.recorders import TowerDynamics
    from dmole_lab.training.stage import TrainCallback, train_stage

    base, data, anatomy = micro
    targets = [m.path for m in anatomy.select("all")]
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=targets)
    model = get_peft_model(copy.deepcopy(base), lora)
    rec = TowerDynamics(model, anatomy)
    expected = []

    class Direct(TrainCallback):
        def on_backward(self, step, model):
            for tower in ("vision", "llm"):
                g = [p.grad for n, p in model.named_parameters()
                     if p.requires_grad and anatomy.tower_of(n) == tower]
                norm = float(torch.cat([x.flatten() for x in g]).norm())
                expected.append((step, tower, "grad_norm", norm))

        def on_step(self, step, loss, model):
            for tower in ("vision", "llm"):
                dw, w0 = 0.0, 0.0
                for name, mod in model.named_modules():
                    if hasattr(mod, "get_delta_weight") and anatomy.tower_of(name) == tower:
                        dw += float(mod.get_delta_weight("default").detach().pow(2).sum())
                        w0 += float(mod.base_layer.weight.pow(2).sum())
                expected.append((step, tower, "rel_update", (dw / w0) ** 0.5))

    params = [p for p in model.parameters() if p.requires_grad]
    train_stage(model, data, params, TrainConfig(batch_size=4, max_steps=3, lr=1e-2), seed=0,
                callbacks=(rec, Direct()), progress=False)
    got = rec.table().set_index(["step", "tower", "quantity"])["value"]
    assert len(got) == len(expected) == 3 * 2 * 2
    for step, tower, q, value in expected:
        assert got[step, tower, q] == pytest.approx(value, rel=1e-4)
    assert got[2, "llm", "rel_update"] > 0  # B moved away from zero
