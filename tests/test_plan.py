"""dmole-lab plan: parameter counts match the built models, trainable parameters match what the
methods train, and the activation estimate (two real-width layers, scaled to the depth) matches
what autograd saves in the full model."""

import copy

import pytest
import torch

from dmole_lab.config import build_config
from dmole_lab.engine.plan import (
    activation_table,
    dmole_range,
    method_table,
    plan,
    tower_table,
    with_adapters,
)
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.shapes import (
    cut_down,
    dummy_batch,
    load_shape,
    shape_config,
    shape_names,
    skeleton,
)
from dmole_lab.probes.memory import saved_bytes


def _small(name: str) -> dict:
    """A shipped shape at a width that runs in a second (same architecture and layout)."""
    shape = copy.deepcopy(load_shape(name))
    v, t = shape["vision_config"], shape["text_config"]
    if "depth" in v:  # Qwen2-VL: ViT width embed_dim, merger output = LLM width
        v.update(embed_dim=64, hidden_size=128, num_heads=4, depth=4)
    else:
        v.update(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                 num_hidden_layers=4)
    t.update(hidden_size=128, intermediate_size=256, num_attention_heads=4,
             num_key_value_heads=2, num_hidden_layers=6, vocab_size=min(t["vocab_size"], 160000))
    if "rope_parameters" in t:
        t["rope_parameters"] = {**t["rope_parameters"], "mrope_section": [4, 6, 6]}
    shape["text_tokens"] = 16
    return shape


def test_shipped_shapes_have_the_published_sizes():
    sizes = {}
    for name in shape_names():
        model = skeleton(shape_config(load_shape(name)))
        sizes[name] = sum(p.numel() for p in model.parameters()) / 1e9
    assert sizes == pytest.approx({"internvl2-2b": 2.21, "llava-1.5-7b": 7.06,
                                   "qwen2-vl-2b": 2.21}, abs=0.01)


@pytest.mark.parametrize("name", ["internvl2-2b", "qwen2-vl-2b", "llava-1.5-7b"])
def test_activation_estimate_matches_the_full_depth(name, one_thread):
    """Two layers per tower scaled to 4 + 6 layers against the 4 + 6-layer model itself."""
    shape = _small(name)
    cfg = build_config(None, {"model.shape": name, "model.path": "/nowhere",
                              "train.batch_size": 3})
    config = shape_config(shape)
    est = activation_table(cfg, shape, config, progress=False, families=("seq-lora", "dmole"))
    full = cut_down(shape, (4, 6))
    anatomy = anatomy_of(full)
    for family in ("seq-lora", "dmole"):
        model, _ = with_adapters(family, cfg, copy.deepcopy(full), anatomy)
        measured = saved_bytes(model, anatomy, dummy_batch(shape, model.config))["total"]
        estimated = est.loc[est.method == family, "activation_bytes_per_sample"].item()
        assert estimated == pytest.approx(measured, rel=0.02), family


def test_plan_counts_what_the_methods_train():
    shape = _small("internvl2-2b")
    cfg = build_config(None, {"model.shape": "internvl2-2b", "model.path": "/nowhere",
                              "lora.r": 4, "dmole.r": 8})
    base = skeleton(shape_config(shape))
    anatomy = anatomy_of(base)
    towers = tower_table(base, anatomy).set_index("tower")
    assert towers["parameters"].sum() == sum(p.numel() for p in base.parameters())
    assert towers.loc["vision", "layers"] == 4 and towers.loc["llm", "layers"] == 6
    assert towers.loc["llm", "candidate_modules"] == 6 * 4
    table = method_table(cfg, base, anatomy).set_index("method")
    lora = sum(4 * (m.in_features + m.out_features) for m in anatomy.modules)
    assert table.loc["seq-lora", "trainable"] == lora  # rank 4 on every linear module
    lo, hi = dmole_range(cfg, anatomy)
    assert table.loc["dmole", "trainable_min"] == lo < hi == table.loc["dmole", "trainable"]
    cands = sorted(8 * (m.in_features + m.out_features) for m in anatomy.candidates())
    half = len(cands) // 2
    assert sum(cands[:half]) <= lo and hi <= sum(cands[-half:])
    assert (table["trainable"] > 0).all()


def test_plan_cli_prints_the_tables(capsys, monkeypatch):
    from dmole_lab.cli import main

    assert main(["plan", "--preset", "qwen2-vl-2b", "--no-activations", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "qwen2_vl (qwen2-vl-2b), bfloat16, batch 8" in out
    for word in ("vision", "projector", "llm", "dmole", "branchlora", "trainable / task"):
        assert word in out
    assert main(["plan", "--model.path=/nowhere", "--no-activations"]) == 2
    assert "model.shape is not set" in capsys.readouterr().err


def test_plan_reads_a_checkpoint_folder(micro_model_dir):
    cfg = build_config(None, {"model.path": str(micro_model_dir)})
    p = plan(cfg, activations=False, progress=False)
    assert p.model_type == "llava" and p.source == str(micro_model_dir)
    assert p.memory["activations_gib"].isna().all()
    with torch.no_grad():
        assert (p.memory["weights_gib"] > 0).all()
