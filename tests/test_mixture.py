"""Mixture-of-LoRA-experts layer and the MoELoRA / sparse MoLE / MoLA baselines."""

import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dmole_lab.config import ConfigError, MixtureConfig, ModelConfig, RunConfig, build_config
from dmole_lab.data.encode import encode, train_batch
from dmole_lab.data.tasks import make_samples
from dmole_lab.experts.mixture import MixtureLinear, experts_at, load_balance_loss
from dmole_lab.methods import make_method
from dmole_lab.methods.mixture import check_mixture
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.loading import load_model
from dmole_lab.probes.recorders import lora_modules


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The micro model gains nothing from threads, and on a shared 2-core machine several
    threads per process are many times slower (as in test_baselines.py); restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _layer(experts=4, r=2, top_k=0, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return MixtureLinear(nn.Linear(6, 5), experts, r, alpha=8.0, dropout=dropout, top_k=top_k)


def test_layer_starts_as_the_base_layer():
    layer = _layer(top_k=2, dropout=0.1)
    x = torch.randn(3, 7, 6)
    for train in (True, False):
        layer.train(train)
        torch.testing.assert_close(layer(x), layer.base_layer(x), rtol=0, atol=0)
    assert layer.scaling == 8.0 / (4 * 2)
    assert layer.expert_A.shape == (8, 6) and layer.expert_B.shape == (5, 8)
    assert not list(lora_modules(nn.Sequential(layer)))  # recorders read no rel_update here


def test_dense_gates_sum_to_one_and_every_expert_learns():
    layer = _layer().eval()
    with torch.no_grad():
        layer.expert_B.normal_()
    x = torch.randn(2, 5, 6)
    gates, probs, chosen = layer.gates(x)
    torch.testing.assert_close(gates.sum(-1), torch.ones(2, 5))
    assert (gates > 0).all() and chosen.shape == (2, 5, 1)
    # the batched product is the per-expert formula h = W0 x + s sum_i g_i B_i A_i x
    expected = layer.base_layer(x)
    for i in range(4):
        A, B = layer.expert(i)
        expected = expected + layer.scaling * gates[..., i:i + 1] * (x @ A.T @ B.T)
    out = layer(x)
    torch.testing.assert_close(out, expected)
    out.pow(2).sum().backward()
    for i in range(4):
        s = slice(2 * i, 2 * i + 2)
        assert layer.expert_A.grad[s].abs().sum() > 0, f"expert {i} A got no gradient"
        assert layer.expert_B.grad[:, s].abs().sum() > 0, f"expert {i} B got no gradient"
    assert (layer.router.weight.grad.abs().sum(1) > 0).all()


def test_top_k_keeps_exactly_k_renormalised_gates():
    layer = _layer(experts=5, top_k=2)
    x = torch.randn(4, 9, 6)
    gates, probs, chosen = layer.gates(x)
    assert ((gates != 0).sum(-1) == 2).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(4, 9))
    top = probs.topk(2, -1).values
    torch.testing.assert_close(gates.gather(-1, chosen), top / top.sum(-1, keepdim=True))
    assert chosen.shape == (4, 9, 2)
    fast, no_probs, _ = layer.gates(x, need_probs=False)  # the eval path
    assert no_probs is None
    torch.testing.assert_close(fast, gates)


def test_balance_loss_is_n_sum_f_p_by_hand():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.1, 0.3], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    chosen = torch.tensor([[0, 1], [0, 2], [1, 0], [2, 1]])
    # f = (3, 3, 2) / (4 tokens * 2), P = (1.4, 1.3, 1.3) / 4
    expected = 3 * (3 * 0.35 + 3 * 0.325 + 2 * 0.325) / 8
    assert float(load_balance_loss(probs, chosen)) == pytest.approx(expected)  # 1.003125
    uniform = torch.full((6, 3), 1 / 3)
    assert float(load_balance_loss(uniform, torch.tensor([[0], [1], [2]] * 2))) == \
        pytest.approx(1.0)
    layer = _layer(experts=3, r=1, top_k=2).train()
    x = torch.randn(2, 4, 6)
    layer(x)
    _, p, c = layer.gates(x)
    torch.testing.assert_close(layer.balance_loss,
                               load_balance_loss(p.reshape(-1, 3), c.reshape(-1, 2)))
    layer.eval()
    layer(x)
    assert layer.balance_loss is None


