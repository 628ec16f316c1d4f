"""AtMan on decoders whose attention reads more than its own keys and a 0/1 mask (issue 17).

Gemma 3n's last ``num_kv_shared_layers`` layers and Kolibri 1.1's ``kv_source_layers`` attend to an earlier layer's
keys/values and store none of their own, so packed segments cannot be stitched onto the base pass's cache: segment
attention refuses (``ValueError``) and AtMan falls back to one perturbation per row. Reference: one forward per unit
with a 4D mask that removes / down-weights the unit's key (``tests/conformance/cells.py``), and Doge's dynamic mask
(a learned per-key bias inside the mask) must survive the key weights.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache

from hf_ext.core.cache import cache_argument
from hf_ext.core.segments import Segment, SegmentPlan, layer_map, segment_attention
from tests.atman.test_non_causal import causal_or_refused
from tests.conformance.catalog import build
from tests.conformance.cells import check_atman

SHARED_KV = ["gemma3n_text", "kolibri1_1"]


@pytest.mark.parametrize("model_type", SHARED_KV)
def test_explanations_equal_a_naive_masked_loop(model_type):
    check_atman(build(model_type), model_type)


@pytest.mark.parametrize("model_type", SHARED_KV)
@torch.no_grad()
def test_segment_attention_refuses_layers_without_their_own_keys(model_type):
    model = build(model_type)
    L, s = 6, 3
    ids = torch.arange(4, 4 + L).view(1, L)
    cache = DynamicCache(config=model.config)
    model(input_ids=ids, use_cache=True, **{cache_argument(model): cache})
    bias = torch.zeros(1, 1, L - s, L)
    bias[..., torch.arange(L).view(1, L) > torch.arange(s, L).view(-1, 1)] = torch.finfo(torch.float32).min
    plan = SegmentPlan(cache, [Segment(row=0, offset=0, start=s, bias=bias)], layer_map(model))
    with pytest.raises(ValueError, match="reads keys it did not compute"), segment_attention(model, plan):
        model(input_ids=ids[:, s:], position_ids=torch.arange(s, L).view(1, -1), use_cache=False)


def test_doge_with_a_trained_dynamic_mask_equals_a_naive_loop():
    # Doge's init leaves A = 0 (a constant dynamic bias, which the softmax ignores); a trained model's is not
    model = copy.deepcopy(build("doge"))
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for layer in model.model.layers:
            layer.self_attn.A.normal_(0.0, 1.0)
    if causal_or_refused(model):
        check_atman(model, "doge")
