"""Attention manipulation on five families against independent references.

References used:
* a naive per-(row, head, query) loop implementing the two formulas, plugged in through transformers'
  ``AttentionInterface`` under its own name (no hf_ext code on that path);
* transformers' own padding mask (weight 0 in log-additive mode == removing the key from ``attention_mask``);
* the unpadded single-row forward (left-padding invariance) and a no-cache greedy loop (generation).
"""

from __future__ import annotations

import math
import threading

import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from hf_ext.core.anatomy import get_anatomy
from hf_ext.core.attention import (
    attention_controls,
    items_to_key_positions,
    key_weights,
    spans_to_key_positions,
)
from hf_ext.core.inputs import position_ids_from_mask
from hf_ext.testing import tiny_causal_lm

MODES = ("log_additive", "multiplicative")
_NAIVE = {"weights": None, "mode": None, "layers": None}


def _naive_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Loop over batch rows, heads and query rows; ``attention_mask`` is transformers' 4D bool mask."""
    batch, heads, q_len, dim = query.shape
    groups = heads // key.shape[1]
    scaling = dim**-0.5 if scaling is None else scaling
    out = torch.zeros(batch, q_len, heads, dim)
    layer = get_anatomy_layer(module)
    controlled = _NAIVE["layers"] is None or layer in _NAIVE["layers"]
    k_len = key.shape[2]
    if attention_mask is None:  # sdpa_mask skips the mask for unpadded causal input
        attention_mask = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len).expand(batch, 1, q_len, k_len)
    for b in range(batch):
        for h in range(heads):
            k, v = key[b, h // groups], value[b, h // groups]
            for i in range(q_len):
                visible = [j for j in range(k_len) if bool(attention_mask[b, 0, i, j])]
                if not visible:  # a padding query row: its output is never read
                    continue
                s = torch.stack([query[b, h, i] @ k[j] * scaling for j in visible])
                if controlled:
                    w = torch.tensor([float(_NAIVE["weights"][b, j]) for j in visible])
                    if _NAIVE["mode"] == "multiplicative":
                        s = (s - s.min()) * w
                    elif _NAIVE["mode"] == "multiplicative_reference":  # min over all keys, future ones too
                        keys = [j for j in range(k_len) if bool(attention_mask[b, 0, :, j].any())]  # not padding
                        s_all = torch.stack([query[b, h, i] @ k[j] * scaling for j in keys])
                        s = (s - s_all.min()) * w
                    elif (w > 0).any():
                        s = s + torch.log(w)
                p = torch.softmax(s, dim=0)
                out[b, i, h] = sum(p[n] * v[j] for n, j in enumerate(visible))
    return out, None


_LAYER_OF = {}


def get_anatomy_layer(module):
    return _LAYER_OF[id(module)]


AttentionInterface.register("naive_test", _naive_attention)
AttentionMaskInterface.register("naive_test", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def _batch(tokenizer):
    enc = tokenizer(["hello there", "hey"], padding=True, return_tensors="pt")
    return enc.input_ids, enc.attention_mask, position_ids_from_mask(enc.attention_mask)


def _forward(model, ids, mask, pos):
    return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits


@pytest.fixture(scope="module")
def eager_models():
    return {}


def _model(family, impl, eager_models, causal_lm):
    if impl == "sdpa":
        return causal_lm
    if family not in eager_models:
        eager_models[family] = tiny_causal_lm(family, attn_implementation="eager")
    return eager_models[family]


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("mode", MODES)
@torch.no_grad()
def test_weights_of_one_equal_plain_model(family, causal_lm, tokenizer, eager_models, impl, mode):
    model = _model(family, impl, eager_models, causal_lm)
    ids, mask, pos = _batch(tokenizer)
    plain = _forward(model, ids, mask, pos)
    with attention_controls(model, torch.ones(ids.shape), mode=mode):
        controlled = _forward(model, ids, mask, pos)
    real = mask.bool()
    torch.testing.assert_close(controlled[real], plain[real], atol=2e-6, rtol=1e-5)
    assert model.config._attn_implementation == impl


@pytest.mark.parametrize("mode", [*MODES, "multiplicative_reference"])
@pytest.mark.parametrize("layers", [None, [1]])
@torch.no_grad()
def test_matches_naive_loop(family, causal_lm, tokenizer, mode, layers):
    ids, mask, pos = _batch(tokenizer)
    weights = key_weights(2, ids.shape[1], [[4, 7], [ids.shape[1] - 2]], [0.3, 2.5])
    weights[0, 5] = 0.0
    with attention_controls(causal_lm, weights, mode=mode, layers=layers):
        ours = _forward(causal_lm, ids, mask, pos)

    anatomy = get_anatomy(causal_lm)
    _LAYER_OF.update({id(a): i for i, a in enumerate(anatomy.attentions)})
    _NAIVE.update(weights=weights, mode=mode, layers=layers)
    original = causal_lm.config._attn_implementation
    causal_lm.set_attn_implementation("naive_test")
    try:
        reference = _forward(causal_lm, ids, mask, pos)
    finally:
        causal_lm.set_attn_implementation(original)
    real = mask.bool()
    torch.testing.assert_close(ours[real], reference[real], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_log_additive_zero_equals_key_masking(family, causal_lm, tokenizer):
    ids, mask, pos = _batch(tokenizer)
    k = ids.shape[1] - 4
    masked = mask.clone()
    masked[0, k] = 0
    reference = _forward(causal_lm, ids, masked, pos)  # transformers removes key k; positions unchanged
    with attention_controls(causal_lm, key_weights(2, ids.shape[1], [[k], []], 0.0)):
        ours = _forward(causal_lm, ids, mask, pos)
    rows = [i for i in range(ids.shape[1]) if i != k]
    torch.testing.assert_close(ours[0, rows], reference[0, rows], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@torch.no_grad()
def test_causality_rows_before_key_unchanged(family, causal_lm, mode):
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    plain = causal_lm(ids).logits
    for k in (2, 5):
        with attention_controls(causal_lm, key_weights(1, 8, [[k]], 0.05), mode=mode):
            out = causal_lm(ids).logits
        assert torch.equal(out[0, :k], plain[0, :k]) or torch.allclose(out[0, :k], plain[0, :k], atol=1e-6, rtol=0)
        assert (out[0, k:] - plain[0, k:]).abs().max() > 1e-4


@torch.no_grad()
def test_multiplicative_shifts_before_scaling_down(tokenizer):
    """w < 1 must lower the attention a key gets even where raw scores are negative (the BLIP-port bug)."""
    model = tiny_causal_lm("llama", attn_implementation="eager", seed=3)
    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    plain = model(ids, output_attentions=True).attentions
    with attention_controls(model, key_weights(1, 6, [[2]], 0.1), mode="multiplicative"):
        ours = model(ids, output_attentions=True).attentions
    for p, o in zip(plain, ours):
        # never raises the suppressed key's attention (it would where scores are negative without the shift) ...
        assert (o[..., 2:, 2] <= p[..., 2:, 2] + 1e-7).all()
        # ... and lowers it wherever key 2 is not already the row minimum (which the shift maps to 0 either way)
        assert (o[..., 3:, 2] < p[..., 3:, 2] - 1e-6).float().mean() > 0.5


@pytest.mark.parametrize("mode", MODES)
@torch.no_grad()
def test_left_padded_rows_equal_unpadded(family, causal_lm, tokenizer, mode):
    texts = ["hello there", "hey"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    pad = int((enc.attention_mask[1] == 0).sum())
    length = enc.input_ids.shape[1]
    with attention_controls(causal_lm, key_weights(2, length, [[3], [pad + 2]], 0.2), mode=mode):
        batched = _forward(causal_lm, enc.input_ids, enc.attention_mask, position_ids_from_mask(enc.attention_mask))
    single = tokenizer(texts[1], return_tensors="pt").input_ids
    with attention_controls(causal_lm, key_weights(1, single.shape[1], [[2]], 0.2), mode=mode):
        alone = causal_lm(single).logits
    torch.testing.assert_close(batched[1, pad:], alone[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_layer_subset(family, causal_lm):
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    plain = causal_lm(ids, output_hidden_states=True)
    with attention_controls(causal_lm, key_weights(1, 5, [[1]], 0.0), layers=[-1]):
        out = causal_lm(ids, output_hidden_states=True)
    assert torch.equal(out.hidden_states[1], plain.hidden_states[1])
    assert not torch.allclose(out.logits, plain.logits)


@torch.no_grad()
def test_generation_with_cache_equals_full_recompute(family, causal_lm):
    prompt = torch.tensor([[1, 40, 41, 42, 43]])
    weights = key_weights(1, 5, [[2, 3]], 0.0)
    with attention_controls(causal_lm, weights, mode="multiplicative"):
        generated = causal_lm.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4,
                                       do_sample=False, pad_token_id=0)
        seq = prompt
        for _ in range(4):  # no cache: every step recomputes the whole sequence under the same controls
            nxt = causal_lm(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert generated.shape[1] > prompt.shape[1]
    # generate() stops early at EOS; the loop does not
    assert torch.equal(generated, seq[:, : generated.shape[1]])


@torch.no_grad()
def test_nested_controls_compose(causal_lm):
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    w1, w2 = key_weights(1, 5, [[1]], 0.5), key_weights(1, 5, [[1, 3]], 0.25)
    with attention_controls(causal_lm, w1):
        with attention_controls(causal_lm, w2):
            nested = causal_lm(ids).logits
    with attention_controls(causal_lm, w1 * w2):
        single = causal_lm(ids).logits
    torch.testing.assert_close(nested, single, atol=1e-6, rtol=1e-6)


@torch.no_grad()
def test_restored_after_exception_and_invisible_to_other_threads(family, causal_lm):
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    plain = causal_lm(ids).logits
    impl = causal_lm.config._attn_implementation
    with pytest.raises(RuntimeError, match="boom"):
        with attention_controls(causal_lm, key_weights(1, 5, [[1]], 0.0)):
            raise RuntimeError("boom")
    assert causal_lm.config._attn_implementation == impl
    assert torch.equal(causal_lm(ids).logits, plain)

    inside, release, seen = threading.Event(), threading.Event(), {}

    def controlled():
        with attention_controls(causal_lm, key_weights(1, 5, [[1]], 0.0)):
            inside.set()
            release.wait(timeout=30)
            seen["controlled"] = causal_lm(ids).logits

    worker = threading.Thread(target=controlled)
    worker.start()
    assert inside.wait(timeout=30)
    seen["other"] = causal_lm(ids).logits
    release.set()
    worker.join()
    assert torch.equal(seen["other"], plain)
    assert not torch.allclose(seen["controlled"], plain)
    assert causal_lm.config._attn_implementation == impl


def test_bad_input(causal_lm):
    with pytest.raises(ValueError, match="mode='cubic'"):
        with attention_controls(causal_lm, torch.ones(1, 3), mode="cubic"):
            pass
    with pytest.raises(ValueError, match="finite and >= 0"):
        with attention_controls(causal_lm, torch.tensor([[1.0, -1.0]])):
            pass
    with pytest.raises(ValueError, match="finite and >= 0"):
        with attention_controls(causal_lm, torch.tensor([[1.0, math.nan]])):
            pass
    with pytest.raises(ValueError, match="shape"):
        with attention_controls(causal_lm, torch.ones(1, 2, 3)):
            pass
    with pytest.raises(ValueError, match="out of range"):
        with attention_controls(causal_lm, torch.ones(1, 3), layers=[7]):
            pass
    with pytest.raises(ValueError, match="3 rows but the batch has 2"):
        with attention_controls(causal_lm, torch.ones(3, 4)), torch.no_grad():
            causal_lm(torch.tensor([[1, 40, 41, 42], [1, 40, 41, 42]]))
    assert causal_lm.config._attn_implementation == "sdpa"


def test_flash_implementation_rejected():
    model = tiny_causal_lm("llama")
    model.config._attn_implementation_internal = "flash_attention_2"
    with pytest.raises(ValueError, match="set_attn_implementation\\('sdpa'\\)"):
        with attention_controls(model, torch.ones(1, 3)):
            pass
    assert model.config._attn_implementation == "flash_attention_2"


def test_spans_to_key_positions(tokenizer):
    texts = ["the cat sat", "a dog"]
    enc = tokenizer(texts, padding=True, return_offsets_mapping=True, return_tensors="pt")
    spans = [[(4, 7)], [(2, 5)]]  # "cat", "dog"
    positions = spans_to_key_positions(enc.offset_mapping, spans)
    for row, (text, pos) in enumerate(zip(texts, positions)):
        decoded = tokenizer.decode(enc.input_ids[row, pos])
        assert decoded == text[spans[row][0][0]:spans[row][0][1]]
    shared = spans_to_key_positions(enc.offset_mapping[0], [(0, 3)])
    assert tokenizer.decode(enc.input_ids[0, shared[0]]) == "the"
    with pytest.raises(ValueError, match="character span"):
        spans_to_key_positions(enc.offset_mapping[0], [(5, 2)])


def test_items_and_key_weights():
    assert items_to_key_positions([1, 3, 2], [0, 2], offset=2).tolist() == [2, 6, 7]
    with pytest.raises(ValueError, match="out of range"):
        items_to_key_positions([1, 3], [2])
    w = key_weights(2, 5, [[0, 4], [1]], [0.0, 3.0])
    assert w.tolist() == [[0.0, 1.0, 1.0, 1.0, 0.0], [1.0, 3.0, 1.0, 1.0, 1.0]]
    with pytest.raises(ValueError, match="outside"):
        key_weights(1, 3, [[3]], 0.5)


@torch.no_grad()
def test_vlm_language_model_is_controlled():
    """Llava: anatomy finds the language model; weight 0 on the image tokens == masking them out."""
    from hf_ext.testing import LLAVA_IMAGE_TOKEN_ID, tiny_llava, tiny_llava_inputs

    model, _ = tiny_llava(with_processor=False)
    anatomy = get_anatomy(model)
    assert anatomy.layers is model.get_submodule("model.language_model.layers")
    inputs = tiny_llava_inputs(model)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    pos = position_ids_from_mask(mask)
    image = (ids[0] == LLAVA_IMAGE_TOKEN_ID).nonzero().flatten()
    plain = model(**inputs, position_ids=pos).logits
    with attention_controls(model, torch.ones(ids.shape)):
        torch.testing.assert_close(model(**inputs, position_ids=pos).logits, plain, atol=1e-6, rtol=1e-5)
    masked = mask.clone()
    masked[:, image] = 0
    reference = model(input_ids=ids, pixel_values=inputs["pixel_values"], attention_mask=masked, position_ids=pos).logits
    with attention_controls(model, key_weights(ids.shape[0], ids.shape[1], [image], 0.0)):
        ours = model(**inputs, position_ids=pos).logits
    after = int(image.max()) + 1
    torch.testing.assert_close(ours[:, after:], reference[:, after:], atol=1e-5, rtol=1e-5)
    assert model.config.text_config._attn_implementation == "sdpa"


@pytest.mark.parametrize("mode", MODES)
def test_gradients_flow_like_plain_model(mode):
    """Weights of 1 give the plain model's gradients (the controlled path is differentiable)."""
    model = tiny_causal_lm("qwen2", seed=2)
    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    model(ids).logits.square().mean().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with attention_controls(model, torch.ones(1, 6), mode=mode):
        model(ids).logits.square().mean().backward()
    for p, g in zip(model.parameters(), plain):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-4)


@torch.no_grad()
def test_reference_variant_is_not_causal(causal_lm):
    """Under the reference's min over all keys, appending tokens changes earlier rows; under ours it does not."""
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    w = key_weights(1, 8, [[2]], 0.1)
    outs = {}
    for mode in ("multiplicative_reference", "multiplicative"):
        with attention_controls(causal_lm, w, mode=mode):
            outs[mode] = (causal_lm(ids[:, :5]).logits, causal_lm(ids).logits[:, :5])
    short, long = outs["multiplicative_reference"]
    assert not torch.allclose(short, long, atol=1e-6)
    short, long = outs["multiplicative"]
    torch.testing.assert_close(short, long, atol=1e-6, rtol=1e-5)


def test_module_bypassing_the_attention_interface_is_refused():
    """A controlled attention that computes attention its own way would ignore the weights: a clear error instead."""
    model = tiny_causal_lm("llama")
    attn = model.model.layers[0].self_attn

    def own_attention(hidden_states, *args, **kwargs):  # never calls transformers' AttentionInterface
        return attn.o_proj(attn.v_proj(hidden_states).repeat(1, 1, 2)), None

    attn.forward = own_attention
    try:
        with pytest.raises(NotImplementedError, match=r"'llama' \(LlamaForCausalLM\): decoder layer 0's LlamaAttention"):
            with attention_controls(model, torch.ones(1, 4)):
                model(torch.tensor([[1, 5, 6, 7]]))
        with attention_controls(model, torch.ones(1, 4), layers=[1]):  # layer 1 dispatches normally
            model(torch.tensor([[1, 5, 6, 7]]))
    finally:
        del attn.forward


def test_nested_controls_guard_every_block_and_segments_count_as_dispatch():
    """Nested blocks each keep their guard (an outer block's layer that bypasses the interface is refused inside an
    inner block too), and a call taken by another router (a segment plan) counts as dispatched."""
    from transformers import DynamicCache

    from hf_ext.core.cache import cache_argument
    from hf_ext.core.segments import Segment, SegmentPlan, layer_map, segment_attention

    model = tiny_causal_lm("llama")
    ids = torch.tensor([[1, 5, 6, 7]])
    with attention_controls(model, torch.ones(1, 4), layers=[0]), attention_controls(model, torch.ones(1, 4), layers=[1]):
        torch.testing.assert_close(model(ids).logits, tiny_causal_lm("llama")(ids).logits)
    cache = DynamicCache()
    model(input_ids=ids, use_cache=True, **{cache_argument(model): cache})
    bias = torch.zeros(1, 1, 2, 4).masked_fill(torch.tensor([[True, True, True, False], [True] * 4]).logical_not(),
                                               torch.finfo(torch.float32).min)
    with attention_controls(model, torch.ones(1, 4)), \
            segment_attention(model, SegmentPlan(cache, [Segment(row=0, offset=0, start=2, bias=bias)], layer_map(model))):
        packed = model(input_ids=ids[:, 2:], position_ids=torch.tensor([[2, 3]]), use_cache=False).logits
    torch.testing.assert_close(packed, model(ids).logits[:, 2:], atol=1e-5, rtol=1e-5)

    attn = model.model.layers[0].self_attn

    def own_attention(hidden_states, *args, **kwargs):  # never calls transformers' AttentionInterface
        return attn.o_proj(attn.v_proj(hidden_states).repeat(1, 1, 2)), None

    attn.forward = own_attention
    try:
        with attention_controls(model, torch.ones(1, 4), layers=[0]):
            with pytest.raises(NotImplementedError, match="decoder layer 0's LlamaAttention"):
                with attention_controls(model, torch.ones(1, 4), layers=[1]):
                    model(ids)
    finally:
        del attn.forward
