"""Attention controls on modules that compute their own softmax (hf_ext.core.attention_bypass).

References:
* the interface path on the same model (already checked against a naive per-(row, head, query) loop in
  test_attention.py): with hf_ext's attention functions switched off, Llama/Qwen2/GPT-2's eager attention computes
  its softmax itself and the bypass path must give the interface path's numbers, padding and both modes included;
* the conformance checks (tests/conformance/cells.py) on families whose attention bypasses the interface: removing a
  key with a 4D mask (handed to the layers where the forward takes only 2D masks), AtMan against a naive
  one-forward-per-unit loop;
* toy modules for strictness: a second softmax of the scores' shape, none at all, a fused kernel, a router softmax.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hf_ext.core.attention_interface as interface
from hf_ext.core.attention import attention_controls
from hf_ext.core.attention_bypass import intercept_attention, visible_from_scores
from hf_ext.core.inputs import position_ids_from_mask
from hf_ext.testing import tiny_causal_lm


def _weights(batch: int, keys: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(batch, keys, generator=g) * 2
    w[:, 2] = 0.0  # a removed key in every row
    return w


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("mode", ["log_additive", "multiplicative"])
def test_bypass_path_equals_interface_path(family, mode, monkeypatch):
    model = tiny_causal_lm(family, attn_implementation="eager")
    ids = torch.tensor([[0, 0, 5, 9, 14, 3, 22, 7], [1, 40, 41, 42, 43, 44, 45, 46]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])
    kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    w = _weights(2, 8, seed=3)
    with torch.no_grad(), attention_controls(model, w, mode=mode):
        routed = model(**kwargs).logits
    # without hf_ext's functions switched in, the eager attention runs its own softmax: the bypass path acts there
    monkeypatch.setattr(interface, "_configs_to_switch", lambda model, attentions: [])
    with torch.no_grad(), attention_controls(model, w, mode=mode):
        bypassed = model(**kwargs).logits
    with torch.no_grad():
        plain = model(**kwargs).logits
    real = mask.bool()
    torch.testing.assert_close(bypassed[real], routed[real], atol=1e-5, rtol=1e-4)
    assert (bypassed[real] - plain[real]).abs().max() > 1e-4  # the weights changed something


def test_bypass_path_refuses_the_reference_variant():
    from tests.conformance.catalog import build

    model = build("bloom")
    with pytest.raises(NotImplementedError, match="multiplicative_reference.*'bloom'"):
        with torch.no_grad(), attention_controls(model, torch.ones(1, 4), mode="multiplicative_reference"):
            model(torch.tensor([[1, 5, 6, 7]]))


def test_bypass_path_refuses_a_fused_kernel(monkeypatch):
    model = tiny_causal_lm("llama", attn_implementation="sdpa")
    monkeypatch.setattr(interface, "_configs_to_switch", lambda model, attentions: [])
    with pytest.raises(NotImplementedError, match="fused attention kernel.*'llama'|'llama'.*fused attention kernel"):
        with torch.no_grad(), attention_controls(model, torch.ones(1, 4)):
            model(torch.tensor([[1, 5, 6, 7]]))


@pytest.mark.parametrize("family", ["bloom", "gpt_neo", "openai-gpt"])
@pytest.mark.parametrize("feature", ["attention_controls", "atman"])
def test_bypass_families_against_conformance_references(family, feature):
    from tests.conformance.catalog import build
    from tests.conformance.cells import CHECKS

    CHECKS[feature](build(family), family)  # raises (AssertionError: wrong numbers) unless it matches


class _Toy(nn.Module):
    """Scores ``x xᵀ`` of a ``[B, Q, D]`` input, with a causal mask; ``softmaxes`` of them, ``router`` adds an
    expert softmax ``[B*Q, E]``, ``fused`` uses scaled_dot_product_attention."""

    def __init__(self, softmaxes: int = 1, router: bool = False, fused: bool = False):
        super().__init__()
        self.softmaxes, self.router, self.fused = softmaxes, router, fused

    def forward(self, x):
        if self.fused:
            return nn.functional.scaled_dot_product_attention(x[:, None], x[:, None], x[:, None], is_causal=True)[:, 0]
        if self.router:  # [B*Q, E] with E == Q: not over keys of a [..., Q, K] tensor
            x = x + torch.softmax(x.flatten(0, 1)[:, : x.shape[1]], dim=-1).sum()
        q = x.shape[1]
        scores = (x @ x.transpose(1, 2)).masked_fill(torch.ones(q, q, dtype=torch.bool).triu(1), -1e4)
        out = x
        for _ in range(self.softmaxes):
            out = nn.functional.softmax(scores, dim=-1) @ out
        return out


def _run(toy, seen):
    def transform(module, scores, visible):
        seen.append((scores.clone(), visible.clone()))
        return torch.where(visible, torch.zeros_like(scores), torch.full_like(scores, -1e30))

    with intercept_attention({0: toy}, transform, lambda i, m, why: RuntimeError(why)):
        return toy(torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0)))


def test_intercept_applies_to_the_one_scores_softmax():
    seen = []
    out = _run(_Toy(router=True), seen)
    assert len(seen) == 1 and seen[0][0].shape == (2, 1, 5, 5)  # the router softmax was left alone
    # -1e4 masking is read as hidden (more than HIDDEN_GAP below the row's maximum): the causal pattern
    assert torch.equal(seen[0][1][0, 0], torch.ones(5, 5, dtype=torch.bool).tril())
    # zero scores on visible keys: every row is the mean of the inputs it sees
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    x = x + torch.softmax(x.flatten(0, 1)[:, :5], dim=-1).sum()
    expected = torch.cumsum(x, dim=1) / torch.arange(1, 6).view(1, 5, 1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("toy, message", [(_Toy(softmaxes=2), "more than one softmax"),
                                          (_Toy(softmaxes=0), "without a softmax"),
                                          (_Toy(fused=True), "fused attention kernel")])
def test_intercept_refuses_what_it_cannot_place(toy, message):
    with pytest.raises(RuntimeError, match=message):
        _run(toy, [])


def test_intercept_is_inactive_outside_its_block_and_in_other_threads():
    import threading

    toy, seen = _Toy(), []
    x = torch.randn(1, 4, 3)
    plain = toy(x)

    def transform(module, scores, visible):
        seen.append(1)
        return scores * 0

    with intercept_attention({0: toy}, transform, lambda i, m, why: RuntimeError(why)):
        other = []
        thread = threading.Thread(target=lambda: other.append(toy(x)))
        thread.start()
        thread.join()
        changed = toy(x)
    assert len(seen) == 1 and torch.equal(other[0], plain) and not torch.equal(changed, plain)
    assert torch.equal(toy(x), plain)
    assert not toy._forward_hooks and not toy._forward_pre_hooks


def test_visible_from_scores():
    low = torch.finfo(torch.float32).min
    scores = torch.tensor([[3.0, low, -1e4, 2.0, float("-inf"), -900.0]])
    assert visible_from_scores(scores).tolist() == [[True, False, False, True, False, True]]


def test_concurrent_threads_leave_no_state_behind():
    """Threads share the hooks on one model: each keeps its own input lengths, and none leaks into another."""
    import threading

    from hf_ext.core import attention_bypass
    from tests.conformance.catalog import build

    model = build("bloom")
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    w = torch.tensor([[1.0, 0.0, 1.0, 1.0, 1.0]])
    with torch.no_grad(), attention_controls(model, w):
        expected = model(ids).logits
    results, barrier = [], threading.Barrier(3)

    def run():
        barrier.wait()
        with torch.no_grad(), attention_controls(model, w):
            for _ in range(5):
                model(ids[:, :3])  # interleaved forwards of other lengths
            results.append(model(ids).logits)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    run()  # the main thread too, concurrently
    for t in threads:
        t.join()
    assert len(results) == 3 and all(torch.allclose(r, expected, atol=1e-6) for r in results)
    assert attention_bypass._INPUT_TOKENS.get() == ()
    toy = _Toy()
    _run(toy, [])  # a fresh guard after the threads: no stale input length


@pytest.mark.parametrize("family", ["bloom", "gpt_neo", "mpt"])
def test_generate_with_a_cache_equals_a_no_cache_greedy_loop(family):
    """Cached decoding (one query over a growing key set) under controls equals full forwards under the same ones."""
    from tests.conformance.catalog import build, text_ids

    model = build(family)
    ids = text_ids(1, 6, seed=3)
    w = torch.ones(1, 6)
    w[0, 2] = 0.0
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False, eos_token_id=None,
                  pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    with torch.no_grad(), attention_controls(model, w):
        out = model.generate(ids, **kwargs)
        cur = ids
        for _ in range(5):
            cur = torch.cat([cur, model(input_ids=cur, use_cache=False).logits[:, -1:].argmax(-1)], dim=1)
    with torch.no_grad():
        free = model.generate(ids, **kwargs)
    assert out.sequences[0, 6:].tolist() == cur[0, 6:].tolist()
    assert (out.scores[0] - free.scores[0]).abs().max() > 1e-5  # the removed key changed the first step
