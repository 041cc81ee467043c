import pytest
import torch

from dmole_lab.models.anatomy import anatomy_of, available_maps, load_map


def test_llava_anatomy_of_micro_model(micro_model_dir):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(micro_model_dir)
    an = anatomy_of(model)
    assert an.n_layers("vision") == 2 and an.n_layers("llm") == 2
    assert len(an.candidates()) == 2 * 4 + 2 * 4
    q = an.by_alias["vision.1.attn.q"]
    assert isinstance(model.get_submodule(q.path), torch.nn.Linear)
    assert an.by_alias["llm.0.mlp.down"].kind == "mlp.down"
    assert {m.tower for m in an.select("all")} == {"vision", "llm"}
    assert len(an.select("all")) == 2 * 6 + 2 * 7
    with pytest.raises(ValueError, match="allowed: all, candidates"):
        an.select("some")


def test_unknown_architecture_names_available_maps():
    with pytest.raises(ValueError, match="available: .*llava"):
        load_map("nonexistent_vlm")
    assert {"llava", "idefics3", "internvl"} <= set(available_maps())


def _tiny_idefics3():
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    cfg = Idefics3Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        text_config={"vocab_size": 128, "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 3, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "model_type": "llama"},
    )
    return Idefics3ForConditionalGeneration(cfg)


def test_smolvlm_idefics3_map_resolves_on_a_tiny_instance():
    an = anatomy_of(_tiny_idefics3())
    assert an.n_layers("vision") == 2 and an.n_layers("llm") == 3
    assert len(an.candidates("llm")) == 3 * 4


def test_record_works_on_another_architecture():
    import torch

    from dmole_lab.probes import record

    model = _tiny_idefics3().eval()
    with record(model, modules=["llm.2.mlp.down", "vision.0.attn.q"],
                layers=[("vision", 1), ("llm", 0)]) as cache, torch.no_grad():
        model.model.vision_model(pixel_values=torch.randn(2, 3, 32, 32))
        model(input_ids=torch.randint(0, 128, (2, 5)))
    assert cache["vision", 1].shape == (2, 4, 32)  # (batch, patches, hidden)
    assert cache["llm", 0].shape == (2, 5, 32)
    assert cache["llm.2.mlp.down"].shape == (2, 5, 32)
    assert cache["vision.0.attn.q"].shape == (2, 4, 32)
