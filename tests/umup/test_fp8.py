"""FP8: saturating casts against an enumerated FP8 grid, the spec's error table, simulated and real FP8 linears."""

from __future__ import annotations

import pytest
import torch

from hf_ext.umup import functional as UF
from hf_ext.umup.fp8 import E4M3, E5M2, fp8_error_stats, quantize, saturating_cast


def _grid(dtype):
    """Every finite value of an FP8 format, from its 256 bit patterns (an independent quantiser)."""
    vals = torch.arange(256, dtype=torch.uint8).view(dtype).float()
    return torch.unique(vals[torch.isfinite(vals)])


def _nearest(x, dtype):
    grid = _grid(dtype)
    x = x.clamp(float(grid.min()), float(grid.max()))
    return grid[(x[:, None] - grid[None]).abs().argmin(1)]


@pytest.mark.parametrize("dtype, top", [(E4M3, 448.0), (E5M2, 57344.0)])
def test_saturating_cast_and_rounding_match_the_enumerated_grid(dtype, top):
    torch.manual_seed(0)
    x = torch.cat([torch.randn(4000) * 30, torch.tensor([1e9, -1e9, top * 1.5, 0.0])])
    q = quantize(x, dtype)
    assert torch.isfinite(q).all() and float(q.max()) == top and float(q.min()) == -top
    ref = _nearest(x, dtype)
    # round-to-nearest: our value is one of the nearest grid values (ties may go either way)
    assert torch.all((q - x).abs() <= (ref - x).abs() + 1e-6)
    assert saturating_cast(x, dtype).dtype == dtype


@pytest.mark.parametrize("std, dtype, err, zeros", [
    (1.0, E4M3, 0.027, 0.001), (1 / 64, E4M3, 0.038, 0.05), (1e-4, E4M3, 1.0, 1.0),
    (1.0, E5M2, 0.053, 0.0), (1e-4, E5M2, 0.059, 0.061), (1e-6, E5M2, 1.0, 1.0),
])
def test_error_table_of_the_spec(std, dtype, err, zeros):
    torch.manual_seed(0)
    s = fp8_error_stats(torch.randn(2**20) * std, dtype)
    assert s["rel_rms_error"] == pytest.approx(err, abs=0.006)
    assert s["zero_fraction"] == pytest.approx(zeros, abs=0.01)


def test_simulated_fp8_linear_equals_gemms_on_grid_rounded_operands():
    torch.manual_seed(0)
    x = torch.randn(24, 32, requires_grad=True)
    w = torch.randn(16, 32, requires_grad=True)
    g = torch.randn(24, 16) * 3
    y = UF.scaled_linear(x, w, None, 0.25, 0.5, 0.125, fp8=UF.FP8_SIMULATE)
    y.backward(g)
    xq, wq = _nearest(x.detach().flatten(), E4M3).view_as(x), _nearest(w.detach().flatten(), E4M3).view_as(w)
    gq = _nearest(g.flatten(), E5M2).view_as(g)
    torch.testing.assert_close(y, 0.25 * xq @ wq.T, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x.grad, 0.5 * gq @ wq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w.grad, 0.125 * gq.T @ xq, atol=1e-5, rtol=1e-5)
    exact = 0.25 * x.detach() @ w.detach().T
    assert 0 < float((y.detach() - exact).norm() / exact.norm()) < 0.05  # unit-scaled operands: small FP8 error


def test_fp8_model_trains_like_the_fp32_model():
    from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM, umup_param_groups

    losses = {}
    for mode in (None, "simulate"):
        torch.manual_seed(0)
        model = UMupLlamaForCausalLM(UMupConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                num_attention_heads=4, umup_attn_seq_len=16, umup_fp8=mode))
        opt = torch.optim.AdamW(umup_param_groups(model, lr=0.3))
        g = torch.Generator().manual_seed(1)
        data = torch.randint(0, 8, (8, 16), generator=g) * 3  # a learnable subset of the vocabulary
        for _ in range(10):
            loss = model(data, labels=data).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[mode] = float(loss)
    assert losses["simulate"] < 0.6 * torch.log(torch.tensor(64.0)).item()  # it learns
    assert losses["simulate"] == pytest.approx(losses[None], rel=0.1)


@pytest.mark.gpu
def test_scaled_mm_linear_matches_simulation_on_cuda():
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("torch._scaled_mm needs compute capability >= 8.9")
    torch.manual_seed(0)
    x = torch.randn(64, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(96, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(64, 96, device="cuda", dtype=torch.bfloat16)
    outs = {}
    for mode in (UF.FP8_SIMULATE, UF.FP8_SCALED_MM):
        x.grad = w.grad = None
        y = UF.scaled_linear(x, w, None, 128**-0.5, 96**-0.5, 64**-0.5, fp8=mode)
        y.backward(g)
        outs[mode] = (y.float(), x.grad.float(), w.grad.float())
    for a, b in zip(outs[UF.FP8_SIMULATE], outs[UF.FP8_SCALED_MM]):
        assert float((a - b).norm() / b.norm()) < 0.02
