"""The curriculum split and the allocator on hand-made score tables (torch-free)."""

import pandas as pd
import pytest

from dmole_lab.config import ABLATIONS
from dmole_lab.dmole.allocation import (
    allocate,
    allocate_stream,
    allocation_table,
    curriculum_splits,
    expert_count,
    expert_params,
    round_count,
    split_budget,
)


def _scores(vision, llm):
    """Per-module scores; each list holds one score per layer, two modules (q, v) per layer."""
    rows = []
    for tower, per_layer in (("vision", vision), ("llm", llm)):
        for layer, s in enumerate(per_layer):
            for kind, f in (("attn.q", 1.0), ("attn.v", 0.5)):
                rows.append({"tower": tower, "layer": layer, "module": f"{tower}.{layer}.{kind}",
                             "score": s * f})
    return pd.DataFrame(rows)


def test_expert_count_is_a_rounded_fraction_of_the_candidates():
    assert expert_count(48, 0.5) == 24 and expert_count(3, 0.1) == 1
    assert expert_count(5, 0.5) == 3 and expert_count(5, 0.5, "half_even") == 2  # 2.5
    with pytest.raises(ValueError, match="budget fraction must be in \\(0, 1\\], got 1.5"):
        expert_count(48, 1.5)


def test_rounding_follows_the_released_code_at_exact_halves():
    # B = 20, rho_V = 1 / (1 + 7) = 0.125: B rho_V = 2.5 exactly
    released = split_budget(1.0, 7.0, 20, 20, vision_floor=0.0)
    python = split_budget(1.0, 7.0, 20, 20, vision_floor=0.0, rounding="half_even")
    assert released.rho_vision == 0.125 and released.n_experts == python.n_experts == 20
    assert (released.k_vision, released.k_llm) == (3, 17)  # int(2.5 + 0.5)
    assert (python.k_vision, python.k_llm) == (2, 18)  # round(2.5), half to even
    assert [round_count(x) for x in (0.5, 1.5, 2.4, 3.5)] == [1, 2, 2, 4]
    assert [round_count(x, "half_even") for x in (0.5, 1.5, 2.4, 3.5)] == [0, 2, 2, 4]
    with pytest.raises(ValueError, match="unknown rounding 'up'; allowed: half_up, half_even"):
        round_count(1.0, "up")


def test_released_split_uses_the_vision_floor():
    s = split_budget(1.0, 9.0, 24, 24)  # rho_V = 0.1 -> round(2.4) = 2 < floor(0.25 * 24) = 6
    assert (s.n_experts, s.k_vision, s.k_llm) == (24, 6, 18) and s.rho_vision == pytest.approx(0.1)
    s = split_budget(3.0, 1.0, 24, 24)  # rho_V = 0.75 -> 18
    assert (s.k_vision, s.k_llm) == (18, 6)
    s = split_budget(1.0, 9.0, 24, 24, vision_floor=0.0)
    assert s.k_vision == 2


def test_continual_curriculum_weighs_each_tower_against_its_history():
    # the vision score doubled against its history while the LLM's stayed: vision is "harder"
    s = split_budget(2.0, 9.0, 24, 24, curriculum="continual", history=[(1.0, 9.0)])
    assert s.rho_vision == pytest.approx(2 / 3) and s.k_vision == 16
    first = split_budget(2.0, 9.0, 24, 24, curriculum="continual")  # no history: as released
    assert first == split_budget(2.0, 9.0, 24, 24)


def test_ablation_switches():
    assert split_budget(1, 9, 24, 24, towers="llm").k_vision == 0
    assert split_budget(1, 9, 24, 24, towers="vision").k_llm == 0
    assert split_budget(1, 9, 8, 24, curriculum="none").k_vision == 4  # 16 * 8 / 32


def test_each_ablation_setting_does_what_the_paper_names_it():
    scores = _scores(vision=[3, 1, 1, 1], llm=[1, 1, 1, 9])  # rho_V = 1/3
    run = {k: allocate(scores, "t", 0.5, **ab) for k, ab in ABLATIONS.items()}
    full = allocate(scores, "t", 0.5)
    assert run["v1"].modules["vision"] == [] and len(run["v1"].modules["llm"]) == 8  # LLM only
    assert run["v2"].modules["llm"] == [] and len(run["v2"].modules["vision"]) == 8
    assert run["v3"].split.rho_vision == 0.5 != full.split.rho_vision  # by module counts
    # B = 4, k_L = 3: the dynamic allocator takes both modules of the top layer, v4 spreads
    layers = {k: [int(m.split(".")[1]) for m in allocate(scores, "t", 0.25, **ab).modules["llm"]]
              for k, ab in (("full", {}), ("v4", ABLATIONS["v4"]))}
    assert layers["full"].count(3) == 2 and len(set(layers["v4"])) == 3
    with pytest.raises(ValueError, match="unknown curriculum 'magic'; allowed: current"):
        split_budget(1, 1, 2, 2, curriculum="magic")


