"""Packed suffix recomputation: the packing plan, and packed == one-perturbation-per-row on several families."""

from __future__ import annotations

import pytest
import torch

from hf_ext.atman import AtManExplainer
from hf_ext.atman.packing import pack
from hf_ext.testing import tiny_causal_lm

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


@pytest.mark.parametrize("how", ["segments", "mask"])
@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "opt", "llama-eager"])
@torch.no_grad()
def test_packed_equals_unpacked_and_uses_fewer_forwards(causal_lms, tokenizer, family, how):
    model = causal_lms[family] if family in causal_lms else tiny_causal_lm("llama", attn_implementation="eager")
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        out = {}
        for kappa in (None, 0.5):  # 0.5: repeated characters co-suppress earlier copies (earlier starts)
            for packed in (False, how):
                calls.clear()
                ex = AtManExplainer(model, tokenizer, max_batch_size=1, pack=packed, conceptual_threshold=kappa,
                                    progress=False)
                assert ex.packing == (how if packed else None)
                out[kappa, packed] = (ex.explain(PROMPT, TARGET, include_target=True).delta, len(calls))
    finally:
        handle.remove()
    for kappa in (None, 0.5):
        torch.testing.assert_close(out[kappa, how][0], out[kappa, False][0], atol=1e-5, rtol=1e-5)
    # One forward per perturbation (+ the base pass) unpacked; about half as many packed.
    assert out[None, how][1] < 0.6 * out[None, False][1], (out[None, how][1], out[None, False][1])


@pytest.mark.parametrize("how", ["segments", "mask"])
@torch.no_grad()
def test_packed_rows_with_padding_and_left_padded_prompt(causal_lms, how):
    """max_batch_size > 1 pads rows to the longest; a left-padded prompt has padding keys: both ignored."""
    model = causal_lms["llama"]
    gen = torch.Generator().manual_seed(3)
    prompt, target = torch.randint(4, 100, (23,), generator=gen), torch.randint(4, 100, (3,), generator=gen)
    padded = torch.cat([torch.zeros(5, dtype=torch.long), prompt])
    mask = torch.cat([torch.zeros(5, dtype=torch.long), torch.ones(23, dtype=torch.long)])
    ref = AtManExplainer(model, prefix_reuse=False, progress=False).explain_ids(prompt, target).delta
    for bs in (1, 3, 8):
        ex = AtManExplainer(model, max_batch_size=bs, pack=how, conceptual_threshold=0.3, progress=False)
        near = AtManExplainer(model, prefix_reuse=False, conceptual_threshold=0.3, progress=False)
        torch.testing.assert_close(ex.explain_ids(padded, target, attention_mask=mask).delta,
                                   near.explain_ids(prompt, target).delta, atol=2e-5, rtol=1e-4)
        plain = AtManExplainer(model, max_batch_size=bs, pack=how, progress=False).explain_ids(prompt, target).delta
        torch.testing.assert_close(plain, ref, atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_sliding_window_model_is_packed_only_within_the_window():
    """Beyond a sliding window the model keeps its own masks (unpacked); Δ equals the naive recomputation."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=6, max_position_embeddings=64)
    model = MistralForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    prompt, target = torch.randint(4, 100, (20,), generator=gen), torch.randint(4, 100, (3,), generator=gen)
    ex = AtManExplainer(model, progress=False)
    assert ex.packing_for(22) is None and ex.packing_for(6) == "segments"
    naive = AtManExplainer(model, prefix_reuse=False, progress=False).explain_ids(prompt, target).delta
    torch.testing.assert_close(ex.explain_ids(prompt, target).delta, naive, atol=2e-5, rtol=1e-4)
    short = AtManExplainer(model, prefix_reuse=False, progress=False).explain_ids(prompt[:4], target).delta
    torch.testing.assert_close(ex.explain_ids(prompt[:4], target).delta, short, atol=2e-5, rtol=1e-4)  # packed
    # The window matters here: suppressing a token further back than the window changes nothing at the target.
    assert naive[:9].abs().max() < 1e-6 < naive[-3:].abs().max()  # 2 layers × window 6 reach back to 19 - 10


def test_pack_argument_is_checked(causal_lms):
    with pytest.raises(ValueError, match="pack='dense'"):
        AtManExplainer(causal_lms["llama"], pack="dense")
    assert AtManExplainer(causal_lms["llama"]).packing == "segments"  # CPU default


def test_packing_only_where_one_mask_expresses_the_manipulation(causal_lms, tokenizer):
    model = causal_lms["llama"]
    assert AtManExplainer(model, tokenizer).pack
    assert not AtManExplainer(model, tokenizer, mode="multiplicative").pack
    assert not AtManExplainer(model, tokenizer, layers=[0]).pack
    assert not AtManExplainer(model, tokenizer, prefix_reuse=False).pack


@torch.no_grad()
def test_gemma2_softcapped_eager_attention_packs_within_its_window():
    """Segment attention calls the model's own eager function: Gemma2's logit soft-capping is kept."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, sliding_window=16, max_position_embeddings=64,
                       attn_implementation="eager")
    model = Gemma2ForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    prompt, target = torch.randint(4, 100, (12,), generator=gen), torch.randint(4, 100, (3,), generator=gen)
    ex = AtManExplainer(model, progress=False)
    assert ex.packing_for(14) == "segments"
    naive = AtManExplainer(model, prefix_reuse=False, progress=False).explain_ids(prompt, target).delta
    assert naive.abs().max() > 1e-3
    torch.testing.assert_close(ex.explain_ids(prompt, target).delta, naive, atol=2e-5, rtol=1e-4)
