"""Segment attention: suffixes packed in one row compute what their own full forwards compute.

Reference: one full forward per segment under ``attention_controls`` (the plain, unpacked manipulation), read at
the segment's positions.
"""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from hf_ext.core.attention import attention_controls
from hf_ext.core.cache import cache_argument
from hf_ext.core.segments import Segment, SegmentPlan, layer_map, segment_attention
from hf_ext.testing import tiny_causal_lm


def _bias(weights, start, dtype=torch.float32):
    """[1, 1, L - start, L] written out by hand: causal, log w on visible keys (no all-zero rows here)."""
    L = weights.numel()
    bias = torch.full((L - start, L), torch.finfo(dtype).min)
    for i, p in enumerate(range(start, L)):
        for k in range(p + 1):
            bias[i, k] = torch.log(weights[k]).clamp_min(torch.finfo(dtype).min)
    return bias.view(1, 1, L - start, L)


@pytest.mark.parametrize("family,attn", [("llama", "sdpa"), ("llama", "eager"), ("gpt2", "sdpa"), ("gpt_neox", "eager"),
                                         ("qwen2", "sdpa")])
@torch.no_grad()
def test_packed_segments_equal_their_own_forwards(family, attn):
    model = tiny_causal_lm(family, attn_implementation=attn)
    gen = torch.Generator().manual_seed(0)
    L = 14
    ids = torch.randint(4, 100, (1, L), generator=gen)
    pos = torch.arange(L).view(1, L)
    cache = DynamicCache()
    model(input_ids=ids, position_ids=pos, **{cache_argument(model): cache}, use_cache=True)
    # Two rows: row 0 holds starts 3 and 9 (11 + 5 = 16 tokens), row 1 holds start 12 and padding.
    starts, rows = [3, 9, 12], [0, 0, 1]
    weights = torch.ones(3, L)
    for c, s in enumerate(starts):
        # The start is the first changed key: the cached prefix before it is the unmanipulated base pass's.
        weights[c, s] = 0.2
        weights[c, torch.randint(s + 1, L, (1,), generator=gen)] = 0.0
    offsets = [0, L - 3, 0]
    Q = (L - 3) + (L - 9)
    feed = torch.zeros(2, Q, dtype=torch.long)
    positions = torch.zeros(2, Q, dtype=torch.long)
    for s, r, o in zip(starts, rows, offsets):
        feed[r, o : o + L - s] = ids[0, s:]
        positions[r, o : o + L - s] = torch.arange(s, L)
    segments = [Segment(row=r, offset=o, start=s, bias=_bias(weights[c], s)) for c, (s, r, o) in
                enumerate(zip(starts, rows, offsets))]
    with segment_attention(model, SegmentPlan(cache, segments, layer_map(model))):
        packed = model(input_ids=feed, position_ids=positions, use_cache=False).logits
    for c, (s, r, o) in enumerate(zip(starts, rows, offsets)):
        with attention_controls(model, weights[c : c + 1]):
            full = model(input_ids=ids, position_ids=pos).logits
        torch.testing.assert_close(packed[r, o : o + L - s], full[0, s:], atol=2e-5, rtol=1e-4)
    # The cache still holds the base pass only: a second packed forward sees the same prefix.
    assert cache.get_seq_length() == L


@torch.no_grad()
def test_layers_outside_the_plan_run_the_plain_kernel():
    model = tiny_causal_lm("llama", num_layers=2)
    ids = torch.randint(4, 100, (1, 6), generator=torch.Generator().manual_seed(1))
    plain = model(ids).logits
    # A plan over no layer changes nothing, and the model's attention implementation is restored afterwards.
    with segment_attention(model, SegmentPlan(None, [], {})):
        assert torch.equal(model(ids).logits, plain)
    assert model.config._attn_implementation == "sdpa"


def test_flash_attention_is_refused():
    model = tiny_causal_lm("llama")
    model.config._attn_implementation_internal = "flash_attention_2"
    try:
        with pytest.raises(ValueError, match="sdpa"):
            with segment_attention(model, SegmentPlan(None, [], layer_map(model))):
                pass
    finally:
        model.config._attn_implementation_internal = "sdpa"
