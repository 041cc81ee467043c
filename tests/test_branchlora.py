"""BranchLoRA: the branch layer, the task selector's keys, and the method end to end."""

import pandas as pd
import pytest
import torch
from torch import nn

from dmole_lab.config import BranchConfig, ModelConfig, build_config
from dmole_lab.data.encode import encode, train_batch
from dmole_lab.data.tasks import make_samples
from dmole_lab.engine import continual
from dmole_lab.experts.branch import BranchLinear, BranchSelector
from dmole_lab.methods import make_method
from dmole_lab.methods.branchlora import (
    align_loss,
    check_branch_config,
    fit_keys,
    router_positions,
    select_scores,
    select_tasks,
)
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.loading import load_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Micro-model tensors are 32 wide: intra-op threads only add synchronisation, which on a
    busy 2-core machine made each op wait for a time slice (the run took ~4x longer)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _layer(branches=8, top_k=2, fin=16, fout=12, padded=False, seed=0):
    torch.manual_seed(seed)
    sel = BranchSelector()
    layer = BranchLinear(nn.Linear(fin, fout), sel, branches, top_k, r=4, alpha=8.0,
                         padded=padded)
    layer.base_layer.requires_grad_(False)
    layer.add_router("a")
    return layer, sel


def _randomise_branches(layer):
    with torch.no_grad():
        layer.branches.normal_()


def test_layer_equals_base_at_init_and_when_off():
    layer, sel = _layer()
    x = torch.randn(3, 5, 16)
    sel.clear()
    assert torch.equal(layer(x), layer.base_layer(x))
    sel.set(["a"] * 3)
    assert torch.equal(layer(x), layer.base_layer(x))  # branches start at zero
    _randomise_branches(layer)
    assert not torch.allclose(layer(x), layer.base_layer(x))


def test_gates_top_k_sum_to_one_and_read_only_the_first_token():
    layer, sel = _layer(branches=8, top_k=2)
    layer.add_router("b")
    x = torch.randn(6, 7, 16)
    sel.set(["a", "b", "a", "b", "a", "b"])
    g, chosen = layer.gates(x)
    assert g.shape == (6, 8) and chosen.shape == (6, 2)
    assert ((g > 0).sum(1) == 2).all()
    torch.testing.assert_close(g.sum(1), torch.ones(6))
    # the kept gates are the softmax over the two largest router logits
    logits = torch.stack([layer.lora_router[t](x[i, 0]) for i, t in enumerate(sel.tasks)])
    top = logits.topk(2, dim=1)
    torch.testing.assert_close(g.gather(1, top.indices), top.values.softmax(1))
    # other tokens do not matter; the first does
    y = x.clone()
    y[:, 1:] = torch.randn(6, 6, 16)
    sel.set(sel.tasks)
    torch.testing.assert_close(layer.gates(y)[0], g)
    y[:, 0] = torch.randn(6, 16)
    sel.set(sel.tasks)
    assert not torch.allclose(layer.gates(y)[0], g)
    # LLM modules: left padding shifts the first real position (selector.positions)
    llm, lsel = _layer(padded=True)
    _randomise_branches(llm)
    lsel.set(["a", "a"])
    ref = llm(x[:2])
    padded = torch.cat([torch.randn(2, 3, 16), x[:2]], 1)
    padded[1, :3] = x[1, :3]  # sample 1 not padded: its first real position is 0
    padded[1, 3:] = torch.cat([x[1, 3:], torch.randn(3, 16)])
    lsel.set(["a", "a"], positions=torch.tensor([3, 0]))
    out = llm(padded)
    torch.testing.assert_close(out[0, 3:], ref[0])
    torch.testing.assert_close(out[1, :7], ref[1])
    # generation: single-position decoding steps reuse the batch's gates (no grad)
    with torch.no_grad():
        lsel.set(["a", "a"])
        g = llm.gates(x[:2])[0]  # from the prompt's first positions
        llm(x[:2])  # prefill
        d = torch.randn(2, 1, 16)  # a decoding step: the first token is out of view
        mixed = torch.einsum("bn,nor->bor", g * llm.scaling, llm.full_branches())
        expected = llm.base_layer(d) + (d @ llm.trunk.T) @ mixed.transpose(1, 2)
        torch.testing.assert_close(llm(d), expected)
        lsel.set(["a", "a"])  # a new batch: d is now its own first token
        assert not torch.allclose(llm(d), expected)


