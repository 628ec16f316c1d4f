"""AtMan on CUDA (skipped without it): packed prefix reuse equals the naive recomputation (fp32); bf16 spread."""

from __future__ import annotations

import pytest
import torch

from hf_ext.atman import AtManExplainer
from hf_ext.testing import tiny_causal_lm

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("pack", ["mask", "segments"])
@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
@torch.no_grad()
def test_packed_prefix_reuse_equals_naive_on_cuda(family, pack):
    model = tiny_causal_lm(family, hidden_size=128, max_position_embeddings=256).cuda()
    gen = torch.Generator().manual_seed(0)
    prompt, target = torch.randint(4, 128, (96,), generator=gen), torch.randint(4, 128, (4,), generator=gen)
    runs = {(reuse, bs): AtManExplainer(model, max_batch_size=bs, prefix_reuse=reuse, pack=pack, progress=False)
            .explain_ids(prompt, target).delta for reuse, bs in [(False, 1), (True, 1), (True, 8), (False, 8)]}
    for key, delta in runs.items():
        torch.testing.assert_close(delta, runs[False, 1], atol=2e-4, rtol=1e-3, msg=str(key))


@torch.no_grad()
def test_bf16_packed_vs_naive_within_the_naive_batch_spread():
    """bf16: prefix reuse moves Δ no more than changing the naive batch size does (plus a small margin)."""
    model = tiny_causal_lm("llama", hidden_size=512, num_layers=8, max_position_embeddings=256).cuda().bfloat16()
    gen = torch.Generator().manual_seed(1)
    prompt, target = torch.randint(4, 128, (128,), generator=gen), torch.randint(4, 128, (4,), generator=gen)
    naive1, naive8, packed = (AtManExplainer(model, max_batch_size=bs, prefix_reuse=reuse, progress=False)
                              .explain_ids(prompt, target).delta for reuse, bs in [(False, 1), (False, 8), (True, 1)])
    spread = (naive8 - naive1).abs().max().item()
    diff = (packed - naive1).abs().max().item()
    print(f"bf16 max |Δ| {naive1.abs().max().item():.4f}; naive bs1 vs bs8 {spread:.4f}; packed vs naive {diff:.4f}")
    assert diff <= 2 * spread + 0.02
