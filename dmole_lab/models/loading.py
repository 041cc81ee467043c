"""Load a vision-language checkpoint and its processor from a local folder.

The embedded tiny model and a real LLaVA / InternVL / SmolVLM folder go through the same
``from_pretrained`` path. Problems with the folder become a :class:`ModelLoadError` that says
what is wrong and where, before anything is trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dmole_lab.config import ModelConfig, resolve_path
from dmole_lab.training.distributed import local_device

from .anatomy import available_maps
from .compat import processors_without_video

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """A model folder is missing, incomplete or corrupt."""


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda if available else cpu; anything else is checked by torch. Under a
    launcher, "cuda" is this process's own GPU (``LOCAL_RANK``)."""
    if device == "auto":
        return local_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"model.device={device!r} is not a device; use auto, cpu or cuda") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"model.device={device!r} but CUDA is not available here; use cpu")
    return local_device(dev)


def check_model_folder(path: Path) -> dict:
    """Validate a checkpoint folder, its processor included, and return its config.json;
    raise ModelLoadError if bad."""
    cfg = _check_files(path)
    load_processor(path, cfg.get("model_type"))
    return cfg


def _check_files(path: Path) -> dict:
    """The folder, config.json, anatomy map and weight files of :func:`check_model_folder`."""
    if not path.exists():
        raise ModelLoadError(
            f"model folder {path} does not exist; build the embedded default with "
            "`dmole-lab pretrain` or point model.path at a local checkpoint folder"
        )
    if not path.is_dir():
        raise ModelLoadError(f"model.path {path} is a file; it must be a checkpoint folder")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelLoadError(f"{path} is not a Hugging Face checkpoint folder: no config.json")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{cfg_file} is corrupt (not valid JSON): {e}") from e
    model_type = cfg.get("model_type")
    if model_type not in available_maps():
        raise ModelLoadError(
            f"{cfg_file}: model_type {model_type!r} has no anatomy map; "
            f"supported: {', '.join(available_maps())}"
        )
    weights = list(path.glob("*.safetensors")) + list(path.glob("*.bin"))
    if not weights:
        raise ModelLoadError(f"{path} has no weight files (*.safetensors or *.bin)")
    for w in path.glob("*.safetensors"):
        _check_safetensors(w)
    return cfg


def load_processor(path: Path, model_type: str | None = None):
    """The processor of a checkpoint folder (image processor and tokenizer; no video processor
    where torchvision is missing, :mod:`dmole_lab.models.compat`); ModelLoadError naming the
    model type and the supported ones if it cannot be built."""
    from transformers import AutoProcessor

    processors_without_video()
    try:
        return AutoProcessor.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises OSError, ValueError, ImportError, TypeError...
        raise ModelLoadError(
            f"{path}: the processor of model_type {model_type!r} cannot be built "
            f"({type(e).__name__}: {' '.join(str(e).split())[:300]}); supported model types: "
            f"{', '.join(available_maps())}") from e


def _check_safetensors(file: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                f.get_slice(key)
    except Exception as e:  # safetensors raises several types for a damaged file
        raise ModelLoadError(f"weight file {file} is corrupt or truncated: {e}") from e


def load_model(cfg: ModelConfig):
    """(model, processor) from ``cfg.path``, in eval mode on the configured device and dtype."""
    from transformers import AutoModelForImageTextToText

    path = resolve_path(cfg.path)
    model_type = _check_files(path).get("model_type")  # the processor is built once, below
    if cfg.dtype not in DTYPES:
        raise ValueError(f"model.dtype={cfg.dtype!r}; allowed: {', '.join(DTYPES)}")
    device = resolve_device(cfg.device)
    processor = load_processor(path, model_type)
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            str(path), dtype=DTYPES[cfg.dtype], local_files_only=True
        )
    except (OSError, ValueError, KeyError) as e:
        raise ModelLoadError(f"could not load the checkpoint in {path}: {e}") from e
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, processor