def test_frozen_branches_do_not_move_and_usage_is_counted():
    layer, sel = _layer(branches=4, top_k=4)  # every branch in use: all receive gradients
    _randomise_branches(layer)
    layer.freeze_branches([0, 2], stage=1)
    assert layer.frozen.tolist() == [True, False, True, False]
    assert layer.branches.shape == (2, 12, 4)  # only free branches are trainable
    before = layer.full_branches().detach().clone()
    params = [layer.trunk, layer.branches, *layer.lora_router["a"].parameters()]
    opt = torch.optim.AdamW(params, lr=0.1, weight_decay=0.1)
    layer.train()
    layer.usage.zero_()
    sel.set(["a"] * 3)
    layer(torch.randn(3, 5, 16)).pow(2).sum().backward()
    opt.step()
    after = layer.full_branches().detach()
    assert torch.equal(after[[0, 2]], before[[0, 2]])
    assert not torch.allclose(after[1], before[1]) and not torch.allclose(after[3], before[3])
    assert layer.usage.tolist() == [3, 3, 3, 3]  # one hit per sample and branch (k = N)
    # the state round-trips, frozen ones included
    other, _ = _layer(branches=4, top_k=4, seed=1)
    other.load(layer.state())
    assert torch.equal(other.full_branches(), layer.full_branches())
    assert other.frozen.tolist() == layer.frozen.tolist()
    with pytest.raises(ValueError, match="frozen"):
        layer.freeze_branches([0], stage=2)


def test_closed_form_keys_minimise_align_loss():
    torch.manual_seed(0)
    d_vision = 6
    z = torch.randn(40, 10) + torch.tensor([2.0] * 6 + [-1.0] * 4)
    k_img, k_txt = fit_keys(z, d_vision)
    best = float(align_loss(z, d_vision, k_img, k_txt))
    # gradient descent from random keys approaches, never beats, the closed form
    ki, kt = torch.randn(6, requires_grad=True), torch.randn(4, requires_grad=True)
    opt = torch.optim.Adam([ki, kt], lr=0.05)
    start = float(align_loss(z, d_vision, ki, kt).detach())
    for _ in range(300):
        opt.zero_grad()
        loss = align_loss(z, d_vision, ki, kt)
        loss.backward()
        opt.step()
    final = float(align_loss(z, d_vision, ki, kt).detach())
    assert best <= final + 1e-5 < start
    assert final - best < 1e-3
    torch.testing.assert_close(ki.detach() / ki.norm(), k_img, atol=1e-2, rtol=0)
    # and any perturbation of the closed-form keys is worse
    for _ in range(5):
        assert float(align_loss(z, d_vision, k_img + 0.1 * torch.randn(6), k_txt)) > best


def test_selector_picks_the_task_whose_keys_are_nearest():
    torch.manual_seed(0)
    d_vision, tasks = 5, ["a", "b", "c"]
    centers = {t: torch.randn(9) for t in tasks}
    keys = {t: fit_keys(c + 0.05 * torch.randn(20, 9), d_vision) for t, c in centers.items()}
    z = torch.cat([c + 0.05 * torch.randn(4, 9) for c in centers.values()])
    assert select_tasks(z, d_vision, keys) == [t for t in tasks for _ in range(4)]
    assert select_scores(z, d_vision, keys).shape == (12, 3)
    assert float(select_scores(z, d_vision, keys).max()) <= 2 + 1e-5  # two cosines


@pytest.mark.parametrize("field, value, allowed", [
    ("top_k", 9, "allowed: 1..8"), ("top_k", 0, "allowed: 1..8"),
    ("freeze", 9, "allowed: 0..8"), ("branches", 0, "allowed: an integer >= 1"),
    ("dropout", 1.0, "allowed: 0 <= dropout < 1"),
])
def test_bad_config_names_the_allowed_values(field, value, allowed):
    with pytest.raises(ValueError, match=f"branch.{field}={value}; {allowed}"):
        check_branch_config(BranchConfig(**{field: value}))


