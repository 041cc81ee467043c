"""D-MoLE end to end on the micro model, its router rules, and Seq-FT."""

import json

import pytest
import torch

from dmole_lab.config import ConfigError, ModelConfig, build_config
from dmole_lab.data.encode import encode
from dmole_lab.data.tasks import make_samples
from dmole_lab.dmole.allocation import expert_params
from dmole_lab.dmole.router import Router, TaskAutoencoder, representations, train_autoencoder
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.loading import load_model
from dmole_lab.viz import report


@pytest.fixture()
def dmole_overrides(smoke_overrides):
    return {**smoke_overrides, "method": "dmole", "train.max_steps": 2,
            "dmole.router_epochs": 5, "dmole.r": 2, "dmole.alpha": 4.0}


def test_dmole_run_records_allocation_routing_and_peft_adapters(resume_overrides, shared_run):
    over = {**resume_overrides, "method": "dmole"}  # the settings of dmole_overrides
    cfg = build_config(overrides=over)
    store = shared_run(over)  # also the reference of test_continual's resume test
    m = store.manifest()
    assert m["status"] == "complete"
    alloc = store.table("allocation")
    n_candidates = 2 * 2 * 4  # 2 towers x 2 layers x (q, k, v, o)
    for t, task in enumerate(cfg.stream.tasks, 1):
        info = m["stages"][str(t)]
        assert info["k_vision"] + info["k_llm"] == n_candidates // 2
        assert info["k_vision"] >= 2  # floor(0.25 * 8)
        assert info["trainable_params"] == info["expert_params"] > 0
        assert info["probe_seconds"] > 0
        a = alloc[alloc.stage == t]
        assert len(a) == n_candidates // 2 and set(a.task) == {task}
        adapter = store.root / "adapters" / task
        cfg_json = json.loads((adapter / "adapter_config.json").read_text())
        assert cfg_json["r"] == 2 and len(cfg_json["target_modules"]) == len(a)
    routing = store.table("routing")
    assert set(routing.stage) == {0, 1, 2, 3}
    assert set(routing[routing.stage == 0].routed) == {""}  # nothing learned: base model
    assert set(routing.columns) >= {"eval_task", "routed", "active", "count"}
    # The top routed task is always among the active ones.
    assert all(r in a.split("+") for r, a in zip(routing.routed, routing.active) if r)
    # (whether the router finds the right task: test_router_sends_each_test_set_to_its_task...,
    # on the routing preset; 4 test samples per task tell little)
    joined = store.table("train_routing")
    log = store.table("train_log")
    for t, task in enumerate(cfg.stream.tasks, 1):  # one row per training step of each stage
        assert joined[joined.task == task].step.tolist() == log[log.stage == t].step.tolist()
    assert len(joined) == 3 * 2  # train.max_steps = 2
    # a batch is joined by an earlier task's experts only
    assert set(joined[joined.task == "grounding"].joined) <= {"", "caption"}
    assert set(joined[joined.task == "caption"].joined) == {""}  # no earlier task to join
    summaries = report.write_report(store)
    for key in ("allocation", "router_confusion", "router_accuracy", "expert_usage", "routing",
                "train_routing", "sensitivity", "curriculum"):
        assert summaries[key].is_file()
    # a table and the figure drawn from it keep apart keys
    assert summaries["allocation"].suffix == ".parquet"
    assert summaries["allocation_heatmap"].suffix == ".png"
    acc = store.summary("router_accuracy")
    assert acc.stage.tolist() == [1, 2, 3]
    assert acc.router_accuracy.tolist() == [m["stages"][str(t)]["router_accuracy"]
                                            for t in (1, 2, 3)]
    use = store.summary("expert_usage")
    assert len(use) == len(alloc) and use.usage.between(0, 1).all()
    splits = store.table("curriculum")
    assert len(splits) == 3 * 3 and splits.groupby("task").used.sum().eq(1).all()
    used = splits[splits.used].set_index("task")
    assert used.curriculum.eq("current").all()
    assert used.k_vision.to_dict() == {t: m["stages"][str(i)]["k_vision"]
                                       for i, t in enumerate(cfg.stream.tasks, 1)}
    sens = store.table("sensitivity")
    assert sens.task.nunique() == 3
    sizes = expert_params(alloc, sens, r=2)  # from the stored tables alone
    assert sizes.to_dict() == {t: m["stages"][str(i)]["expert_params"]
                               for i, t in enumerate(cfg.stream.tasks, 1)}


