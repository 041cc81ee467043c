"""The continual baselines of docs/method.md section 3: LwF-LoRA, EWC-LoRA, O-LoRA and
multi-task."""

import math

import pandas as pd
import pytest
import torch
from torch import nn

from dmole_lab.config import ModelConfig, build_config
from dmole_lab.data.encode import Encoded, concat, encode, subset, train_batch
from dmole_lab.data.tasks import make_samples
from dmole_lab.experts import AdapterShape, Experts
from dmole_lab.methods import make_method
from dmole_lab.methods.ewc import ewc_penalty, fisher_diagonal, lora_parameters
from dmole_lab.methods.lwf import distillation
from dmole_lab.methods.olora import orthogonality
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.loading import load_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The micro model gains nothing from threads, and on a shared 2-core machine several
    threads per process are many times slower; restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _setup(micro_model_dir, method, **overrides):
    """(model, method, processor) for unit checks on the micro model."""
    cfg = build_config(overrides={"model.path": str(micro_model_dir), "model.device": "cpu",
                                  "method": method, **overrides})
    model, processor = load_model(ModelConfig(path=str(micro_model_dir), device="cpu"))
    return model, make_method(cfg, anatomy_of(model)), processor, cfg


def _data(processor, task, n=4):
    return encode(processor, make_samples(task, n, "train", 0))


# ------------------------------------------------------------------------------------ LwF
def test_distillation_matches_hand_computed_kl():
    # vocab 2, sequence 3; labels mark tokens 1 and 2 as answer -> logits 0 and 1 are used
    z_old = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [9.0, -9.0]]])
    z_new = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0], [-5.0, 5.0]]])
    labels = torch.tensor([[-100, 4, 7]])
    T = 2.0

    def kl(p, q):
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))

    s = 1 / (1 + math.exp(-1.0))  # softmax([2, 0] / 2)
    p0, q0 = (0.5, 0.5), (3 ** 0.5 / (1 + 3 ** 0.5), 1 / (1 + 3 ** 0.5))  # T = 2 halves logs
    expected = T * T * (kl(p0, q0) + kl((s, 1 - s), (0.5, 0.5))) / 2
    assert float(distillation(z_old, z_new, labels, T)) == pytest.approx(expected, rel=1e-6)
    # only the positions that predict answer tokens count: the last logits never do
    assert float(distillation(z_old, z_new, torch.tensor([[-100, -100, 7]]), T)) == \
        pytest.approx(T * T * kl((s, 1 - s), (0.5, 0.5)), rel=1e-6)
    assert float(distillation(z_old, z_new, torch.full((1, 3), -100), T)) == 0.0


def test_lwf_term_is_zero_for_a_fresh_lora_then_distils_from_the_merged_model(micro_model_dir):
    model, method, processor, _ = _setup(micro_model_dir, "lwf", **{"lwf.weight": 1.0})
    data = _data(processor, "ocr")
    batch = train_batch(data, [0, 1, 2, 3])
    peft1 = method.begin_task(model, 1, "caption", data)
    assert method.extra_loss(peft1, batch, peft1(**batch)) is None  # task 1: no old model
    with torch.no_grad():  # "train" task 1, then merge it: the old model of task 2
        for p in method.trainable_parameters(peft1):
            p.normal_(0, 0.1)
    merged, _ = method.end_task(peft1, 1, "caption")
    with torch.no_grad():
        z_merged = merged(**batch).logits

    peft2 = method.begin_task(merged, 2, "ocr", data)
    peft2.train()
    out = peft2(**batch)
    assert float(method.extra_loss(peft2, batch, out).detach()) == pytest.approx(0.0, abs=1e-10)
    opt = torch.optim.SGD(method.trainable_parameters(peft2), lr=0.5)
    out.loss.backward()
    opt.step()
    peft2.eval()
    out = peft2(**batch)
    term = method.extra_loss(peft2, batch, out)
    assert float(term.detach()) > 1e-6
    # the old logits are exactly those of the merged model after task 1
    torch.testing.assert_close(term, distillation(z_merged, out.logits, batch["labels"], 2.0))
    term.backward()
    assert all(p.grad is not None for p in method.trainable_parameters(peft2))
    assert method.info()["lwf_distill_mean"] == pytest.approx(float(term.detach()) / 2)