def test_bad_router_input_names_the_allowed_values():
    with pytest.raises(ValueError, match="branch.router_input='magic'; allowed: summary, first"):
        check_branch_config(BranchConfig(router_input="magic"))
    with pytest.raises(ValueError, match="pool 'max'; allowed: first, mean"):
        BranchLinear(nn.Linear(4, 4), BranchSelector(), pool="max")


def test_vision_mean_pool_reads_every_position():
    torch.manual_seed(0)
    sel = BranchSelector()
    layer = BranchLinear(nn.Linear(16, 12), sel, pool="mean")
    layer.add_router("a")
    x = torch.randn(3, 5, 16)
    sel.set(["a"] * 3)
    logits = layer.lora_router["a"](x.mean(1))
    g = layer.gates(x)[0]
    top = logits.topk(2)
    torch.testing.assert_close(g.gather(1, top.indices), top.values.softmax(1))
    y = x.clone()
    y[:, 1:] = torch.randn(3, 4, 16)  # the first position alone no longer decides
    assert not torch.allclose(layer.gates(y)[0], g)


def test_router_positions_point_at_the_first_or_the_last_prompt_token():
    class Data:
        prompt_ids = [[1, 5, 6], [1, 5, 6, 7, 8], [1, 9]]

    idx = [0, 1, 2]
    assert router_positions(Data, idx, "first", left_padded=False) is None
    assert router_positions(Data, idx, "first", left_padded=True).tolist() == [2, 0, 3]
    assert router_positions(Data, idx, "summary", left_padded=False).tolist() == [2, 4, 1]
    assert router_positions(Data, idx, "summary", left_padded=True).tolist() == [4, 4, 4]


@pytest.mark.parametrize("router_input, same_for_all", [("first", True), ("summary", False)])
def test_llm_routers_tell_samples_apart_only_when_they_read_the_prompt(
        micro_model_dir, router_input, same_for_all):
    """At the first position every prompt holds the same token, which a causal LLM sees alone:
    the routers' input, and so their gates, are the same for every sample."""
    model, processor = load_model(ModelConfig(path=str(micro_model_dir)))
    data = encode(processor, make_samples("ocr", 2, "train", 0)
                  + make_samples("caption", 2, "train", 0))
    cfg = build_config(overrides={"method": "branchlora", "branch.router_input": router_input})
    method = make_method(cfg, anatomy_of(model))
    model = method.begin_task(model, 1, "a", data)
    gates = []
    hooks = [layer.register_forward_pre_hook(lambda mod, args: gates.append(mod.gates(args[0])[0]))
             for layer in method.layers.values() if layer.padded]
    method.callbacks()[0].on_batch(0, [0, 1, 2, 3], model)
    with torch.no_grad():
        model(**train_batch(data, [0, 1, 2, 3]))
    for h in hooks:
        h.remove()
    assert len(gates) == len(hooks) > 0
    assert all(torch.allclose(g, g[:1].expand_as(g)) for g in gates) == same_for_all


def test_trunk_trains_after_task_1_only_when_asked(micro_model_dir):
    model, processor = load_model(ModelConfig(path=str(micro_model_dir)))
    anatomy = anatomy_of(model)
    data = encode(processor, make_samples("ocr", 4, "train", 0))
    for train_trunk in (True, False):
        cfg = build_config(overrides={"method": "branchlora", "branch.train_trunk": train_trunk})
        method = make_method(cfg, anatomy)
        model = method.begin_task(model, 1, "a", data)
        n_layers = len(anatomy.select(cfg.lora.modules))
        layers = method.layers.values()
        assert len(method.layers) == n_layers
        ids = {id(p) for p in method.trainable_parameters(model)}
        assert all(id(layer.trunk) in ids for layer in layers)
        method.end_task(model, 1, "a")
        model = method.begin_task(model, 2, "b", data)
        ids = {id(p) for p in method.trainable_parameters(model)}
        assert all((id(layer.trunk) in ids) == train_trunk for layer in layers)
        assert all(layer.trunk.requires_grad == train_trunk for layer in layers)
        assert not any(p.requires_grad for layer in layers for p in
                       layer.lora_router["a"].parameters())
        model, processor = load_model(ModelConfig(path=str(micro_model_dir)))