def test_mola_places_more_experts_deeper_and_starts_as_the_base_model(micro_model_dir):
    cfg = MixtureConfig(top_k=2, layer_experts=(2, 4, 6, 8))
    assert [experts_at(layer, 8, cfg) for layer in range(8)] == [2, 2, 4, 4, 6, 6, 8, 8]
    assert [experts_at(layer, 6, cfg) for layer in range(6)] == [2, 2, 4, 6, 6, 8]
    assert experts_at(5, 6, MixtureConfig(experts=3)) == 3

    model, processor = load_model(ModelConfig(path=str(micro_model_dir), device="cpu"))
    anatomy = anatomy_of(model)
    batch = train_batch(encode(processor, make_samples("ocr", 2, "train", 0)), [0, 1])
    with torch.no_grad():
        base_logits = model(**batch).logits
    method = make_method(build_config(overrides={"method": "mola"}), anatomy)
    torch.manual_seed(0)
    model = method.begin_task(model, 1, "ocr", None)
    assert len(method.layers) == len(anatomy.select("all"))
    assert method.experts_per_layer() == {("vision", 0): 2, ("vision", 1): 6,
                                          ("llm", 0): 2, ("llm", 1): 6}  # slices 0 and 2
    for path, layer in method.layers.items():
        assert layer.experts == {0: 2, 1: 6}[anatomy.by_path[path].layer]
        assert layer.top_k == 2
        # one scale at every depth, that of the config's E = 4 rank-1 experts: alpha / (4 r)
        assert layer.scaling == 8.0 / 4
    params = method.trainable_parameters(model)
    assert sum(p.numel() for p in params) == sum(
        m.experts * (m.in_features + m.out_features + m.in_features)  # r = 1: A, B, router
        for m in method.layers.values())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"{path}.{k}" for path in method.layers
        for k in ("expert_A", "expert_B", "router.weight")}
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, base_logits, rtol=0, atol=0)
    # extra loss: balance weight times the mean of the layers' N sum f_i P_i
    model.train()
    out = model(**batch)
    mean = torch.stack([m.balance_loss for m in method.layers.values()]).mean()
    extra = method.extra_loss(model, batch, SimpleNamespace(loss=out.loss))
    torch.testing.assert_close(extra, 0.01 * mean)
    model.eval()


def _check_run(store, tasks):
    """A finished mixture run: one shared mixture, saved whole and still training each stage."""
    m = store.manifest()
    assert m["status"] == "complete"
    stages = [str(t) for t in range(1, len(tasks) + 1)]
    sizes = {m["stages"][s]["trainable_params"] for s in stages}
    assert len(sizes) == 1  # the same shared mixture every stage
    first, last = store.stage_state(1), store.stage_state(len(tasks))
    assert sum(v.numel() for v in first.values()) == sizes.pop() > 0
    assert first.keys() == last.keys()
    assert all(not torch.equal(first[k], last[k]) for k in first if k.endswith("expert_B"))
    info = m["stages"]["1"]
    assert info["experts_vision"] > 0 and info["experts_llm"] > 0
    routers = [v for k, v in first.items() if k.endswith("router.weight")]  # (E, in) each
    assert info["experts_vision"] + info["experts_llm"] == sum(len(w) for w in routers)
    assert info["balance_loss"] > 0  # mean over steps of the layers' N sum f_i P_i
    dyn = store.table("dynamics")
    assert set(dyn[dyn.quantity == "grad_norm"].tower) >= {"vision", "llm"}


@pytest.mark.parametrize("name", ["moelora", "mole", "mola"])
def test_mixture_methods_run_end_to_end(resume_overrides, shared_run, name):
    # shared with test_continual's resume test, which interrupts and resumes each
    store = shared_run({**resume_overrides, "method": name})
    _check_run(store, store.manifest()["tasks"])


@pytest.mark.parametrize("key, value, message", [
    ("mole.top_k", 5, r"mole\.top_k=5 .*0 <= top_k <= experts=4"),
    ("moelora.experts", 0, r"moelora\.experts=0 .*experts >= 1"),
    ("mola.layer_experts", (1, 4), r"mola\.layer_experts=\(1, 4\) .*>= max\(1, top_k=2\)"),
    ("mole.balance", -1.0, r"mole\.balance=-1\.0 .*balance >= 0"),
])
def test_bad_mixture_config_names_the_allowed_range(key, value, message):
    from dataclasses import replace

    method, field = key.split(".")
    override = {key: ",".join(map(str, value)) if isinstance(value, tuple) else value}
    with pytest.raises(ConfigError, match=re.escape(key)):  # the config refuses it up front
        build_config(overrides={"method": method, **override})
    # and the method itself, given a config made without the check
    base = RunConfig()
    cfg = replace(base, method=method,
                  **{method: replace(getattr(base, method), **{field: value})})
    with pytest.raises(ConfigError, match=message):
        make_method(cfg, None)
    check_mixture(RunConfig().mola, "mola")  # the defaults pass
