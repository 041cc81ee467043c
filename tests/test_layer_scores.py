"""Layer scores beside the proxy: linear CKA, the factors of a gradient norm, cross-task
normalisations and their agreement with an oracle (docs/method.md section 5)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from dmole_lab.analysis.profiles import (
    across_tasks,
    agreement_with_oracle,
    factor_scores,
)
from dmole_lab.config import ModelConfig, TrainConfig
from dmole_lab.data.encode import encode, train_batch
from dmole_lab.data.tasks import make_samples
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.loading import load_model
from dmole_lab.probes import record, sensitivity
from dmole_lab.probes.cka import (
    cka_change,
    cka_transform,
    layer_representations,
    linear_cka,
    tuned_representations,
)
from dmole_lab.probes.factors import FACTORS, layer_factors, layer_zero_excess


@pytest.fixture(scope="module")
def micro(micro_model_dir):
    model, processor = load_model(ModelConfig(path=str(micro_model_dir)))
    data = encode(processor, make_samples("ocr", 12, "train", 0))
    return model, data, anatomy_of(model)


def test_linear_cka_is_one_under_rotation_and_scale_and_low_for_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    q = torch.linalg.qr(torch.randn(6, 6, generator=g))[0]
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, torch.randn(200, 6, generator=g)) < 0.15
    # one informative column of four: in between
    y = torch.cat([x[:, :1], torch.randn(200, 3, generator=g)], 1)
    assert 0.1 < linear_cka(x, y) < 0.9
    with pytest.raises(ValueError, match="same n >= 2 samples"):
        linear_cka(x, x[:10])


def test_layer_representations_pool_each_layer_and_cka_scores_read_them(micro):
    model, data, anatomy = micro
    reps = layer_representations(model, data, batch_size=5, inputs=True)
    layers = [(t, i) for t in ("vision", "llm") for i in range(anatomy.n_layers(t))]
    assert set(reps) == {(t, i, k) for t, i in layers for k in ("in", "out")}
    assert all(v.shape[0] == len(data) for v in reps.values())
    # a layer's input is the previous layer's output
    assert torch.allclose(reps["llm", 1, "in"], reps["llm", 0, "out"], atol=1e-5)
    t = cka_transform(reps)
    assert len(t) == len(layers) and t["score"].between(-1e-9, 1).all()
    same = cka_change(reps, reps)
    assert np.allclose(same["score"], 0.0, atol=1e-9)


def test_tuned_representations_move_and_leave_the_model_as_it_was(micro):
    model, data, _ = micro
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = layer_representations(model, data)
    cfg = TrainConfig(lr=5e-2, batch_size=4, max_steps=3, epochs=10**6)
    tuned = tuned_representations(model, data, data, cfg)
    change = cka_change(base, tuned)
    assert (change["score"] > 1e-6).any()
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in model.parameters())


def test_factors_grad_norm_is_the_proxy_and_factors_are_what_they_say(micro):
    model, data, anatomy = micro
    f = layer_factors(model, data, batches=2, batch_size=4, anatomy=anatomy)
    proxy = sensitivity(model, data, ("grad_norm",), batches=2, batch_size=4, anatomy=anatomy)
    assert np.allclose(f["grad_norm"], proxy["score"], rtol=1e-6)
    assert set(FACTORS) <= set(f.columns) and (f[list(FACTORS)] > 0).all().all()
    m = anatomy.candidates()[0]
    mod = model.get_submodule(m.path)
    expected = float(mod.weight.norm()) + (float(mod.bias.norm()) if mod.bias is not None else 0)
    assert f[f.module == m.alias]["weight_norm"].iloc[0] == pytest.approx(expected, rel=1e-6)
    # the hidden state entering llm layer 1 is llm layer 0's output, over the same two batches
    order = np.random.default_rng(0).permutation(len(data))
    sq, n = 0.0, 0
    for b in range(2):
        with torch.no_grad(), record(model, layers=[("llm", 0)]) as cache:
            model(**train_batch(data, order[4 * b: 4 * b + 4]))
        sq, n = sq + float(cache["llm", 0].pow(2).sum()), n + cache["llm", 0].numel()
    entering = f[(f.tower == "llm") & (f.layer == 1)]["resid_rms"].iloc[0]
    assert entering == pytest.approx(math.sqrt(sq / n), rel=1e-5)
    assert not any(p.requires_grad for p in model.parameters())


def test_layer_zero_excess_and_factor_scores_on_a_made_table():
    rows = [{"task": "a", "tower": "vision", "layer": i, "module": f"m{i}",
             **{k: 1.0 for k in FACTORS}} for i in range(3)]
    f = pd.DataFrame(rows)
    f.loc[0, "grad_norm"], f.loc[0, "resid_rms"] = 4.0, 0.25
    ex = layer_zero_excess(f).set_index("factor")["ratio"]
    assert ex["grad_norm"] == 4.0 and ex["resid_rms"] == 0.25 and ex["weight_norm"] == 1.0
    s = factor_scores(f).pivot(index="layer", columns="score_name", values="score")
    assert list(s["grad_norm"]) == [4.0, 1.0, 1.0]
    assert list(s["grad_norm*resid_rms"]) == [1.0, 1.0, 1.0]  # the peak was 1/sigma


def test_across_tasks_takes_out_what_every_task_shares():
    prof = pd.DataFrame({"task": ["a", "a", "b", "b"], "tower": "llm", "layer": [0, 1, 0, 1],
                         "score": [10.0, 1.0, 30.0, 1.0]})
    mean = across_tasks(prof, "layer_mean")["score"].tolist()
    assert mean == [0.5, 1.0, 1.5, 1.0]
    z = across_tasks(prof, "layer_z")["score"].tolist()
    assert z[0] < 0 < z[2] and z[1] == z[3] == 0.0
    with pytest.raises(ValueError, match="unknown normalisation 'median'; allowed: layer_mean"):
        across_tasks(prof, "median")


def test_agreement_with_oracle_is_plus_one_and_minus_one_where_it_should_be():
    prof = pd.DataFrame({"task": "a", "tower": "vision", "layer": range(4),
                         "score": [1.0, 2.0, 3.0, 4.0]})
    up = prof.rename(columns={"score": "gain"})
    down = up.assign(gain=-up["gain"])
    assert agreement_with_oracle(prof, up)["spearman"].iloc[0] == pytest.approx(1.0)
    assert agreement_with_oracle(prof, down)["spearman"].iloc[0] == pytest.approx(-1.0)
