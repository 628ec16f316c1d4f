"""Attention controls keep the score bias a mask carries (issue 17: Doge's AtMan gave silently wrong numbers).

Most masks are 0 on visible keys, but a caller's 4D float mask may hold a per-key bias, and Doge folds a learned
per-key term (its dynamic mask) into the mask it hands the attention function. Key weights must be added on top of
those values, not replace them. References: the model's own forward with a 4D mask holding bias + ``log w`` (Llama,
Qwen2, which add the mask to their scores), and for Doge — whose forward turns every non-zero mask entry into
"masked" — its own forward with ``log w`` added inside transformers' sdpa function (no hf_ext code on that path).
"""

from __future__ import annotations

import pytest
import torch
import transformers

from hf_ext.core.attention import attention_controls
from hf_ext.testing import tiny_causal_lm
from tests.conformance.cells import _biased_forward
from tests.conformance.shrink import shrink_config

T = 7


def _biased_mask(seed: int, removed: int | None = None, log_w: torch.Tensor | None = None) -> torch.Tensor:
    """``[2, 1, T, T]`` causal float mask with a seeded per-key bias on visible keys (plus ``log_w`` ``[2, T]``;
    ``removed``: a key masked out for every query that sees another key)."""
    gen = torch.Generator().manual_seed(seed)
    bias = torch.randn(2, 1, 1, T, generator=gen).expand(2, 1, T, T).clone()
    if log_w is not None:
        bias = bias + log_w[:, None, None, :]
    visible = torch.ones(T, T, dtype=torch.bool).tril().expand(2, 1, T, T).clone()
    if removed is not None:
        visible[..., 1:, removed] = False  # row 0 sees only key 0: its plain mask stays (attention_controls' rule)
    return torch.where(visible, bias, torch.finfo(torch.float32).min)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("mode", ["log_additive", "multiplicative"])
@torch.no_grad()
def test_caller_mask_bias_is_kept(family, mode):
    model = tiny_causal_lm(family)
    ids = torch.randint(5, 100, (2, T), generator=torch.Generator().manual_seed(1))
    mask = _biased_mask(3)
    plain = model(input_ids=ids, attention_mask=mask).logits
    assert (plain - model(input_ids=ids).logits).abs().max() > 1e-3  # the bias matters (not vacuous)
    with attention_controls(model, torch.ones(2, T), mode=mode):
        ones = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ones, plain, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@torch.no_grad()
def test_weights_add_to_caller_mask_bias(family):
    model = tiny_causal_lm(family)
    ids = torch.randint(5, 100, (2, T), generator=torch.Generator().manual_seed(2))
    w = torch.ones(2, T)
    w[0, 3], w[1, 2], w[1, 5] = 0.3, 2.0, 0.0
    with attention_controls(model, w):
        weighted = model(input_ids=ids, attention_mask=_biased_mask(4)).logits
    log_w = torch.log(w.clamp_min(1e-30))
    log_w[1, 5] = 0.0
    reference = _biased_mask(4, log_w=log_w)
    reference[1, :, 1:, 5] = torch.finfo(torch.float32).min  # weight 0 = the key removed (rows that see others)
    torch.testing.assert_close(weighted, model(input_ids=ids, attention_mask=reference).logits, atol=1e-5, rtol=1e-4)


def _doge():
    config = shrink_config(transformers.DogeConfig)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
        for layer in model.model.layers:  # init leaves A = 0 (a constant dynamic bias): a trained model's is not
            layer.self_attn.A.normal_(0.0, 1.0)
    return model


@torch.no_grad()
def test_doge_dynamic_mask_is_kept():
    model = _doge()
    ids = torch.randint(5, 100, (1, T), generator=torch.Generator().manual_seed(5))
    pos = torch.arange(T)[None]
    plain = model(input_ids=ids).logits
    zero_a = _doge()
    for layer in zero_a.model.layers:
        layer.self_attn.A.zero_()
    assert (plain - zero_a(input_ids=ids).logits).abs().max() > 1e-3  # the dynamic bias matters (not vacuous)
    with attention_controls(model, torch.ones(1, T)):
        torch.testing.assert_close(model(input_ids=ids).logits, plain, atol=1e-5, rtol=1e-4)
    w = torch.ones(1, T)
    w[0, 2] = 0.3
    with attention_controls(model, w):
        weighted = model(input_ids=ids).logits
    reference = _biased_forward(model, ids, pos, torch.log(w)).logits
    torch.testing.assert_close(weighted, reference, atol=1e-5, rtol=1e-4)
    assert (weighted - plain).abs().max() > 1e-4