# ------------------------------------------------------------------------------------ EWC
def test_ewc_fisher_is_mean_squared_gradient_and_accumulates_online(micro_model_dir):
    model, method, processor, cfg = _setup(
        micro_model_dir, "ewc", **{"ewc.decay": 0.5, "ewc.fisher_batches": 4,
                                   "train.batch_size": 1, "ewc.weight": 3.0})
    data1, data2 = _data(processor, "caption"), _data(processor, "ocr")
    peft = method.begin_task(model, 1, "caption", data1)
    params = lora_parameters(peft)
    assert params and all(p.requires_grad for p in params.values())
    with torch.no_grad():  # B = 0 would leave A's gradient zero
        for p in params.values():
            p.normal_(0, 0.1)

    def by_hand(data):
        """Batches of one sample and all of them: mean over samples of squared gradients."""
        peft.eval()
        total = {n: torch.zeros_like(p) for n, p in params.items()}
        for i in range(len(data)):
            peft.zero_grad()
            peft(**train_batch(data, [i])).loss.backward()
            for n, p in params.items():
                total[n] += p.grad ** 2
        peft.zero_grad()
        return {n: v / len(data) for n, v in total.items()}

    f1 = by_hand(data1)
    got, used = fisher_diagonal(peft, params, data1, 4, 1, seed=0)
    assert used == 4
    for n in params:
        torch.testing.assert_close(got[n], f1[n])

    peft, state1 = method.end_task(peft, 1, "caption")
    for n in params:
        torch.testing.assert_close(method.fisher[n], f1[n])
        torch.testing.assert_close(state1["ewc.fisher." + n], f1[n])
        assert torch.equal(state1["ewc.theta." + n], params[n].detach())
    peft = method.begin_task(peft, 2, "ocr", data2)
    out = peft(**train_batch(data2, [0]))
    assert float(method.extra_loss(peft, {}, out).detach()) == 0.0  # at theta* the penalty vanishes
    with torch.no_grad():
        for p in params.values():
            p.add_(0.05 * torch.randn_like(p))
    theta1 = {n: state1["ewc.theta." + n] for n in params}
    moved = {n: p.detach() - theta1[n] for n, p in params.items()}
    expected = 1.5 * sum(float((f1[n] * moved[n] ** 2).sum()) for n in params)
    assert float(method.extra_loss(peft, {}, out).detach()) == pytest.approx(expected, rel=1e-5)
    assert float(ewc_penalty(params, f1, theta1, 3.0).detach()) == pytest.approx(expected, rel=1e-5)
    f2 = by_hand(data2)
    peft, state2 = method.end_task(peft, 2, "ocr")
    for n in params:  # online: F = decay * F_old + F_task
        torch.testing.assert_close(method.fisher[n], 0.5 * f1[n] + f2[n])
        torch.testing.assert_close(state2["ewc.fisher." + n], 0.5 * f1[n] + f2[n])
    assert method.info()["ewc_penalty_mean"] == pytest.approx(expected / 2, rel=1e-5)