@pytest.fixture()
def branch_overrides(smoke_overrides):
    return {**smoke_overrides, "method": "branchlora", "train.max_steps": 2}


def test_branchlora_end_to_end_resumes_to_the_same_scores(branch_overrides, tmp_path,
                                                          interrupted, interrupt_after):
    overrides = {**branch_overrides, "branch.train_trunk": False}
    cfg = build_config(overrides=overrides)
    store = continual.run(cfg, progress=False)
    m = store.manifest()
    assert m["status"] == "complete"
    tasks = list(cfg.stream.tasks)
    s1, s3 = store.stage_state(1), store.stage_state(3)
    trunks = [k for k in s1 if k.endswith(".trunk")]
    assert trunks and all(torch.equal(s1[k], s3[k]) for k in trunks)  # A fixed after task 1
    assert [m["stages"][str(t)]["trunk_trained"] for t in (1, 2, 3)] == [True, False, False]
    for t in (1, 2, 3):  # the selector's accuracy: test_branchlora_selector_on_the_routing_preset
        info = m["stages"][str(t)]
        assert info["trainable_params"] > 0 and info["branches_frozen_now"] > 0
    assert m["stages"]["1"]["trainable_params"] > m["stages"]["2"]["trainable_params"]
    usage = store.table("branch_usage")
    for _, g in usage[usage.stage == 1].groupby("module"):
        # at most `freeze` per module, and the task's most used among its trainable branches
        assert g.frozen_now.sum() <= 2
        if g.frozen_now.any():
            assert g[g.frozen_now]["count"].min() >= g[~g.frozen_now]["count"].max()
    frozen = {k: v for k, v in s3.items() if k.endswith(".frozen_by")}
    assert set(torch.cat(list(frozen.values())).tolist()) <= {0, 1, 2, 3}
    routing = store.table("routing")
    assert set(routing.columns) >= {"stage", "eval_task", "routed", "active", "count"}
    assert set(routing[routing.stage == 0].routed) == {""}
    assert set(routing[routing.stage == 1].routed) == {tasks[0]}  # one task learned
    assert set(routing[routing.stage == 3].routed) <= set(tasks)
    assert len([k for k in s3 if k.startswith("keys.")]) == 2 * len(tasks)
    # interrupted inside stage 3, resumed: the same scores, predictions and state
    cfg2 = build_config(overrides={**overrides, "runs_dir": str(tmp_path / "b")})
    with pytest.raises(interrupted):  # 2 steps per stage: dies inside stage 3
        continual.run(cfg2, progress=False, callbacks=(interrupt_after(4),))
    resumed = continual.run(cfg2, progress=False)
    cols = ["stage", "eval_task", "metric", "value"]
    pd.testing.assert_frame_equal(resumed.table("scores")[cols], store.table("scores")[cols])
    pd.testing.assert_frame_equal(resumed.table("predictions"), store.table("predictions"))
    r3 = resumed.stage_state(3)
    assert r3.keys() == s3.keys() and all(torch.equal(r3[k], s3[k]) for k in s3)


def test_branchlora_selector_on_the_routing_preset(shared_run, route_overrides):
    """On the routing preset (3 tasks of 192 training and 16 test samples) the task selector
    picks each test sample's own task: measured 1.0, 1.0 and 0.979 (47 of 48) after stages 1-3;
    the selected branches change what the model answers."""
    store = shared_run({**route_overrides, "method": "branchlora"}, preset="route")
    m = store.manifest()
    accuracy = {t: m["stages"][str(t)]["router_accuracy"] for t in (1, 2, 3)}
    assert min(accuracy.values()) >= 0.9, accuracy
    tasks = m["tasks"]
    routing = store.table("routing")
    last = routing[(routing.stage == 3) & routing.eval_task.isin(tasks)]
    top = last.sort_values("count").groupby("eval_task").tail(1).set_index("eval_task")
    assert top.routed.to_dict() == {t: t for t in tasks}
    sm = store.summary("score_matrix").pivot_table(index="stage", columns="eval_task",
                                                   values="value")
    assert all((sm.loc[t, tasks] != sm.loc[0, tasks]).any() for t in (1, 2, 3))
