"""Real-size architectures without their weights: the shapes of the presets' checkpoints.

``shapes/<name>.json`` holds the config of a published checkpoint (InternVL2-2B, Qwen2-VL-2B,
LLaVA-1.5-7B) in transformers' native layout, the tokens one sample carries (``image_tokens``,
``text_tokens``) and the tensors of one image (``batch``). :func:`skeleton` builds such a model
on the meta device (parameter counts, the anatomy, trainable parameters per method: no memory,
no download); :func:`cut_down` builds it at real width with fewer layers and random weights, to
measure what one layer stores for the backward pass (:mod:`dmole_lab.engine.plan`).
"""

from __future__ import annotations

import json

import torch

from dmole_lab.config import SHAPES_DIR, ModelConfig, resolve_path

from .loading import DTYPES, ModelLoadError

#: Keys of a shape file that are not config fields.
_META_KEYS = ("description", "model_type", "image_tokens", "text_tokens", "batch")


def shape_names() -> list[str]:
    """The shipped shapes (``model.shape`` values)."""
    return sorted(p.stem for p in SHAPES_DIR.glob("*.json"))


def load_shape(name: str) -> dict:
    """The shape file ``name``; ValueError naming the shipped ones if there is none."""
    path = SHAPES_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown model.shape {name!r}; shipped: {', '.join(shape_names())}")
    return json.loads(path.read_text())


def shape_config(shape: dict, layers: tuple[int, int] | None = None):
    """The transformers config of a shape; ``layers`` = (vision, llm) overrides the depths."""
    from transformers import AutoConfig

    fields = {k: v for k, v in shape.items() if k not in _META_KEYS}
    if layers is not None:
        vision, text = dict(fields["vision_config"]), dict(fields["text_config"])
        key = "depth" if "depth" in vision else "num_hidden_layers"
        vision[key], text["num_hidden_layers"] = layers
        fields.update(vision_config=vision, text_config=text)
    return AutoConfig.for_model(shape["model_type"], **fields)


def _folder_config(cfg: ModelConfig):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(resolve_path(cfg.path)), local_files_only=True)


def architecture_config(cfg: ModelConfig):
    """(transformers config, shape dict or None) of ``cfg``: the checkpoint folder's config
    when ``model.path`` is a folder here, else the shape ``model.shape`` names."""
    path = resolve_path(cfg.path)
    if (path / "config.json").is_file():
        return _folder_config(cfg), (load_shape(cfg.shape) if cfg.shape else None)
    if not cfg.shape:
        raise ModelLoadError(f"model.path {path} is not a checkpoint folder here and model.shape "
                             f"is not set; set one of: {', '.join(shape_names())}")
    shape = load_shape(cfg.shape)
    return shape_config(shape), shape


def skeleton(config) -> torch.nn.Module:
    """The model of ``config`` on the meta device, frozen (shapes only, no memory)."""
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def cut_down(shape: dict, layers: tuple[int, int] | None, dtype: str = "float32",
             seed: int = 0, device: str = "cpu") -> torch.nn.Module:
    """A shape at real width with ``layers`` = (vision, llm) layers (None: its full depth) and
    transformers' random initialisation (seeded) in ``dtype`` on ``device``, frozen."""
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(shape_config(shape, layers),
                                                        dtype=DTYPES[dtype])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def dummy_batch(shape: dict, config, n: int = 1) -> dict[str, torch.Tensor]:
    """A training batch of ``n`` samples of the shape's size: the image tensors of ``batch``,
    ``image_tokens`` image tokens and ``text_tokens`` text tokens per sample, labels on the
    text. Token ids are arbitrary (1), image tokens the config's."""
    image_id = next(getattr(config, k) for k in ("image_token_id", "image_token_index")
                    if getattr(config, k, None) is not None)
    k_img, k_txt = shape["image_tokens"], shape["text_tokens"]
    row = torch.cat([torch.ones(1, dtype=torch.long), torch.full((k_img,), image_id),
                     torch.ones(k_txt - 1, dtype=torch.long)])
    ids = row.repeat(n, 1)
    labels = ids.clone()
    labels[:, : 1 + k_img] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    spec = shape["batch"]
    pixels = torch.randn(*spec["pixel_values"], generator=torch.Generator().manual_seed(0))
    batch["pixel_values"] = torch.cat([pixels] * n)
    if "image_grid_thw" in spec:
        batch["image_grid_thw"] = torch.tensor(spec["image_grid_thw"] * n)
        batch["mm_token_type_ids"] = (ids == image_id).long()
    return batch


__all__ = ["architecture_config", "cut_down", "dummy_batch", "load_shape", "shape_config",
           "shape_names", "skeleton"]