# --------------------------------------------------------------------------------- O-LoRA
def test_orthogonality_matches_hand_computation():
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(3, 4, bias=False))
    experts = Experts(model, AdapterShape(r=2, alpha=2.0, dropout=0.0))
    for task in ("a", "b", "c"):
        experts.add(task, ["0", "1"])
    A = {("0", "a"): [[1, 0, 0], [0, 1, 0]], ("0", "b"): [[1, 1, 0], [0, 0, 2]],
         ("1", "a"): [[1, 2, 3], [0, 0, 0]], ("1", "b"): [[0, 0, 1], [1, 0, 0]],
         ("0", "c"): [[0, 0, 1], [0, 0, 0]], ("1", "c"): [[0, 1, 0], [0, 0, 0]]}
    with torch.no_grad():
        for (path, task), a in A.items():
            model.get_submodule(path).lora_A[task].weight.copy_(torch.tensor(a, dtype=torch.float))
    # module 0: A_a A_b^T = [[1, 0], [1, 0]] -> 2; module 1: [[3, 1], [0, 0]] -> 10
    assert float(orthogonality(experts, "b", ["a"]).detach()) == 12.0
    # c against a: module 0 [[0,0],[0,0]] + module 1 [[2,0],[0,0]] -> 4; c against b:
    # module 0 [[0,0],[2,0]] + module 1 [[0,0],[0,0]] -> 4
    assert float(orthogonality(experts, "c", ["a", "b"]).detach()) == 8.0


def test_olora_keeps_older_loras_frozen_and_active(micro_model_dir):
    model, method, processor, cfg = _setup(
        micro_model_dir, "o-lora", **{"olora.orth": 2.0, "olora.l2": 0.0,
                                      "train.max_steps": 1, "train.batch_size": 4})
    data = _data(processor, "ocr")
    batch = train_batch(data, [0, 1, 2, 3])
    n_modules = len(method.anatomy.select(cfg.lora.modules))
    model = method.begin_task(model, 1, "caption", data)
    assert method.extra_loss(model, batch, None) is None  # nothing to be orthogonal to
    with torch.no_grad():
        for p in method.trainable_parameters(model):
            p.normal_(0, 0.1)
    model, state = method.end_task(model, 1, "caption")
    assert len(state) == 2 * n_modules
    old = {k: v.clone() for k, v in method.experts.state_dict("caption").items()}
    model = method.begin_task(model, 2, "ocr", data)
    experts = method.experts
    assert experts.gates.active == ["caption", "ocr"]
    params = method.trainable_parameters(model)
    assert len(params) == 2 * n_modules and all(p.requires_grad for p in params)
    assert not any(p.requires_grad for p in experts.parameters("caption"))
    assert {id(p) for n, p in model.named_parameters() if p.requires_grad} == set(map(id, params))
    out = model(**batch)
    torch.testing.assert_close(method.extra_loss(model, batch, out),
                               2.0 * orthogonality(experts, "ocr", ["caption"]))
    from dmole_lab.training.stage import train_stage

    train_stage(model, data, params, cfg.train, 0, extra_loss=method.extra_loss, progress=False)
    for k, v in experts.state_dict("caption").items():
        assert torch.equal(v, old[k])  # frozen
    assert any(not torch.equal(p, torch.zeros_like(p)) for p in experts.parameters("ocr")[1::2])
    model, _ = method.end_task(model, 2, "ocr")
    assert experts.gates.active == ["caption", "ocr"]  # inference sums every LoRA
    assert not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        both = model(**batch).logits
        experts.activate(["ocr"])
        only_new = model(**batch).logits
    assert not torch.allclose(both, only_new)  # the old LoRA still contributes


# ------------------------------------------------------------------------------ multitask
def test_encoded_subset_and_concat(micro_processor):
    a = _data(micro_processor, "caption", 3)
    b = _data(micro_processor, "ocr", 2)
    both = concat([subset(a, [2, 0]), b])
    assert [s.task for s in both.samples] == ["caption", "caption", "ocr", "ocr"]
    assert both.prompt_ids[0] == a.prompt_ids[2] and both.answer_ids[3] == b.answer_ids[1]
    for k, v in both.image_inputs.items():
        assert v.shape[0] == 4
        torch.testing.assert_close(v[0], a.image_inputs[k][2])
        torch.testing.assert_close(v[3], b.image_inputs[k][1])
    other_pad = Encoded(b.samples, b.prompt_ids, b.answer_ids, b.image_inputs, b.pad_id + 1)
    with pytest.raises(ValueError, match="pad ids differ"):
        concat([a, other_pad])
    with pytest.raises(ValueError, match="image inputs differ"):
        concat([a, Encoded(b.samples, b.prompt_ids, b.answer_ids, {}, b.pad_id)])