@pytest.fixture(scope="module")
def routed(shared_run, route_overrides):
    """D-MoLE on the routing preset (3 tasks, 192 training and 16 test samples each)."""
    return shared_run({**route_overrides, "method": "dmole"}, preset="route")


def test_router_sends_each_test_set_to_its_task_and_the_experts_answer(routed):
    """With no task id, every stage's router picks each learned task's own experts (measured:
    accuracy 1.0 after every stage), those experts change what the model answers, and a task's
    frozen experts answer it after later stages exactly as after its own stage."""
    m = routed.manifest()
    tasks = m["tasks"]
    accuracy = {t: m["stages"][str(t)]["router_accuracy"] for t in (1, 2, 3)}
    assert min(accuracy.values()) >= 0.9, accuracy
    assert routed.summary("router_accuracy").router_accuracy.tolist() == list(accuracy.values())
    routing = routed.table("routing")
    last = routing[(routing.stage == 3) & routing.eval_task.isin(tasks)]
    top = last.sort_values("count").groupby("eval_task").tail(1).set_index("eval_task")
    assert top.routed.to_dict() == {t: t for t in tasks}
    # The experts answer: after every stage the learned tasks' predictions are not all the
    # base model's (a router that never voted would leave every row at the zero-shot one).
    preds = routed.table("predictions").set_index(["eval_task", "index"])
    base = preds[preds.stage == 0].prediction
    for t in (1, 2, 3):
        now = preds[preds.stage == t].prediction
        learned = now.index.get_level_values("eval_task").isin(tasks[:t])
        assert (now[learned] != base[now.index[learned]]).any(), f"stage {t}"
    sm = routed.summary("score_matrix").pivot_table(index="stage", columns="eval_task",
                                                    values="value")
    assert any((sm.loc[t, tasks] != sm.loc[0, tasks]).any() for t in (1, 2, 3))
    for i, task in enumerate(tasks, 1):  # nothing forgotten: a[t, i] = a[i, i] for t > i
        assert sm.loc[i:, task].nunique() == 1, task


def _ae(center, tau):
    """An autoencoder that reconstructs everything as ``center`` (error = distance^2 / d)."""
    ae = TaskAutoencoder(2, 4)
    with torch.no_grad():
        for p in ae.parameters():
            p.zero_()
        ae.net[2].bias.copy_(torch.logit(torch.tensor(center)))
    ae.threshold.fill_(tau)
    return ae


def test_router_votes_support_and_modes():
    r = Router(support=0.3)
    r.add("a", _ae([0.1, 0.1], 0.05))
    r.add("b", _ae([0.9, 0.9], 0.05))
    near_a, near_b, far = [0.1, 0.12], [0.88, 0.9], [0.1, 0.9]
    z = torch.tensor([near_a, near_a, near_b, far])
    assert r.votes(z) == ["a", "a", "b", None]
    assert r.route_inference(z) == ["a", "b"]  # b has 1/3 of the votes >= 0.3
    assert r.route_inference(torch.tensor([near_a, near_a, near_a, near_b])) == ["a"]  # 1/4
    assert r.route_inference(torch.tensor([far])) == []  # nobody votes: base model
    # training task "c": only earlier tasks vote; "a" joins with support 2/3
    r.add("c", _ae([0.5, 0.5], 0.0))
    assert r.route_training(z, "c") == ["c", "a"]
    assert r.route_training(torch.tensor([far, far, near_b]), "c") == ["c", "b"]
    per = Router(mode="sample")
    per.autoencoders = dict(r.autoencoders)
    assert per.route_inference(z) == [["a"], ["a"], ["b"], []]
    with pytest.raises(ValueError, match="unknown routing mode 'token'"):
        Router(mode="token")


def test_training_support_counts_voters_the_batch_or_nobody():
    """One voter among three samples carries the batch when support is over votes cast
    (released code), not when it is over the batch; ``own`` never adds an earlier task."""
    routers = {k: Router(support=0.3, training=k) for k in ("voters", "batch", "own")}
    for r in routers.values():
        r.add("a", _ae([0.1, 0.1], 0.05))
        r.add("c", _ae([0.5, 0.5], 0.0))
    far, near_a = [0.1, 0.9], [0.1, 0.12]
    one_in_four = torch.tensor([far, far, far, near_a])
    two_in_four = torch.tensor([far, far, near_a, near_a])
    assert routers["voters"].route_training(one_in_four, "c") == ["c", "a"]  # 1/1 of votes
    assert routers["batch"].route_training(one_in_four, "c") == ["c"]  # 1/4 < 0.3
    assert routers["batch"].route_training(two_in_four, "c") == ["c", "a"]  # 2/4
    assert routers["own"].route_training(two_in_four, "c") == ["c"]
    with pytest.raises(ValueError, match="unknown training routing 'all'; allowed: voters"):
        Router(training="all")


