"""The embedded default: a tiny LLaVA (CLIP-style vision tower + Llama-style LM) built from
standard ``transformers`` classes, with a tokenizer trained locally and a ``LlavaProcessor``.

Everything is saved in Hugging Face format so the rest of the toolkit loads it through
``from_pretrained`` exactly like a real checkpoint from a local folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from dmole_lab.data.world import IMAGE_SIZE

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
# One user turn with the image first; the answer follows "assistant:" and ends with </s>.
CHAT_TEMPLATE = (
    "<s>{% for m in messages %}{{ m['role'] }}:"
    "{% if m['content'] is string %} {{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %} <image>"
    "{% else %} {{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %} assistant:{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Shape of the tiny model (>= 6 layers per tower so layer sensitivity has room)."""

    vision_hidden: int = 96
    vision_layers: int = 6
    vision_heads: int = 4
    patch_size: int = 16  # one patch per grid cell: 9 image tokens
    text_hidden: int = 128
    text_layers: int = 6
    text_heads: int = 4
    vocab_size: int = 384


def tokenizer_corpus() -> list[str]:
    """A fixed corpus covering the world's vocabulary and every task's phrasing.

    Built from the world's constants, not from sampled tasks, so that changing a task's
    sampling never changes the tokenizer (and with it the pre-trained checkpoint).
    """
    from dmole_lab.data.world import COLOURS, SHAPES, SIZES

    texts = ["user: assistant:", "0 1 2 3 4 5 6 7 8 9 [ ] , . ? : a b c d"]
    for colour in COLOURS:
        for shape in SHAPES:
            for size in SIZES:
                texts.append(f"describe the image. a {size} {colour} {shape} and a {shape}.")
            texts += [
                f"what is in the image? {colour} {shape}, number 7",
                f"is there a {colour} {shape} in the image? yes no",
                f"where is the {colour} {shape}? answer with its box. [12, 3, 25, 16]",
                f"describe the image and its text. a {colour} {shape} next to the number 4.",
                f"describe how the objects are placed. the {colour} {shape} is left of right of "
                f"above below the {shape}.",
                f"what colour is the {shape}? {colour}",
                f"which shape is {colour}? a. circle b. square c. triangle d. cross. "
                "answer with the letter.",
            ]
    texts += ["how many shapes are there? a. 1 b. 2 c. 3 d. 4. answer with the letter. c",
              "what number is written in the image? 9",
              "what is the number in the image plus 3? 12"]
    return texts * 4


def train_tokenizer(vocab_size: int, special: list[str] | None = None,
                    extra_texts: list[str] | None = None):
    """A lower-casing BPE tokenizer (digits split) trained on :func:`tokenizer_corpus`.

    ``special``: the atomic tokens (default :data:`SPECIAL_TOKENS`: the tiny LLaVA's; other
    architectures add their image and boundary tokens); ``extra_texts`` join the corpus (e.g.
    a line break, which Idefics3's prompts contain)."""
    special = SPECIAL_TOKENS if special is None else special
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(prepend_scheme="first"), pre_tokenizers.Digits(True)]
    )
    tok.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  show_progress=False)
    tok.train_from_iterator(tokenizer_corpus() + list(extra_texts or []), trainer)
    return tok


def build_processor(spec: TinySpec = TinySpec()):
    """LlavaProcessor = locally trained tokenizer + a CLIP image processor for 48x48 images."""
    from transformers import LlavaProcessor, PreTrainedTokenizerFast
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    fast = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(spec.vocab_size),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"}, padding_side="left",
    )
    image_processor = CLIPImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_resize=True, do_center_crop=False,
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=fast, patch_size=spec.patch_size,
        vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )


def build_model(processor, spec: TinySpec = TinySpec()):
    """A freshly initialised tiny LlavaForConditionalGeneration matching ``processor``."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    tok = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden, intermediate_size=4 * spec.vision_hidden,
        num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
        image_size=IMAGE_SIZE, patch_size=spec.patch_size, projection_dim=spec.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tok), hidden_size=spec.text_hidden, intermediate_size=3 * spec.text_hidden,
        num_hidden_layers=spec.text_layers, num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_heads, max_position_embeddings=256,
        tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    n_patches = (IMAGE_SIZE // spec.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        # The last vision layer feeds the projector, so every vision layer can matter.
        vision_feature_layer=-1, vision_feature_select_strategy="default",
        image_seq_length=n_patches, projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model
