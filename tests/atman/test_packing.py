"""Packed suffix recomputation: the packing plan, and packed == one-perturbation-per-row on several families."""

from __future__ import annotations

import pytest
import torch

from hf_ext.atman import AtManExplainer
from hf_ext.atman.packing import pack

PROMPT = "the cat sat on the mat, so"
TARGET = " it slept"


def test_pack_covers_every_perturbation_once_within_capacity():
    gen = torch.Generator().manual_seed(0)
    L = 40
    starts = {c: int(s) for c, s in enumerate(torch.randint(0, L, (57,), generator=gen))}
    forwards = pack(starts, L, capacity=L, rows_per_forward=3)
    seen = [c for fb in forwards for row in fb.rows for c, _ in row]
    assert sorted(seen) == sorted(starts)
    for fb in forwards:
        assert 1 <= len(fb.rows) <= 3
        lengths = [sum(L - s for _, s in row) for row in fb.rows]
        assert max(lengths) == fb.length <= L
        for r, c, s, off in fb.segments:  # segments are laid end to end
            assert starts[c] == s and off + (L - s) <= lengths[r]
    # Fewer rows than perturbations: the total suffix length is about half of C·L.
    assert sum(len(fb.rows) for fb in forwards) < len(starts)
    with pytest.raises(ValueError, match="capacity"):
        pack(starts, L, capacity=L - 1, rows_per_forward=1)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "opt"])
@torch.no_grad()
def test_packed_equals_unpacked_and_uses_fewer_forwards(causal_lms, tokenizer, family):
    model = causal_lms[family]
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        out = {}
        for kappa in (None, 0.5):  # 0.5: repeated characters co-suppress earlier copies (earlier starts)
            for packed in (False, True):
                calls.clear()
                ex = AtManExplainer(model, tokenizer, max_batch_size=1, pack=packed, conceptual_threshold=kappa,
                                    progress=False)
                out[kappa, packed] = (ex.explain(PROMPT, TARGET, include_target=True).delta, len(calls))
    finally:
        handle.remove()
    for kappa in (None, 0.5):
        torch.testing.assert_close(out[kappa, True][0], out[kappa, False][0], atol=1e-5, rtol=1e-5)
    # One forward per perturbation (+ the base pass) unpacked; about half as many packed.
    assert out[None, True][1] < 0.6 * out[None, False][1], (out[None, True][1], out[None, False][1])


def test_packing_only_where_one_mask_expresses_the_manipulation(causal_lms, tokenizer):
    model = causal_lms["llama"]
    assert AtManExplainer(model, tokenizer).pack
    assert not AtManExplainer(model, tokenizer, mode="multiplicative").pack
    assert not AtManExplainer(model, tokenizer, layers=[0]).pack
    assert not AtManExplainer(model, tokenizer, prefix_reuse=False).pack
