"""Every supported architecture, built small from its own ``transformers`` config classes.

``build_architecture(name, out_dir)`` makes a randomly initialised model of architecture
``name`` (two layers per tower by default) with a working processor around a locally trained
tokenizer, and saves both in Hugging Face format: the folder then loads through ``model.path``
exactly like a researcher's checkpoint. The tests run every method, probe and export on these;
they are also the quickest way to see what each architecture's processor makes of an image.

Processors are built from their PIL image processor and the tokenizer, with no video processor
(:mod:`dmole_lab.models.compat`), so none of this needs torchvision. What each architecture
needs to be consistent (docs/models.md): the image processor's sizes match the vision config
(patch, merge, pinpoints, tile size), Qwen2-VL's ``mrope_section`` sums to head_dim / 2,
InternVL's and Idefics3's image tokens per tile match the pixel shuffle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .compat import processors_without_video
from .tiny import CHAT_TEMPLATE, train_tokenizer

#: The architectures :func:`build_architecture` makes (model_type names).
ARCHITECTURES = ("llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "internvl",
                 "idefics3", "smolvlm")
BASE_SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]


@dataclass(frozen=True)
class ArchSize:
    """Widths and depths of a built architecture (both towers; heads divide the widths)."""

    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    image_size: int = 32  # one tile / crop, in pixels
    patch_size: int = 8
    vocab_size: int = 384


def _tokenizer(special: list[str], named: dict[str, str], size: ArchSize):
    from transformers import PreTrainedTokenizerFast

    tokens = BASE_SPECIAL + [t for t in special if t not in BASE_SPECIAL]
    return PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(size.vocab_size, tokens, ["line one\nline two"]),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens=named, padding_side="left")


def _template(image: str, turn_end: str = "") -> str:
    """The tiny LLaVA's chat template with another image placeholder (and turn end)."""
    return CHAT_TEMPLATE.replace(" <image>", f" {image}").replace(
        "{% endfor %}{% if add_generation_prompt %}", f"{turn_end}{{% endfor %}}"
                                                      "{% if add_generation_prompt %}")


def _text(kind: str, tok, size: ArchSize, **extra):
    """A Llama or Qwen2 language-model config sized by ``size`` for tokenizer ``tok``."""
    from transformers import LlamaConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[kind]
    return cls(vocab_size=len(tok), hidden_size=size.text_hidden,
               intermediate_size=2 * size.text_hidden, num_hidden_layers=size.text_layers,
               num_attention_heads=size.text_heads, num_key_value_heads=size.text_kv_heads,
               max_position_embeddings=2048, tie_word_embeddings=False,
               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id, **extra)


def _vision_kw(size: ArchSize) -> dict:
    return dict(hidden_size=size.vision_hidden, intermediate_size=2 * size.vision_hidden,
                num_hidden_layers=size.vision_layers, num_attention_heads=size.vision_heads)


def _llava(size: ArchSize):
    from transformers import (
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    s, p = size.image_size, size.patch_size
    tok = _tokenizer(["<image>"], {"image_token": "<image>"}, size)
    proc = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"height": s, "width": s},
                                              do_center_crop=False),
        tokenizer=tok, patch_size=p, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=_template("<image>"))
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=s, patch_size=p, **_vision_kw(size)),
        text_config=_text("llama", tok, size), image_token_index=tok.image_token_id,
        vision_feature_layer=-1, vision_feature_select_strategy="default",
        image_seq_length=(s // p) ** 2, tie_word_embeddings=False)
    return LlavaForConditionalGeneration(config), proc


def _llava_next(size: ArchSize):
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    s, p = size.image_size, size.patch_size
    pinpoints = [[s, 2 * s], [2 * s, s], [2 * s, 2 * s]]  # multiples of the tile, both sides
    tok = _tokenizer(["<image>"], {"image_token": "<image>"}, size)
    proc = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil(
            size={"shortest_edge": s}, crop_size={"height": s, "width": s},
            image_grid_pinpoints=pinpoints),
        tokenizer=tok, patch_size=p, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=_template("<image>"))
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(image_size=s, patch_size=p, **_vision_kw(size)),
        text_config=_text("llama", tok, size), image_token_index=tok.image_token_id,
        vision_feature_layer=-1, vision_feature_select_strategy="default",
        image_grid_pinpoints=pinpoints, image_seq_length=(s // p) ** 2,
        tie_word_embeddings=False)
    return LlavaNextForConditionalGeneration(config), proc


