"""Router confusion, accuracy and expert usage read from hand-made routing tables."""

import pandas as pd
import pytest

from dmole_lab.analysis import usage


def _routing():
    # stage 1: only task a learned; stage 2: a and b learned.
    rows = [
        (1, "a", "a", "a", 4), (1, "b", "a", "a", 3), (1, "b", "", "", 1),
        (2, "a", "a", "a", 3), (2, "a", "b", "b+a", 1),
        (2, "b", "b", "b", 2), (2, "b", "", "", 2),
    ]
    return pd.DataFrame(rows, columns=["stage", "eval_task", "routed", "active", "count"])


def test_confusion_counts_and_shares_with_a_base_column():
    m = usage.confusion(_routing())  # default: the last stage
    assert m.loc["a", "a"] == 3 and m.loc["a", "b"] == 1 and m.loc["b", "(base)"] == 2
    shares = usage.confusion(_routing(), stage=1, normalise=True)
    assert shares.loc["b", "a"] == pytest.approx(0.75)
    assert shares.sum(axis=1).tolist() == pytest.approx([1.0, 1.0])
    ordered = usage.confusion(_routing(), tasks=["b", "a"])
    assert list(ordered.index) == ["b", "a"] and list(ordered.columns) == ["b", "a", "(base)"]


def test_router_accuracy_counts_only_learned_tasks():
    r = _routing()
    assert usage.router_accuracy(r, ["a"], stage=1) == pytest.approx(1.0)  # b not learned yet
    assert usage.router_accuracy(r, ["a", "b"], stage=2) == pytest.approx(5 / 8)
    by_stage = usage.accuracy_by_stage(r, ["a", "b"])
    assert by_stage.router_accuracy.tolist() == pytest.approx([1.0, 5 / 8])
    with pytest.raises(ValueError, match="no stage 7"):
        usage.router_accuracy(r, ["a"], stage=7)
    with pytest.raises(ValueError, match="no evaluation samples"):
        usage.router_accuracy(r, ["zzz"], stage=2)


def test_task_activity_and_expert_usage_split_joined_active_sets():
    act = usage.task_activity(_routing(), stage=2)
    assert act.loc["a", "a"] == pytest.approx(1.0)  # a's experts on for all 4 samples of a
    assert act.loc["a", "b"] == pytest.approx(0.25)
    assert act.loc["b", "a"] == pytest.approx(0.0)
    alloc = pd.DataFrame({"task": ["a", "a", "b"], "tower": ["vision", "llm", "llm"],
                          "layer": [0, 1, 1], "module": ["q", "v", "v"]})
    use = usage.expert_usage(_routing(), alloc, stage=2)
    assert list(use.columns) == ["task", "tower", "layer", "module", "usage"]
    assert use.set_index("task").usage.to_dict() == pytest.approx({"a": 4 / 8, "b": 3 / 8})


def test_allocation_and_confusion_figures_show_counts_per_layer():
    from dmole_lab.viz import plots

    alloc = pd.DataFrame({"task": ["a", "a", "a", "b"], "tower": ["vision", "vision", "llm", "llm"],
                          "layer": [0, 0, 2, 2], "module": ["q", "k", "v", "o"]})
    fig = plots.allocation_heatmaps(alloc, ["a", "b"], {"vision": 2, "llm": 3})
    vision, llm = fig.axes[:2]
    assert vision.images[0].get_array().tolist() == [[2, 0], [0, 0]]  # a has q and k at layer 0
    assert llm.images[0].get_array().tolist() == [[0, 0, 1], [0, 0, 1]]
    assert vision.get_title() == "vision encoder: 2 experts"
    plots.close(fig)
    fig = plots.routing_confusion(usage.confusion(_routing(), normalise=True, tasks=["a", "b"]))
    assert fig.axes[0].images[0].get_array()[1, 2] == pytest.approx(0.5)  # b -> (base)
    plots.close(fig)


def test_curriculum_and_ratio_bars_draw_one_bar_per_task_and_series():
    from dmole_lab.viz import plots

    splits = pd.DataFrame({"task": ["a", "b"] * 2, "curriculum": ["current"] * 2 + ["none"] * 2,
                           "vision_share": [0.25, 0.5, 0.5, 0.5], "rho_vision": [0.1, 0.6, .5, .5]})
    fig = plots.curriculum_split_bars(splits)
    assert [p.get_height() for p in fig.axes[0].patches] == [0.25, 0.5, 0.5, 0.5]
    plots.close(fig)
    ratios = {"dmole": pd.DataFrame({"task": ["a", "b"], "median": [2.0, 3.0]}),
              "seq-lora": pd.DataFrame({"task": ["a", "b"], "median": [20.0, 30.0]})}
    fig = plots.tower_ratio_bars(ratios)
    assert [p.get_height() for p in fig.axes[0].patches] == [2.0, 3.0, 20.0, 30.0]
    plots.close(fig)