def test_autoencoder_threshold_is_the_training_quantile():
    torch.manual_seed(0)
    z = torch.rand(200, 8)
    ae = train_autoencoder(z, hidden=16, max_epochs=20, quantile=0.9)
    errs = ae.errors(z)
    assert 0.85 <= float((errs <= ae.threshold).float().mean()) <= 0.95
    with pytest.raises(ValueError, match="quantile must be in"):
        train_autoencoder(z, quantile=0.0)


def test_seq_ft_keeps_one_adapter_through_the_stream(resume_overrides, shared_run):
    store = shared_run({**resume_overrides, "method": "seq-ft"})
    m = store.manifest()
    assert m["status"] == "complete"
    sizes = {m["stages"][str(t)]["trainable_params"] for t in (1, 2, 3)}
    assert len(sizes) == 1  # the same adapter every stage
    s1, s3 = store.stage_state(1), store.stage_state(3)
    assert s1.keys() == s3.keys()
    assert any(not torch.equal(s1[k], s3[k]) for k in s1)  # and it kept training


def test_routing_features_normalise_each_part_or_the_whole(micro_model_dir):
    model, processor = load_model(ModelConfig(path=str(micro_model_dir)))
    anatomy = anatomy_of(model)
    data = encode(processor, make_samples("ocr", 6, "train", 0))
    d_vision = model.config.vision_config.hidden_size
    parts = representations(model, data, anatomy, batch_size=4)
    whole = representations(model, data, anatomy, batch_size=4, normalise="whole")
    assert parts.shape == whole.shape == (6, d_vision + model.config.text_config.hidden_size)
    torch.testing.assert_close(parts.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(whole.norm(dim=1), torch.ones(6))
    # Per part: each half carries exactly half the squared norm; as a whole it need not.
    torch.testing.assert_close(parts[:, :d_vision].norm(dim=1) ** 2, torch.full((6,), 0.5))
    # Same direction within each part either way.
    for sl in (slice(None, d_vision), slice(d_vision, None)):
        a, b = parts[:, sl], whole[:, sl]
        torch.testing.assert_close(a / a.norm(dim=1, keepdim=True),
                                   b / b.norm(dim=1, keepdim=True))
    with pytest.raises(ValueError, match="'parts' or 'whole', got 'both'"):
        representations(model, data, anatomy, normalise="both")


def test_dmole_ablation_with_llm_experts_only_runs_end_to_end(dmole_overrides, one_thread_run):
    cfg = build_config(overrides={**dmole_overrides, "dmole.towers": "llm",
                                  "stream.tasks": "caption,ocr"})
    store = one_thread_run(cfg)
    assert store.manifest()["status"] == "complete"
    assert set(store.table("allocation").tower) == {"llm"}
    report.write_figures(store)
    assert (store.root / "figures" / "tower_dynamics.png").stat().st_size > 1000


def test_autoencoder_mean_bias_starts_at_the_feature_mean_and_fits_faster():
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.rand(300, 64), dim=1)  # small, like the features
    ae = train_autoencoder(z, hidden=8, max_epochs=1, batch_size=0, lr=1e-9, quantile=0.9)
    # One negligible step: the output is still ~sigmoid(bias) = the mean of the training rows.
    assert torch.allclose(ae(z).mean(0), z.mean(0), atol=0.02)
    fits = {bias: train_autoencoder(z, hidden=8, max_epochs=30, batch_size=0, lr=3e-3,
                                    output_bias=bias, quantile=0.9) for bias in ("mean",
                                                                                 "default")}
    assert fits["mean"].errors(z).mean() < fits["default"].errors(z).mean() / 10
    assert all(f.epochs == 30 for f in fits.values())  # full batch: one step per epoch
    with pytest.raises(ValueError, match="output_bias 'zero' is not one of mean, default"):
        train_autoencoder(z, output_bias="zero")


def test_router_output_bias_is_validated_in_the_config():
    with pytest.raises(ConfigError, match="dmole.router_output_bias 'zero' is not one of"):
        build_config(overrides={"dmole.router_output_bias": "zero"})