def _llava_onevision(size: ArchSize):
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
        SiglipVisionConfig,
    )

    s, p = size.image_size, size.patch_size
    pinpoints = [[s, s], [s, 2 * s], [2 * s, s], [2 * s, 2 * s]]
    tok = _tokenizer(["<image>", "<video>"], {"image_token": "<image>", "video_token": "<video>"},
                     size)
    proc = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessorPil(size={"height": s, "width": s},
                                                        image_grid_pinpoints=pinpoints),
        tokenizer=tok, video_processor=None, num_image_tokens=(s // p) ** 2,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
        chat_template=_template("<image>"))
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(image_size=s, patch_size=p, vision_use_head=False,
                                         **_vision_kw(size)),
        text_config=_text("qwen2", tok, size), image_token_index=tok.image_token_id,
        video_token_index=tok.video_token_id, vision_feature_layer=-1,
        vision_feature_select_strategy="full", image_grid_pinpoints=pinpoints,
        vision_aspect_ratio="anyres_max_9", tie_word_embeddings=False)
    return LlavaOnevisionForConditionalGeneration(config), proc


_QWEN_TOKENS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}


def _qwen(size: ArchSize, v2_5: bool):
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
        Qwen2VLProcessor,
    )

    p, merge = size.patch_size, 2
    tok = _tokenizer(list(_QWEN_TOKENS.values()), _QWEN_TOKENS, size)
    cls = Qwen2_5_VLProcessor if v2_5 else Qwen2VLProcessor
    proc = cls(image_processor=Qwen2VLImageProcessorPil(
                   patch_size=p, merge_size=merge, temporal_patch_size=2,
                   min_pixels=(p * merge) ** 2, max_pixels=(2 * size.image_size) ** 2),
               tokenizer=tok, video_processor=None,
               chat_template=_template("<|vision_start|><|image_pad|><|vision_end|>"))
    head_dim = size.text_hidden // size.text_heads
    # M-RoPE splits each head's rotary half into (time, height, width) sections
    third = head_dim // 2 // 3
    mrope = [head_dim // 2 - 2 * third, third, third]
    text = _text("qwen2", tok, size).to_dict()
    text.update(rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": mrope})
    ids = dict(image_token_id=tok.image_token_id, video_token_id=tok.video_token_id,
               vision_start_token_id=tok.vision_start_token_id,
               vision_end_token_id=tok.vision_end_token_id)
    common = dict(depth=size.vision_layers, num_heads=size.vision_heads, patch_size=p,
                  spatial_merge_size=merge, temporal_patch_size=2)
    if v2_5:  # here hidden_size is the ViT's width and out_hidden_size the LLM's
        vision = dict(hidden_size=size.vision_hidden, intermediate_size=2 * size.vision_hidden,
                      out_hidden_size=size.text_hidden, window_size=p * merge * 2,
                      fullatt_block_indexes=[size.vision_layers - 1], **common)
        config = Qwen2_5_VLConfig(vision_config=vision, text_config=text,
                                  tie_word_embeddings=False, **ids)
        return Qwen2_5_VLForConditionalGeneration(config), proc
    # in Qwen2-VL embed_dim is the ViT's width and hidden_size the merger's output (the LLM's)
    vision = dict(embed_dim=size.vision_hidden, hidden_size=size.text_hidden, mlp_ratio=2,
                  **common)
    config = Qwen2VLConfig(vision_config=vision, text_config=text, tie_word_embeddings=False,
                           **ids)
    return Qwen2VLForConditionalGeneration(config), proc


def _internvl(size: ArchSize):
    from transformers import (
        GotOcr2ImageProcessorPil,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVisionConfig,
    )

    s, p, ratio = size.image_size, size.patch_size, 0.5
    per_tile = int((s // p) ** 2 * ratio ** 2)  # tokens per tile after the pixel shuffle
    named = {"start_image_token": "<img>", "end_image_token": "</img>",
             "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}
    tok = _tokenizer(list(named.values()), named, size)
    proc = InternVLProcessor(
        image_processor=GotOcr2ImageProcessorPil(size={"height": s, "width": s},
                                                 crop_to_patches=True, min_patches=1,
                                                 max_patches=4),
        tokenizer=tok, video_processor=None, image_seq_length=per_tile,
        chat_template=_template("<IMG_CONTEXT>"))
    config = InternVLConfig(
        vision_config=InternVLVisionConfig(image_size=[s, s], patch_size=[p, p],
                                           **_vision_kw(size)),
        text_config=_text("qwen2", tok, size), image_token_id=tok.context_image_token_id,
        image_seq_length=per_tile, downsample_ratio=ratio, vision_feature_layer=-1,
        vision_feature_select_strategy="default", tie_word_embeddings=False)
    return InternVLForConditionalGeneration(config), proc


def _idefics(size: ArchSize, smol: bool):
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        Idefics3VisionConfig,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessorPil,
        SmolVLMProcessor,
        SmolVLMVisionConfig,
    )

    s, p, scale = size.image_size, size.patch_size, 2
    named = {"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
             "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}
    grid = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok = _tokenizer(list(named.values()) + grid, named, size)
    images = dict(size={"longest_edge": 2 * s}, max_image_size={"longest_edge": s},
                  do_image_splitting=True)
    template = _template("<image>", "<end_of_utterance>")
    per_tile = (s // p) ** 2 // scale ** 2
    if smol:
        proc = SmolVLMProcessor(image_processor=SmolVLMImageProcessorPil(**images),
                                tokenizer=tok, video_processor=None, image_seq_len=per_tile,
                                chat_template=template)
    else:
        proc = Idefics3Processor(image_processor=Idefics3ImageProcessorPil(**images),
                                 tokenizer=tok, image_seq_len=per_tile, chat_template=template)
    # the processor may add tokens to the tokenizer: the model is sized after it
    vision_cls, config_cls, model_cls = (
        (SmolVLMVisionConfig, SmolVLMConfig, SmolVLMForConditionalGeneration) if smol else
        (Idefics3VisionConfig, Idefics3Config, Idefics3ForConditionalGeneration))
    config = config_cls(
        vision_config=vision_cls(image_size=s, patch_size=p, **_vision_kw(size)),
        text_config=_text("llama", tok, size), image_token_id=tok.image_token_id,
        scale_factor=scale, tie_word_embeddings=False)
    return model_cls(config), proc


_BUILDERS = {
    "llava": _llava,
    "llava_next": _llava_next,
    "llava_onevision": _llava_onevision,
    "qwen2_vl": lambda size: _qwen(size, v2_5=False),
    "qwen2_5_vl": lambda size: _qwen(size, v2_5=True),
    "internvl": _internvl,
    "idefics3": lambda size: _idefics(size, smol=False),
    "smolvlm": lambda size: _idefics(size, smol=True),
}


def build_architecture(name: str, out_dir: str | Path | None = None,
                       size: ArchSize = ArchSize(), seed: int = 0):
    """(model, processor) of architecture ``name`` at ``size``, randomly initialised (seeded);
    saved to ``out_dir`` (a checkpoint folder ``model.path`` can name) when given.

    Raises ValueError naming the architectures for an unknown ``name``."""
    import torch

    if name not in _BUILDERS:
        raise ValueError(f"unknown architecture {name!r}; allowed: {', '.join(ARCHITECTURES)}")
    processors_without_video()
    torch.manual_seed(seed)
    model, proc = _BUILDERS[name](size)
    return finish_checkpoint(model, proc, out_dir)


def finish_checkpoint(model, processor, out_dir: str | Path | None = None):
    """(model, processor) with generation's pad, EOS and BOS ids taken from the processor's
    tokenizer; both saved to ``out_dir`` (a checkpoint folder) when given."""
    tok = processor.tokenizer
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, key, getattr(tok, key))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        processor.save_pretrained(out)
        model.save_pretrained(out)
    return model, processor


__all__ = ["ARCHITECTURES", "ArchSize", "build_architecture", "finish_checkpoint"]
