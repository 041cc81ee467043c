"""Reading sensitivity tables (dmole_lab.analysis.profiles) and the figures drawn from them."""

import numpy as np
import pandas as pd
import pytest

from dmole_lab.analysis.profiles import (
    depth_centre,
    layer_profiles,
    mean_offdiagonal,
    normalise,
    profile_matrix,
    proxy_vs_oracle,
    task_correlations,
    tower_ratio,
    tower_split,
    vision_share,
)
from dmole_lab.viz import plots


def test_layer_profiles_sum_modules_and_pick_batches(sensitivity_table):
    prof = layer_profiles(sensitivity_table(), "grad_norm", batches=1)
    got = prof[(prof.task == "deep") & (prof.tower == "vision")].score.tolist()
    assert got == [1, 2, 4, 8]
    # batches defaults to the largest count, 2: twice the scores of 1 batch
    assert layer_profiles(sensitivity_table(), "grad_norm").score.sum() == 2 * prof.score.sum()
    with pytest.raises(ValueError, match="proxy 'nope' is not in the table; available"):
        layer_profiles(sensitivity_table(), "nope")
    with pytest.raises(ValueError, match="batches 7"):
        layer_profiles(sensitivity_table(), "grad_norm", batches=7)


@pytest.mark.parametrize("how,first_row", [
    ("minmax", [1, 3 / 7, 1 / 7, 0]),
    ("share", [8 / 15, 4 / 15, 2 / 15, 1 / 15]),
    ("rank", [4, 3, 2, 1]),
    ("none", [8, 4, 2, 1]),
])
def test_normalise(how, first_row, sensitivity_table):
    prof = normalise(layer_profiles(sensitivity_table(), "grad_norm", batches=1), how)
    m = profile_matrix(prof, "vision", ["shallow", "deep"])
    assert list(m.index) == ["shallow", "deep"]
    np.testing.assert_allclose(m.loc["shallow"].to_numpy(), first_row)


def test_normalise_rejects_unknown_name(sensitivity_table):
    with pytest.raises(ValueError, match="unknown normalisation 'zscore'; allowed: minmax"):
        normalise(layer_profiles(sensitivity_table()), "zscore")


def test_tower_split_is_the_vision_share(sensitivity_table):
    split = tower_split(sensitivity_table(), "grad_norm", batches=1).set_index("task")
    assert split.loc["shallow", "S_V"] == 15 and split.loc["shallow", "S_L"] == 10
    assert split.loc["shallow", "rho_V"] == pytest.approx(0.6)


def test_task_correlations_see_the_conflict(sensitivity_table):
    prof = layer_profiles(sensitivity_table(), "grad_norm")
    corr = task_correlations(prof, "vision", ["shallow", "deep", "also_shallow"])
    assert corr.loc["shallow", "deep"] == pytest.approx(-1.0)
    assert corr.loc["shallow", "also_shallow"] == pytest.approx(1.0)
    assert mean_offdiagonal(corr) == pytest.approx(-1 / 3)
    centre = depth_centre(prof).set_index(["task", "tower"])["centre"]
    assert centre["shallow", "vision"] < 0.5 < centre["deep", "vision"]


def test_proxy_vs_oracle_per_task_and_pooled(sensitivity_table):
    prof = layer_profiles(sensitivity_table(), "grad_norm")
    oracle = prof.rename(columns={"score": "gain"})  # the oracle agrees with grad_norm
    per_task, pooled = proxy_vs_oracle(sensitivity_table(), oracle)
    assert set(per_task.proxy) == {"grad_norm", "snip"}
    g = per_task[per_task.proxy == "grad_norm"]
    np.testing.assert_allclose(g.spearman, 1.0)
    s = pooled.set_index(["tower", "proxy"])
    assert s.loc[("vision", "snip"), "mean"] == pytest.approx(-1.0)  # snip ranks inversely
    assert s.loc[("llm", "grad_norm"), "count"] == 3


