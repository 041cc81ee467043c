"""Reading D-MoLE's plasticity switches against the default, seed by seed."""

import numpy as np
import pandas as pd
import pytest

from dmole_lab.analysis.plasticity import SWITCHES, labelled, paired_effects, switch_methods


def test_switch_variants_parse_and_are_distinct():
    from dmole_lab.analysis.compare import parse_variants

    variants = parse_variants(switch_methods())
    assert len({v.name for v in variants}) == len(SWITCHES)
    own = {v.name: v for v in variants}["dmole+dmole.train_routing=own"]
    assert own.method == "dmole" and own.overrides == {"dmole.train_routing": "own"}


def test_labelled_renames_orders_and_drops_the_rest():
    t = pd.DataFrame({"variant": ["dmole-v1", "other", "dmole", "seq-lora"]})
    assert labelled(t)["variant"].tolist() == ["D-MoLE", "v1 (LLM only)", "sequential LoRA"]


def test_paired_effects_difference_by_seed():
    # the switch is 10 ahead at seeds 0 and 1, 4 behind at seed 2; seed 3 has no base run
    per_run = pd.DataFrame({
        "variant": ["D-MoLE"] * 3 + ["x"] * 4, "seed": [0, 1, 2, 0, 1, 2, 3],
        "MFT": [30.0, 50.0, 40.0, 40.0, 60.0, 36.0, 99.0]})
    (row,) = paired_effects(per_run, metrics=("MFT",)).itertuples()
    diff = np.array([10.0, 10.0, -4.0])
    assert row.effect == pytest.approx(diff.mean())
    assert row.se == pytest.approx(diff.std(ddof=1) / np.sqrt(3))
    assert (row.seeds, row.ahead) == (3, 2)
