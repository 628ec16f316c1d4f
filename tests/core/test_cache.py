"""SuffixRecomputeCache: in-place suffix recomputation equals a full forward (independent reference) per family."""

from __future__ import annotations

import pytest
import torch

from hf_ext.core.cache import SuffixRecomputeCache, cache_argument
from hf_ext.core.inputs import position_ids_from_mask


def _forward(model, ids, pos, cache=None, logits_to_keep=0):
    kw = {cache_argument(model): cache} if cache is not None else {}
    mask = torch.ones(ids.shape[0], int(pos[0, -1]) + 1, dtype=torch.long)  # past + current positions
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=cache is not None,
                     logits_to_keep=logits_to_keep, **kw).logits


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "qwen2", "opt"])
def test_descending_suffix_recomputation_equals_full_forwards(causal_lms, family):
    model = causal_lms[family]
    gen = torch.Generator().manual_seed(0)
    L = 12
    base = torch.randint(4, 120, (1, L), generator=gen)
    pos = position_ids_from_mask(torch.ones_like(base))
    cache = SuffixRecomputeCache(L)
    _forward(model, base, pos, cache)
    for start, batch in [(9, 2), (9, 1), (6, 3), (2, 2), (1, 1)]:
        # Independent reference: full forwards of the edited sequences, no cache.
        edited = base.expand(batch, -1).clone()
        edited[:, start:] = torch.randint(4, 120, (batch, L - start), generator=gen)
        want = _forward(model, edited, pos.expand(batch, -1))[:, start:]
        got = _forward(model, edited[:, start:], pos[:, start:].expand(batch, -1), cache.resume_from(start, batch))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_going_back_up_is_refused_and_rewrite_restores(causal_lms):
    model = causal_lms["llama"]
    L = 10
    ids = torch.arange(4, 4 + L).view(1, -1)
    pos = position_ids_from_mask(torch.ones_like(ids))
    cache = SuffixRecomputeCache(L)
    with pytest.raises(ValueError, match="base pass"):
        cache.resume_from(3)
    full = _forward(model, ids, pos, cache)
    other = ids.clone()
    other[:, 4:] = 7
    _forward(model, other[:, 4:], pos[:, 4:].expand(2, -1).contiguous()[:1], cache.resume_from(4, 1))
    with pytest.raises(ValueError, match="non-increasing"):
        cache.resume_from(6)
    with pytest.raises(ValueError, match="outside"):
        cache.resume_from(L)
    # Restore the base from 4 on row 0, broadcast to 3 rows, then resume later in the sequence.
    _forward(model, ids[:, 4:], pos[:, 4:], cache.resume_from(4, 1, rewrite=True))
    cache.broadcast_base(4)
    got = _forward(model, ids[:, 7:].expand(3, -1), pos[:, 7:].expand(3, -1), cache.resume_from(7, 3))
    torch.testing.assert_close(got, full[:, 7:].expand(3, -1, -1), rtol=1e-5, atol=1e-5)


def test_bad_length():
    with pytest.raises(ValueError, match="positive"):
        SuffixRecomputeCache(0)
