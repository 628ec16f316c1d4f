"""UNet cross-attention weighting against a naive softmax(QKᵀ/√d + log w)·V and key removal."""

from __future__ import annotations

import pytest
import torch

from hf_ext.diffusion.multifusion import WeightedCrossAttnProcessor, cross_attention_weights
from hf_ext.diffusion.multifusion.attention_processor import cross_attention_modules
from hf_ext.testing import tiny_sd_components


@pytest.fixture(scope="module")
def unet():
    return tiny_sd_components()["unet"]


def _naive(attn, x, ctx, w):
    """Independent reference for one diffusers Attention module (no residual / norms in the tiny UNet's attn2)."""
    B, N, _ = x.shape
    h = attn.heads
    q, k, v = attn.to_q(x), attn.to_k(ctx), attn.to_v(ctx)
    d = q.shape[-1] // h
    q, k, v = (t.view(B, -1, h, d).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / d**0.5 + torch.log(w).view(B, 1, 1, -1)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, N, h * d)
    return attn.to_out[1](attn.to_out[0](out))


@torch.no_grad()
def test_single_module_matches_naive_formula_and_key_removal(unet):
    attn = cross_attention_modules(unet)[0]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, attn.to_q.in_features, generator=g)
    ctx = torch.randn(2, 5, attn.to_k.in_features, generator=g)
    w = torch.tensor([[1.0, 3.0, 0.5, 1.0, 1.0], [0.2, 1.0, 1.0, 7.0, 1.0]])
    with cross_attention_weights(unet, w):
        assert isinstance(attn.processor, WeightedCrossAttnProcessor)
        got = attn(x, encoder_hidden_states=ctx)
    torch.testing.assert_close(got, _naive(attn, x, ctx, w), rtol=1e-5, atol=1e-5)
    assert not isinstance(attn.processor, WeightedCrossAttnProcessor)  # restored
    with cross_attention_weights(unet, torch.ones(2, 5)):
        ones = attn(x, encoder_hidden_states=ctx)
    torch.testing.assert_close(ones, attn(x, encoder_hidden_states=ctx), rtol=1e-6, atol=1e-6)
    zero = torch.ones(1, 5)
    zero[0, 2] = 0.0
    with cross_attention_weights(unet, zero):
        removed = attn(x, encoder_hidden_states=ctx)
    keep = [0, 1, 3, 4]
    torch.testing.assert_close(removed, attn(x, encoder_hidden_states=ctx[:, keep]), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_whole_unet_weights_one_equals_plain_and_padding_mask_kept(unet):
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([10, 500])
    ctx = torch.randn(2, 4, 32, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    plain = unet(x, t, encoder_hidden_states=ctx, encoder_attention_mask=mask).sample
    with cross_attention_weights(unet, torch.ones(2, 4)):
        ones = unet(x, t, encoder_hidden_states=ctx, encoder_attention_mask=mask).sample
    torch.testing.assert_close(ones, plain, rtol=1e-5, atol=1e-5)
    with cross_attention_weights(unet, torch.tensor([[1.0, 5.0, 1.0, 1.0]])):
        weighted = unet(x, t, encoder_hidden_states=ctx, encoder_attention_mask=mask).sample
    assert not torch.allclose(weighted, plain, atol=1e-4)


def test_processors_restored_after_exception_and_bad_weights(unet):
    before = [type(m.processor) for m in cross_attention_modules(unet)]
    with pytest.raises(RuntimeError, match="boom"), cross_attention_weights(unet, torch.ones(1, 3)):
        raise RuntimeError("boom")
    assert [type(m.processor) for m in cross_attention_modules(unet)] == before
    with pytest.raises(ValueError, match=">= 0"), cross_attention_weights(unet, torch.tensor([[1.0, -1.0]])):
        pass
    with pytest.raises(ValueError, match="no cross-attention"), cross_attention_weights(torch.nn.Linear(2, 2), [1.0]):
        pass
    x, t, ctx = torch.randn(1, 4, 16, 16), torch.tensor([3]), torch.randn(1, 4, 32)
    with pytest.raises(ValueError, match="3 keys but the encoder sequence has 4"), torch.no_grad():
        with cross_attention_weights(unet, torch.ones(1, 3)):
            unet(x, t, encoder_hidden_states=ctx)