def test_plots_return_figures_with_one_panel_per_tower(sensitivity_table):
    prof = layer_profiles(sensitivity_table(), "grad_norm")
    fig = plots.sensitivity_heatmaps(prof, ["deep", "shallow"], title="t")
    heat = [a for a in fig.axes if a.images]
    assert [a.get_title() for a in heat] == ["vision encoder", "LLM"]
    np.testing.assert_allclose(heat[0].images[0].get_array()[0], [0, 1 / 7, 3 / 7, 1])
    plots.close(fig)
    fig = plots.correlation_heatmap(task_correlations(prof, "llm"))
    assert fig.axes[0].images[0].get_array().shape == (3, 3)
    plots.close(fig)
    _, pooled = proxy_vs_oracle(sensitivity_table(), prof.rename(columns={"score": "gain"}))
    fig = plots.proxy_oracle_bars(pooled)
    assert len(fig.axes[0].patches) == 4  # 2 proxies x 2 towers
    plots.close(fig)


def test_tower_dynamics_lays_stages_end_to_end_and_plots_the_ratio():
    rows = [{"stage": s, "task": f"t{s}", "step": k, "tower": tower, "quantity": "grad_norm",
             "value": (4.0 if tower == "llm" else 1.0) * s}
            for s in (1, 2) for k in range(5) for tower in ("vision", "llm")]
    fig = plots.tower_dynamics(pd.DataFrame(rows), smooth=1)
    top, ratio = fig.axes[:2]
    assert list(top.lines[0].get_xdata()) == list(range(10))
    np.testing.assert_allclose(ratio.lines[0].get_ydata(), 4.0)
    plots.close(fig)
    with pytest.raises(ValueError, match="no 'rel_update' rows; available: \\['grad_norm'\\]"):
        plots.tower_dynamics(pd.DataFrame(rows), "rel_update")


def test_tower_dynamics_of_one_tower_has_no_ratio():
    rows = [{"step": k, "tower": "llm", "quantity": "grad_norm", "value": 1.0} for k in range(4)]
    fig = plots.tower_dynamics(pd.DataFrame(rows), smooth=1)
    top, ratio = fig.axes[:2]
    assert [ln.get_label() for ln in top.lines] == ["llm"] and not ratio.lines
    assert "no ratio" in ratio.texts[0].get_text()
    plots.close(fig)


def test_vision_share_matches_rho_v_and_ignores_negative_gains(sensitivity_table):
    table = sensitivity_table()
    share = vision_share(layer_profiles(table, "grad_norm", batches=1))
    split = tower_split(table, "grad_norm", batches=1).set_index("task")["rho_V"]
    np.testing.assert_allclose(share[split.index], split)
    gains = pd.DataFrame({"task": "t", "tower": ["vision", "vision", "llm"], "layer": [0, 1, 0],
                          "score": [1.0, -5.0, 3.0]})
    assert vision_share(gains)["t"] == pytest.approx(0.25)


def test_tower_ratio_per_task():
    rows = [{"stage": s, "task": f"t{s}", "step": k, "tower": tower, "quantity": "grad_norm",
             "value": float(k + 1) * (s if tower == "llm" else 1.0)}
            for s in (1, 3) for k in range(3) for tower in ("vision", "llm")]
    r = tower_ratio(pd.DataFrame(rows)).set_index("task")
    assert r.loc["t3", "median"] == 3 and r.loc["t1", "max"] == 1 and r.loc["t3", "last"] == 3
    with pytest.raises(ValueError, match="quantity 'rel_update' is not in the table"):
        tower_ratio(pd.DataFrame(rows), "rel_update")


def test_oracle_profiles_average_the_oracle_seeds_per_layer():
    from dmole_lab.analysis.profiles import oracle_profiles

    oracle = pd.DataFrame({"task": ["b", "b", "a", "a"], "seed": [0, 1, 0, 1],
                           "tower": "llm", "layer": 0, "gain": [1.0, 3.0, 0.5, 0.25]})
    prof = oracle_profiles(oracle)
    assert prof.to_dict("records") == [
        {"task": "b", "tower": "llm", "layer": 0, "score": 2.0},  # the table's task order
        {"task": "a", "tower": "llm", "layer": 0, "score": 0.375}]
    assert list(oracle_profiles(oracle, "gain").columns) == ["task", "tower", "layer", "gain"]


def test_one_task_has_no_partner_to_be_alike_with():
    import math

    from dmole_lab.analysis.profiles import mean_offdiagonal, task_correlations

    prof = pd.DataFrame({"task": "a", "tower": "llm", "layer": [0, 1, 2],
                         "score": [3.0, 1.0, 2.0]})
    corr = task_correlations(prof, "llm")
    assert corr.shape == (1, 1) and corr.iloc[0, 0] == 1.0
    assert math.isnan(mean_offdiagonal(corr))


