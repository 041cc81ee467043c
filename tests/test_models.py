import json
import shutil

import pytest
import torch

from dmole_lab.config import ModelConfig
from dmole_lab.models.loading import ModelLoadError, load_model


def test_load_roundtrip(micro_model_dir):
    model, processor = load_model(ModelConfig(path=str(micro_model_dir), device="cpu"))
    assert model.config.model_type == "llava"
    assert not any(p.requires_grad for p in model.parameters())
    assert processor.tokenizer.eos_token_id is not None


def _copy(src, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def test_missing_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(ModelConfig(path=str(tmp_path / "nope")))


def test_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(ModelConfig(path=str(tmp_path / "empty")))


def test_corrupt_config(micro_model_dir, tmp_path):
    d = _copy(micro_model_dir, tmp_path)
    (d / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_model(ModelConfig(path=str(d)))


def test_unsupported_model_type(micro_model_dir, tmp_path):
    d = _copy(micro_model_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "mystery"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="no anatomy map"):
        load_model(ModelConfig(path=str(d)))


def test_truncated_weights(micro_model_dir, tmp_path):
    d = _copy(micro_model_dir, tmp_path)
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load_model(ModelConfig(path=str(d)))


def test_bad_dtype_and_device(micro_model_dir):
    with pytest.raises(ValueError, match="allowed: float32"):
        load_model(ModelConfig(path=str(micro_model_dir), dtype="int8"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_model(ModelConfig(path=str(micro_model_dir), device="cuda"))
