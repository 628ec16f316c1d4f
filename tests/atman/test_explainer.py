"""AtMan explainer and steering against independent references.

References used:
* a naive attention written here (explicit score modification per mode, registered through transformers'
  ``AttentionInterface`` under its own name; no hf_ext code on that path), one un-cached forward per suppressed item,
  CE from ``torch.nn.functional.cross_entropy`` on the plain logits;
* transformers' own padding mask (log-additive factor 0 == removing the keys from ``attention_mask``);
* the closed-form neighbour multiplier ``s + (1 − s)(1 − θ)`` with cosines computed here;
* properties: factor 1 is a no-op, prefix reuse == full recomputation, batch-size and left-padding invariance,
  Δ = 0 at/after the target position, generate-with-cache == no-cache greedy loop.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from hf_ext.atman import AtManControl, AtManExplainer, char_spans, controls_to_weights, generate_steered
from hf_ext.core.attention import attention_controls
from hf_ext.testing import tiny_causal_lm

FAMILIES3 = ("llama", "gpt2", "opt")
PROMPT, TARGET = "the cat sat on", " mat"
_REF = {"weights": None, "mode": None}


def _naive_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention with AtMan's score modification spelled out (batch 1 per call in these tests)."""
    b, h, q, d = query.shape
    groups = h // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    scaling = d**-0.5 if scaling is None else scaling
    k = key.shape[2]
    if attention_mask is None:
        visible = torch.ones(q, k, dtype=torch.bool).tril(k - q).expand(b, 1, q, k)
    else:
        visible = attention_mask[..., :k].bool()
    out = torch.zeros(b, q, h, d)
    w = _REF["weights"]
    for bi in range(b):
        for hi in range(h):
            for i in range(q):
                vis = visible[bi, 0, i]
                s = (query[bi, hi, i] @ key[bi, hi].T) * scaling
                if w is not None:
                    wk = w[:k]
                    if _REF["mode"] == "log_additive":
                        s = torch.where(wk > 0, s + torch.log(wk.clamp_min(1e-30)), torch.full_like(s, -torch.inf))
                    elif _REF["mode"] == "multiplicative":
                        s = (s - s[vis].min()) * wk
                    else:  # reference code: min over every key of the row, future ones included
                        s = (s - s.min()) * wk
                s = s.masked_fill(~vis, -torch.inf)
                p = torch.softmax(s, dim=0)
                out[bi, i, hi] = p @ value[bi, hi]
    return out, None