def test_multitask_mix_draws_evenly_from_every_seen_task(micro_model_dir):
    tasks = ("caption", "grounding", "ocr")
    model, method, processor, cfg = _setup(
        micro_model_dir, "multitask", **{"stream.tasks": ",".join(tasks), "stream.n_train": 7})
    data = {t: _data(processor, t, 7) for t in tasks}
    states = []
    for t, task in enumerate(tasks, 1):
        model = method.begin_task(model, t, task, data[task])
        mix = method.training_data(data[task])
        assert len(mix) == len(data[task])
        counts = pd.Series([s.task for s in mix.samples]).value_counts().to_dict()
        assert set(counts) == set(tasks[:t])
        assert sorted(counts.values()) == sorted([7 // t + (i < 7 % t) for i in range(t)])
        for name in counts:  # drawn without replacement from that task's own set
            picked = [id(s) for s in mix.samples if s.task == name]
            assert len(set(picked)) == len(picked)
            assert set(picked) <= {id(s) for s in data[name].samples}
        if t < 3:
            model, state = method.end_task(model, t, task)
            states.append(state)
    assert mix is not data["ocr"]
    # A resumed run (finished stages replayed, their data re-created) draws the same mix.
    fresh, _ = load_model(ModelConfig(path=str(micro_model_dir), device="cpu"))
    other = make_method(cfg, method.anatomy)
    other.train_set = lambda task: _data(processor, task, 7)  # as the runner sets it
    for t, (task, state) in enumerate(zip(tasks[:2], states), 1):
        fresh = other.restore_task(fresh, t, task, state)
    other.begin_task(fresh, 3, "ocr", data["ocr"])
    again = other.training_data(data["ocr"])
    assert again.prompt_ids == mix.prompt_ids and again.answer_ids == mix.answer_ids
    for k in mix.image_inputs:
        assert torch.equal(again.image_inputs[k], mix.image_inputs[k])


# ------------------------------------------------------------------------------ end to end
# The runs are shared with test_continual's resume test, which interrupts and resumes each.
@pytest.mark.parametrize("method", ["lwf", "multitask"])
def test_runs_end_to_end(resume_overrides, shared_run, method):
    store = shared_run({**resume_overrides, "method": method})
    m = store.manifest()
    assert m["status"] == "complete" and m["method"] == method
    stages = m["stages"]
    assert len({stages[s]["trainable_params"] for s in ("1", "2", "3")}) == 1
    if method == "lwf":
        assert "lwf_distill_mean" not in stages["1"]
        assert all(stages[s]["lwf_distill_mean"] >= 0 for s in ("2", "3"))
    s1, s3 = store.stage_state(1), store.stage_state(3)
    assert s1.keys() == s3.keys() and any(not torch.equal(s1[k], s3[k]) for k in s1)


@pytest.mark.parametrize("method", ["ewc", "o-lora"])
def test_ewc_and_olora_record_their_penalty_and_adapters(resume_overrides, shared_run, method):
    store = shared_run({**resume_overrides, "method": method})
    m = store.manifest()
    assert m["status"] == "complete"
    if method == "ewc":
        assert "ewc_penalty_mean" not in m["stages"]["1"]
        assert m["stages"]["3"]["ewc_penalty_mean"] > 0
        assert any(k.startswith("ewc.fisher.") for k in store.stage_state(3))
    else:
        assert [m["stages"][s]["active_loras"] for s in "0123"] == [0, 1, 2, 3]
        assert all((store.root / "adapters" / t / "adapter_config.json").is_file()
                   for t in ("caption", "grounding", "ocr"))
