import json

import torch
from safetensors.torch import load_file

from dmole_lab.config import ModelConfig, build_config
from dmole_lab.models.loading import load_model
from dmole_lab.models.pretrain import pretrain


def _pretrain(out, spec):
    cfg = build_config("smoke", {"pretrain.out": str(out), "pretrain.vision_steps": 2,
                                 "eval.max_new_tokens": 3})
    return pretrain(cfg, progress=False, spec=spec)


def test_pretrain_smoke_is_loadable_and_reproducible(tmp_path, micro_spec):
    a = _pretrain(tmp_path / "a", micro_spec)
    b = _pretrain(tmp_path / "b", micro_spec)
    info = json.loads((a / "pretrain.json").read_text())
    assert info["n_params"] > 0 and {r["eval_task"] for r in info["held_out"]} == {
        "list_objects", "pope"}
    model, processor = load_model(ModelConfig(path=str(a), device="cpu"))
    assert model.config.model_type == "llava"
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