AttentionInterface.register("atman_naive", _naive_attention)
AttentionMaskInterface.register("atman_naive", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def _naive_deltas(model, tokenizer, prompt, target, units, factor, mode, kappa=None):
    p_ids = tokenizer(prompt)["input_ids"]
    t_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    seq = torch.tensor([p_ids + t_ids[:-1]])
    tgt = torch.tensor(t_ids)
    P, L = len(p_ids), seq.shape[1]
    emb = torch.nn.functional.normalize(model.get_input_embeddings()(seq)[0].float(), dim=-1)
    cos = emb @ emb.T
    original = model.config._attn_implementation
    model.set_attn_implementation("atman_naive")
    try:
        def ce(weights):
            _REF["weights"] = weights
            logits = model(seq, use_cache=False).logits[0, P - 1:]
            return torch.nn.functional.cross_entropy(logits, tgt, reduction="none")

        base = ce(None)
        rows = []
        for positions in units:
            w = torch.ones(L)
            w[positions] = factor
            if kappa is not None:
                for i in positions:
                    for k in range(L):
                        if k not in positions and cos[i, k] >= kappa:
                            w[k] = min(w[k], factor + (1 - factor) * (1 - cos[i, k]))
            _REF["mode"] = mode
            rows.append(base - ce(w))
    finally:
        _REF["weights"] = None
        model.set_attn_implementation(original)
    return torch.stack(rows)


@pytest.mark.parametrize("mode", ["log_additive", "multiplicative", "reference_compat"])
@torch.no_grad()
def test_matches_naive_reference(family, causal_lm, tokenizer, mode):
    ex = AtManExplainer(causal_lm, tokenizer, mode=mode, suppression_factor=0.2, max_batch_size=3, progress=False)
    exp = ex.explain(PROMPT, TARGET, granularity="word")
    ref = _naive_deltas(causal_lm, tokenizer, PROMPT, TARGET, [u.positions for u in exp.units], 0.2, mode)
    torch.testing.assert_close(exp.delta, ref, atol=2e-5, rtol=1e-4)
    assert exp.delta.abs().max() > 1e-4  # the comparison is not vacuous


@pytest.mark.parametrize("family", FAMILIES3)
@torch.no_grad()
def test_neighbourhood_matches_closed_form(family, tokenizer):
    model = _model(family)
    prompt = "abab cab"  # repeated characters: cosine 1 neighbours
    ex = AtManExplainer(model, tokenizer, suppression_factor=0.1, conceptual_threshold=0.05, progress=False, max_batch_size=4)
    exp = ex.explain(prompt, " ab")
    ref = _naive_deltas(model, tokenizer, prompt, " ab", [u.positions for u in exp.units], 0.1, "log_additive", kappa=0.05)
    torch.testing.assert_close(exp.delta, ref, atol=2e-5, rtol=1e-4)


def test_neighbour_multiplier_values(tokenizer):
    model = _model("llama")
    ex = AtManExplainer(model, tokenizer, suppression_factor=0.1, conceptual_threshold=0.6, progress=False)
    prep, *_ = ex.prepare_strings("aab", "c")
    w = ex.unit_weights(prep, [[1]])[0]
    assert w[1] == pytest.approx(0.1) and w[2] == pytest.approx(0.1, abs=1e-5)  # duplicate token: θ = 1 → full factor
    e = torch.nn.functional.normalize(model.get_input_embeddings()(prep.feed)[0].detach(), dim=-1)
    theta = float(e[1] @ e[3])
    assert w[3] == pytest.approx(1.0 if theta < 0.6 else 0.1 + 0.9 * (1 - theta), abs=1e-5)
    capped = AtManExplainer(model, tokenizer, conceptual_threshold=0.6, max_neighbours=0, progress=False)
    assert capped.unit_weights(prep, [[1]])[0][2] == 1.0


def _model(family):
    from tests.conftest import _model as shared

    return shared(family)


@pytest.mark.parametrize("mode", ["log_additive", "multiplicative"])
@torch.no_grad()
def test_factor_one_is_noop(family, causal_lm, tokenizer, mode):
    exp = AtManExplainer(causal_lm, tokenizer, mode=mode, suppression_factor=1.0, progress=False).explain(PROMPT, TARGET)
    assert exp.delta.abs().max() < 1e-5


@torch.no_grad()
def test_log_additive_zero_equals_key_masking(family, causal_lm, tokenizer):
    exp = AtManExplainer(causal_lm, tokenizer, suppression_factor=0.0, progress=False, max_batch_size=4).explain(PROMPT, TARGET, granularity="word")
    p_ids = tokenizer(PROMPT)["input_ids"]
    t_ids = tokenizer(TARGET, add_special_tokens=False)["input_ids"]
    seq = torch.tensor([p_ids + t_ids[:-1]])
    L, P = seq.shape[1], len(p_ids)
    pos = torch.arange(L).view(1, -1)

    def ce(mask):
        logits = causal_lm(seq, attention_mask=mask, position_ids=pos).logits[0, P - 1:]
        return torch.nn.functional.cross_entropy(logits, torch.tensor(t_ids), reduction="none")

    base = ce(torch.ones(1, L, dtype=torch.long))
    for unit, delta in zip(exp.units, exp.delta):
        mask = torch.ones(1, L, dtype=torch.long)
        mask[0, unit.positions] = 0
        torch.testing.assert_close(delta, base - ce(mask), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["log_additive", "multiplicative"])
@torch.no_grad()
def test_prefix_reuse_and_batch_size_invariance(family, causal_lm, tokenizer, mode):
    runs = [AtManExplainer(causal_lm, tokenizer, mode=mode, prefix_reuse=reuse, max_batch_size=bs, progress=False,
                           conceptual_threshold=0.3).explain(PROMPT, TARGET, include_target=True)
            for reuse, bs in [(False, 1), (True, 1), (True, 4), (True, 64)]]
    for other in runs[1:]:
        torch.testing.assert_close(other.delta, runs[0].delta, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_left_padding_invariance(family, causal_lm, tokenizer):
    ex = AtManExplainer(causal_lm, tokenizer, max_batch_size=3, progress=False)
    p_ids = tokenizer(PROMPT)["input_ids"]
    t_ids = tokenizer(TARGET, add_special_tokens=False)["input_ids"]
    plain = ex.explain_ids(p_ids, t_ids)
    padded = ex.explain_ids([0, 0, 0] + p_ids, t_ids, attention_mask=[0, 0, 0] + [1] * len(p_ids))
    torch.testing.assert_close(padded.delta, plain.delta, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["log_additive", "multiplicative"])
@torch.no_grad()
def test_delta_zero_at_or_after_target_position(family, causal_lm, tokenizer, mode):
    target = " mat!"
    exp = AtManExplainer(causal_lm, tokenizer, mode=mode, prefix_reuse=False, progress=False, max_batch_size=8).explain(
        PROMPT, target, include_target=True)
    n_prompt = len(exp.tokens)
    for unit, delta in zip(exp.units[n_prompt:], exp.delta[n_prompt:]):
        t_unit = unit.positions[0] - n_prompt
        assert delta[: t_unit + 1].abs().max() < 1e-5  # target t is predicted from position n_prompt - 1 + t
    assert exp.delta[:n_prompt].abs().max() > 1e-4


@pytest.mark.parametrize("family", FAMILIES3)
@torch.no_grad()
def test_steering_with_cache_equals_recomputation(family, tokenizer):
    model = _model(family)
    prompt = "the worst movie"
    controls = [AtManControl(4, 5, 0.0), AtManControl(10, 5, 3.0)]
    generated = generate_steered(model, tokenizer, prompt, controls, max_new_tokens=5, do_sample=False, eos_token_id=None)
    enc = tokenizer(prompt, return_offsets_mapping=True, return_tensors="pt")
    weights = controls_to_weights(enc["offset_mapping"], controls)
    seq = enc["input_ids"]
    with attention_controls(model, weights):
        for _ in range(5):
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert torch.equal(generated, seq)
    plain = model.generate(enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=5, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
    assert model.config._attn_implementation == "sdpa" and plain.shape == generated.shape


def test_partial_overlap_rule():
    offsets = torch.tensor([[0, 0], [0, 4], [4, 8]])
    assert controls_to_weights(offsets, [AtManControl(0, 2, 2.0)]).tolist() == [[1.0, 1.5, 1.0]]
    assert controls_to_weights(offsets, [AtManControl(0, 2, 2.0)], overlap="complete").tolist() == [[1.0, 2.0, 1.0]]
    assert controls_to_weights(offsets, [AtManControl(1, 1, 0.0, unit="token")]).tolist() == [[1.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="factor"):
        AtManControl(0, 1, -1.0)


def test_granularities(tokenizer):
    text = "One two. Three!\n\nFour five; six"
    assert [text[s:e] for s, e in char_spans(text, "word")][:3] == ["One", "two.", "Three!"]
    assert [text[s:e] for s, e in char_spans(text, "sentence")] == ["One two.", "Three!", "Four five; six"]
    assert [text[s:e] for s, e in char_spans(text, "paragraph")] == ["One two. Three!", "Four five; six"]
    assert [text[s:e] for s, e in char_spans(text, ";")] == ["One two. Three!\n\nFour five;", "six"]
    exp = AtManExplainer(_model("llama"), tokenizer, progress=False, max_batch_size=8).explain(text, " x", granularity="sentence")
    assert [u.label for u in exp.units] == ["One two.", "Three!", "Four five; six"]
    assert sum(len(u.positions) for u in exp.units) == len(text) - 3  # every char token but the spaces/newlines between


@torch.no_grad()
def test_outputs_render_and_serialise(tokenizer, tmp_path):
    exp = AtManExplainer(_model("gpt2"), tokenizer, progress=False).explain("a <b> cat", " sat", granularity="word")
    html = exp.to_html()
    assert html.startswith("<!DOCTYPE html>") and "&lt;b&gt;" in html and "cat" in html
    fig = exp.plot(tmp_path / "x.png")
    assert (tmp_path / "x.png").stat().st_size > 1000 and fig is not None
    data = json.loads(json.dumps(exp.to_dict()))
    assert data["delta"] == exp.delta.tolist() and data["units"][1]["label"] == "<b>"
    assert exp.scores("square").tolist() == pytest.approx(exp.delta.square().sum(1).tolist())
    norm = exp.scores("absolute", normalize=True)
    assert norm.min() == pytest.approx(0) and norm.max() == pytest.approx(1, abs=1e-6)
    assert torch.equal(exp.scores(target_token=-1), exp.delta[:, -1])


def test_bad_input(tokenizer):
    model = _model("llama")
    ex = AtManExplainer(model, tokenizer, progress=False)
    with pytest.raises(ValueError, match="prompt must be a non-empty"):
        ex.explain("", "x")
    with pytest.raises(ValueError, match="target must be a non-empty"):
        ex.explain("x", "")
    with pytest.raises(ValueError, match="longer than the model's context of 128"):
        ex.explain("a" * 100, "b" * 40)
    for kwargs, match in [({"suppression_factor": 1.5}, r"suppression_factor must be .*\[0.0, 1.0\], got 1.5"),
                          ({"suppression_factor": -0.1}, "suppression_factor .*got -0.1"),
                          ({"conceptual_threshold": 2.0}, "conceptual_threshold .*got 2.0"),
                          ({"mode": "additive"}, "mode='additive'"), ({"max_batch_size": 0}, "max_batch_size .*got 0")]:
        with pytest.raises(ValueError, match=match):
            AtManExplainer(model, tokenizer, **kwargs)
    with pytest.raises(ValueError, match="empty"):
        ex.explain_ids([], [5])
    with pytest.raises(ValueError, match="postprocessing"):
        ex.explain("ab", "c").scores("cube")
    flash = tiny_causal_lm("llama")
    flash.config._attn_implementation_internal = "flash_attention_2"
    with pytest.raises(ValueError, match="set_attn_implementation\\('sdpa'\\)"):
        AtManExplainer(flash, tokenizer)


def test_model_restored_after_exception(tokenizer):
    model = _model("qwen2")
    ex = AtManExplainer(model, tokenizer, progress=False)
    with pytest.raises(ValueError):
        ex.explain_ids([1, 40, 41], [5], units=[__import__("hf_ext.atman", fromlist=["Unit"]).Unit("x", [99])])
    assert model.config._attn_implementation == "sdpa"
