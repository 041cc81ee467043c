"""LoRA experts: gating, parameters, and PEFT-format export that peft loads identically."""

import copy

import pytest
import torch

from dmole_lab.config import ModelConfig
from dmole_lab.data.encode import encode, train_batch
from dmole_lab.data.tasks import make_samples
from dmole_lab.experts import AdapterShape, Experts
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.loading import load_model


@pytest.fixture()
def micro(micro_model_dir):
    model, processor = load_model(ModelConfig(path=str(micro_model_dir)))
    batch = train_batch(encode(processor, make_samples("ocr", 4, "train", 0)), [0, 1, 2])
    return model, batch, anatomy_of(model)


def _randomise(experts, task):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in experts.parameters(task):
            p.normal_(0, 0.2)


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_gates_switch_experts_and_off_is_the_base_model(micro):
    model, batch, an = micro
    base = _logits(model, batch)
    ex = Experts(model, AdapterShape(r=2, alpha=4, dropout=0.0))
    paths = [an.by_alias[a].path for a in ("vision.0.attn.q", "llm.1.attn.v")]
    ex.add("ocr", paths)
    ex.add("caption", [paths[1]])
    assert ex.tasks() == ["ocr", "caption"] and ex.modules_of("caption") == [paths[1]]
    assert ex.n_params("ocr") == 2 * (32 + 32) * 2
    # B = 0 at creation: experts on or off, the output is the base model's
    ex.activate(["ocr", "caption"])
    torch.testing.assert_close(_logits(model, batch), base)
    _randomise(ex, "ocr")
    _randomise(ex, "caption")
    with_ocr = _logits(model, batch)
    assert not torch.allclose(with_ocr, base)
    ex.deactivate()
    torch.testing.assert_close(_logits(model, batch), base)
    # per-sample gates = running each sample with its own active set
    ex.activate_per_sample([["ocr"], [], ["ocr", "caption"]])
    mixed = _logits(model, batch)
    ex.activate(["ocr"])
    torch.testing.assert_close(mixed[0], _logits(model, batch)[0])
    ex.deactivate()
    torch.testing.assert_close(mixed[1], base[1])
    ex.activate(["ocr", "caption"])
    torch.testing.assert_close(mixed[2], _logits(model, batch)[2])


def test_train_only_one_task_and_errors(micro):
    model, _, an = micro
    ex = Experts(model)
    path = an.by_alias["llm.0.attn.q"].path
    ex.add("a", [path])
    ex.add("b", [path])
    params = ex.train_only("b")
    assert len(params) == 2 and all(p.requires_grad for p in params)
    assert sum(p.requires_grad for p in model.parameters()) == 2
    with pytest.raises(ValueError, match="task 'a' already has an expert here"):
        ex.add("a", [path])
    with pytest.raises(TypeError, match="not nn.Linear"):
        ex.add("c", [an.layer_paths["llm"]])
    with pytest.raises(ValueError, match="no dots"):
        ex.add("a.b", [path])


def test_peft_loads_a_task_adapter_with_the_same_outputs(micro, tmp_path):
    from peft import PeftModel

    model, batch, an = micro
    pristine = copy.deepcopy(model)
    ex = Experts(model, AdapterShape(r=2, alpha=6, dropout=0.05))
    ex.add("ocr", [m.path for m in an.candidates()][:5])
    ex.add("caption", [m.path for m in an.candidates()][3:8])
    _randomise(ex, "ocr")
    _randomise(ex, "caption")
    ex.activate(["caption"])
    ours = _logits(model, batch)
    ex.save_pretrained("caption", tmp_path / "caption")
    peft_model = PeftModel.from_pretrained(pristine, tmp_path / "caption").eval()
    torch.testing.assert_close(_logits(peft_model, batch), ours)
    # and our own reader rebuilds the experts exactly
    cfg, state = Experts.read_pretrained(tmp_path / "caption")
    assert cfg == AdapterShape(r=2, alpha=6, dropout=0.05)
    fresh, _ = load_model(ModelConfig(path=str(model.config._name_or_path)))
    ex2 = Experts(fresh, cfg)
    ex2.load_state_dict("caption", state)
    ex2.activate(["caption"])
    torch.testing.assert_close(_logits(fresh, batch), ours)
