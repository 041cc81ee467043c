"""The LoRA up-projection with the CPU-laid-out backward (dmole_lab.experts.narrow)."""

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig
from torch import nn

from dmole_lab.experts.narrow import NarrowLinear, narrow_linear, use_narrow_products
from dmole_lab.models.compat import get_peft_model_quietly


def test_gradients_are_exact_in_float64():
    torch.manual_seed(0)
    u = torch.randn(3, 7, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(narrow_linear, (u, w))


@pytest.mark.parametrize("needs", [(True, True), (True, False), (False, True)])
def test_same_values_and_gradients_as_linear(needs):
    torch.manual_seed(1)
    u0, w0, g = torch.randn(16, 30, 4), torch.randn(384, 4), torch.randn(16, 30, 384)
    grads = []
    for fn in (F.linear, narrow_linear):
        u, w = u0.clone().requires_grad_(needs[0]), w0.clone().requires_grad_(needs[1])
        y = fn(u, w)
        y.backward(g)
        grads.append((y.detach(), u.grad, w.grad))
    (y_ref, du_ref, dw_ref), (y, du, dw) = grads
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)  # the forward is F.linear itself
    for ref, got, need in ((du_ref, du, needs[0]), (dw_ref, dw, needs[1])):
        if need:
            # float32 sums of 384 or 480 terms, rounded in another order
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=2e-6 * float(ref.abs().max()))
            assert got.shape == ref.shape
        else:
            assert got is None


def test_no_autograd_takes_the_plain_product():
    u, w = torch.randn(5, 4), torch.randn(6, 4, requires_grad=True)
    with torch.no_grad():
        assert narrow_linear(u, w).grad_fn is None
    assert narrow_linear(u, w).grad_fn is not None
    assert "Narrow" in type(narrow_linear(u, w).grad_fn).__name__


def test_peft_layers_switch_and_back_keeping_their_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    peft_model = get_peft_model_quietly(model, LoraConfig(r=2, target_modules=["0", "2"]))
    keys = set(peft_model.state_dict())
    x = torch.randn(5, 8)
    before = peft_model(x)
    assert use_narrow_products(peft_model) == 2
    assert use_narrow_products(peft_model) == 0  # idempotent
    assert all(isinstance(m, NarrowLinear) for n, m in peft_model.named_modules()
               if n.endswith("lora_B.default"))
    assert set(peft_model.state_dict()) == keys
    torch.testing.assert_close(peft_model(x), before)
    assert use_narrow_products(peft_model, on=False) == 2
    assert not any(isinstance(m, NarrowLinear) for m in peft_model.modules())


def test_a_narrow_lora_trains_and_merges_like_a_plain_one():
    outs = []
    for narrow in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
        x, y = torch.randn(32, 8), torch.randn(32, 3)
        base = model(x).detach()
        peft_model = get_peft_model_quietly(model, LoraConfig(r=4, lora_alpha=8,
                                                             target_modules=["0", "2"]))
        use_narrow_products(peft_model, on=narrow)
        opt = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.1)
        for _ in range(5):
            opt.zero_grad()
            F.mse_loss(peft_model(x), y).backward()
            opt.step()
        outs.append(peft_model.merge_and_unload()(x).detach())
        assert (outs[-1] - base).abs().max() > 1e-3  # the merged LoRA changed the model
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