def test_dynamic_allocator_takes_the_top_modules_per_tower():
    scores = _scores(vision=[1, 4, 2, 3], llm=[8, 1, 1, 9])
    a = allocate(scores, "t", fraction=0.25, vision_floor=0.5)  # B = 4, k_V = 2, k_L = 2
    assert a.modules == {"vision": ["vision.1.attn.q", "vision.3.attn.q"],
                         "llm": ["llm.3.attn.q", "llm.0.attn.q"]}
    assert list(a.table().layer) == [1, 3, 3, 0]


def test_ties_are_broken_by_the_seed_deterministically():
    scores = _scores(vision=[1, 1, 1, 1], llm=[1, 1, 1, 1])
    picks = {s: tuple(allocate(scores, "t", 0.25, seed=s).modules["llm"]) for s in range(6)}
    shuffled = scores.sample(frac=1.0, random_state=3)  # row order must not matter
    assert tuple(allocate(shuffled, "t", 0.25, seed=0).modules["llm"]) == picks[0]
    assert len(set(picks.values())) > 1  # another seed, another tie-break


def test_uniform_allocator_spreads_over_layers():
    scores = _scores(vision=[9, 0, 0, 0], llm=[9, 9, 0, 0])
    a = allocate(scores, "t", fraction=0.5, vision_floor=0.5, allocator="uniform")  # k = 4, 4
    assert sorted(int(m.split(".")[1]) for m in a.modules["llm"]) == [0, 1, 2, 3]
    a = allocate(scores, "t", fraction=0.375, vision_floor=0.0, allocator="uniform")  # B=6
    layers = [int(m.split(".")[1]) for m in a.modules["llm"]]
    assert max(layers.count(i) for i in range(4)) - min(layers.count(i) for i in range(4)) <= 1


def test_allocate_stream_carries_history_and_tabulates():
    rows = []
    for task, (v, lm) in {"a": ([1, 1], [4, 4]), "b": ([4, 4], [4, 4])}.items():
        d = _scores(v, lm).assign(task=task, proxy="grad_norm", batches=2)
        rows.append(d)
    table = pd.concat(rows)
    allocs = allocate_stream(table, ["a", "b"], fraction=0.5, vision_floor=0.0,
                             curriculum="continual")
    assert allocs[1].split.rho_vision == pytest.approx(0.8)  # vision 4x its history, LLM 1x
    t = allocation_table(allocs)
    assert list(t.columns) == ["task", "tower", "layer", "module", "stage"]
    assert set(t.stage) == {1, 2}


def test_expert_params_sums_lora_pairs_per_task():
    shapes = pd.DataFrame({"module": ["vision.0.attn.q", "llm.0.mlp.up", "llm.1.attn.q"],
                           "in_features": [8, 16, 16], "out_features": [8, 64, 16]})
    alloc = pd.DataFrame({"task": ["a", "a", "b"],
                          "module": ["vision.0.attn.q", "llm.0.mlp.up", "llm.1.attn.q"]})
    n = expert_params(alloc, shapes, r=2)
    assert n.to_dict() == {"a": 2 * 16 + 2 * 80, "b": 2 * 32}
    with pytest.raises(ValueError, match="without a shape"):
        expert_params(alloc.assign(module="llm.9.attn.q"), shapes, r=2)
    with pytest.raises(ValueError, match=r"lacks columns \['in_features'"):
        expert_params(alloc, shapes.drop(columns="in_features"), r=2)


def test_curriculum_splits_tabulates_each_mode_per_task():
    table = pd.concat([_scores(vision, llm).assign(task=task, proxy="grad_norm", batches=1)
                       for task, (vision, llm) in {"a": ([4, 4], [1, 1]),
                                                   "b": ([1, 1], [4, 4])}.items()])
    splits = curriculum_splits(table, ["a", "b"], fraction=0.5, vision_floor=0.0)
    assert len(splits) == 3 * 2  # three modes x two tasks
    cur = splits[splits.curriculum == "current"].set_index("task")
    assert cur.loc["a", "k_vision"] == 3 and cur.loc["b", "k_vision"] == 1  # B = 4, rho 0.8 / 0.2
    none = splits[splits.curriculum == "none"]
    assert (none.vision_share == 0.5).all()  # equal candidate counts per tower
    assert (splits.k_vision + splits.k_llm == splits.n_experts).all()
