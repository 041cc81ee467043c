"""A language model from another checkpoint behind the tiny vision tower: both towers keep
their weights, the image token is new, and the folder loads and trains like any checkpoint."""

import torch

from dmole_lab.models.pairing import pair_language_model, projector_parameters


def test_pairing_keeps_both_towers_and_loads_as_a_checkpoint(micro_model_dir, micro_processor,
                                                             tmp_path, one_thread):
    from transformers import LlamaConfig, LlamaForCausalLM

    from dmole_lab.config import ModelConfig
    from dmole_lab.data.encode import encode, train_batch
    from dmole_lab.data.tasks import make_samples
    from dmole_lab.models.anatomy import anatomy_of
    from dmole_lab.models.loading import load_model
    from dmole_lab.training.evaluation import generate

    tok = micro_processor.tokenizer
    llm_dir = tmp_path / "llm"
    torch.manual_seed(1)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=48,
                                       intermediate_size=96, num_hidden_layers=3,
                                       num_attention_heads=4, num_key_value_heads=2,
                                       tie_word_embeddings=False))
    llm.save_pretrained(llm_dir)
    tok.save_pretrained(llm_dir)
    model, processor = pair_language_model(micro_model_dir, llm_dir, tmp_path / "paired")
    vision, _ = load_model(ModelConfig(path=str(micro_model_dir), device="cpu"))
    for (n, a), (_, b) in zip(model.model.vision_tower.state_dict().items(),
                              vision.model.vision_tower.state_dict().items()):
        assert torch.equal(a, b.float()), n
    assert torch.equal(model.model.language_model.layers[2].mlp.down_proj.weight,
                       llm.model.layers[2].mlp.down_proj.weight)
    assert model.get_input_embeddings().weight.shape[0] == len(processor.tokenizer)
    assert {p.data_ptr() for p in projector_parameters(model)} == {
        p.data_ptr() for p in model.model.multi_modal_projector.parameters()}

    paired, proc = load_model(ModelConfig(path=str(tmp_path / "paired"), device="cpu"))
    a = anatomy_of(paired)
    assert a.n_layers("llm") == 3 and a.n_layers("vision") == 2
    data = encode(proc, make_samples("caption", 4, "train", 0))
    out = paired(**train_batch(data, [0, 1, 2]))
    assert torch.isfinite(out.loss)
    assert len(generate(paired, proc, data, 4, 3)) == 4
