"""GPU checks of the core (skipped without CUDA): the sdpa kernels, bf16 and the KV cache on a real device."""

from __future__ import annotations

import pytest
import torch

from hf_ext.core.attention import attention_controls, key_weights
from hf_ext.core.inputs import position_ids_from_mask
from hf_ext.core.layers import run_layers
from hf_ext.testing import tiny_causal_lm

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_controls_on_cuda(family, dtype):
    model = tiny_causal_lm(family, hidden_size=128).to("cuda", dtype)
    ids = torch.randint(4, 128, (4, 64), generator=torch.Generator().manual_seed(0)).cuda()
    mask = torch.ones_like(ids)
    mask[1, :10] = 0
    pos = position_ids_from_mask(mask)
    plain = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    for mode in ("log_additive", "multiplicative"):
        with attention_controls(model, torch.ones(ids.shape), mode=mode):
            ones = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
        real = mask.bool()
        assert (ones[real] - plain[real]).abs().max() < tol
        with attention_controls(model, key_weights(4, 64, [[30]] * 4, 0.0), mode=mode):
            sup = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
        before = real.clone()
        before[:, 30:] = False  # real (non-padding) rows before the suppressed key: unchanged (causality)
        assert (sup[before] - plain[before]).abs().max() < tol
        if dtype == torch.float32:  # in bf16 one key of a random tiny model moves logits about as much as rounding
            assert (sup[:, 31:] - plain[:, 31:]).abs().max() > 1e-3


@torch.no_grad()
def test_run_layers_and_generation_on_cuda():
    model = tiny_causal_lm("llama", hidden_size=128).cuda()
    ids = torch.randint(4, 128, (2, 32), generator=torch.Generator().manual_seed(1)).cuda()
    full = model(ids, output_hidden_states=True)
    logits = run_layers(model, full.hidden_states[1], 1, return_logits=True)
    torch.testing.assert_close(logits, full.logits, atol=1e-4, rtol=1e-4)
    with attention_controls(model, key_weights(2, 32, [[5]], 0.0)):
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, pad_token_id=0)
        seq = ids
        for _ in range(gen.shape[1] - ids.shape[1]):
            seq = torch.cat([seq, model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(gen, seq)