def _noisy_oracle(sensitivity_table, seeds: int, noise: float) -> pd.DataFrame:
    """An oracle whose every seed is grad_norm's profile plus seeded noise of scale ``noise``."""
    prof = layer_profiles(sensitivity_table(), "grad_norm")
    rng = np.random.default_rng(0)
    parts = [prof.rename(columns={"score": "gain"})
             .assign(gain=lambda d: d["gain"] + noise * rng.standard_normal(len(d)), seed=s)
             for s in range(seeds)]
    return pd.concat(parts, ignore_index=True)


def test_ceiling_by_seeds_rises_as_noisy_seeds_are_averaged(sensitivity_table):
    from dmole_lab.analysis.profiles import ceiling_by_seeds

    curve = ceiling_by_seeds(_noisy_oracle(sensitivity_table, 40, noise=12.0))
    vision = curve[curve.tower == "vision"]
    assert list(vision.seeds) == list(range(2, 41, 2))
    # averaging seeds helps the halves, while single seeds stay as noisy as they are
    assert vision.split_half.iloc[-1] > vision.split_half.iloc[0] + 0.2
    assert vision.single.iloc[-1] == pytest.approx(vision.single.iloc[1:].mean(), abs=0.15)
    exact = ceiling_by_seeds(_noisy_oracle(sensitivity_table, 4, noise=0.0))
    np.testing.assert_allclose(exact[["split_half", "single"]], 1.0)


def test_proxy_by_seeds_scores_each_proxy_against_the_first_n_seeds(sensitivity_table):
    from dmole_lab.analysis.profiles import proxy_by_seeds

    oracle = _noisy_oracle(sensitivity_table, 6, noise=0.0)
    oracle.loc[oracle.seed >= 4, "gain"] *= -1  # seeds 4 and 5 reverse the ranking
    rows = proxy_by_seeds(sensitivity_table(), oracle)
    g = rows[rows.proxy == "grad_norm"].set_index(["tower", "seeds"])["spearman"]
    assert g["vision", 2] == pytest.approx(1.0) and g["vision", 4] == pytest.approx(1.0)
    assert g["vision", 6] == pytest.approx(1.0)  # two reversed seeds of six: the mean holds
    oracle.loc[oracle.seed >= 4, "gain"] *= 3  # now they outweigh the other four
    g = proxy_by_seeds(sensitivity_table(), oracle).query("proxy == 'grad_norm'")
    assert g[g.seeds == 6].spearman.to_numpy() == pytest.approx(-1.0)
    assert set(rows.proxy) == {"grad_norm", "snip"}


def test_oracle_agreement_plot_draws_both_curves_the_proxy_and_the_target(sensitivity_table):
    from dmole_lab.analysis.profiles import ceiling_by_seeds, proxy_by_seeds

    oracle = _noisy_oracle(sensitivity_table, 6, noise=1.0)
    fig = plots.oracle_agreement(ceiling_by_seeds(oracle),
                                 proxy_by_seeds(sensitivity_table(), oracle))
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "vision: half against half" in labels and "llm: grad_norm vs oracle" in labels
    assert "target 0.8" in labels
    plots.close(fig)
    with pytest.raises(ValueError, match="'fisher'.*grad_norm"):
        plots.oracle_agreement(ceiling_by_seeds(oracle),
                               proxy_by_seeds(sensitivity_table(), oracle), proxy="fisher")


def test_score_agreement_scores_every_named_layer_score(sensitivity_table):
    from dmole_lab.analysis.profiles import score_agreement

    prof = layer_profiles(sensitivity_table(), "grad_norm")
    scores = pd.concat([prof.assign(score_name="same"),
                        prof.assign(score_name="reversed", score=-prof["score"])])
    per_task, pooled = score_agreement(scores, prof.rename(columns={"score": "gain"}))
    assert len(per_task) == 2 * 3 * 2  # two scores, three tasks, two towers
    p = pooled.set_index(["score_name", "tower"])
    assert p.loc[("same", "vision"), "mean"] == pytest.approx(1.0)
    assert p.loc[("reversed", "llm"), "mean"] == pytest.approx(-1.0)
    assert p.loc[("same", "llm"), "count"] == 3
