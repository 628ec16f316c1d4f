"""Interleaved encoder: layout oracle (concatenation in order), library parity, weighting, causality, bad input."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from hf_ext.diffusion.multifusion import InterleavedEncoder, normalize_prompts
from hf_ext.testing import tiny_causal_lm, tiny_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _capture_embeds(module):
    """Forward pre-hook recording the ``inputs_embeds`` the language model receives."""
    seen = {}

    def hook(mod, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"].detach().clone()

    return seen, module.register_forward_pre_hook(hook, with_kwargs=True)


def _tok_ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def test_magma_input_embeddings_are_the_parts_concatenated_in_order(magma_encoder, red_image, noise_image):
    enc = magma_encoder
    model, tok = enc.model, enc.tokenizer
    items = ["a photo of", red_image, " and ", noise_image, "zz"]
    seen, handle = _capture_embeds(model.language_model)
    try:
        enc.encode(items)
    finally:
        handle.remove()
    emb = model.language_model.get_input_embeddings()
    pixel = enc.image_processor(images=[red_image, noise_image.convert("RGB")], return_tensors="pt")["pixel_values"]
    prefix = model.image_prefix(pixel)  # independent: the prefix module applied to each image on its own
    parts = [emb(torch.tensor([tok.bos_token_id]))]
    img_i = 0
    for item in items:
        if isinstance(item, str):
            parts.append(emb(torch.tensor(_tok_ids(tok, item))))
        else:
            parts.append(prefix[img_i])
            img_i += 1
    reference = torch.cat(parts).unsqueeze(0)
    assert seen["embeds"].shape == reference.shape == (1, 1 + 10 + 16 + 5 + 16 + 2, enc.hidden_size)
    torch.testing.assert_close(seen["embeds"], reference, rtol=0, atol=0)
    # embed() (the inspection helper) agrees with what the LM received
    torch.testing.assert_close(enc.embed(items)[0], reference, rtol=0, atol=0)


@torch.no_grad()
def test_llava_matches_the_library_forward_with_processor_placeholders(llava, llava_encoder, red_image):
    """Independent reference: LlavaProcessor expands '<image>' and LlavaModel scatters the image features."""
    model, processor = llava
    ours = llava_encoder.encode(["a cat ", red_image, " on a mat"])
    inputs = processor(text="a cat <image> on a mat", images=[red_image], return_tensors="pt")
    ref = model.model(**inputs, output_hidden_states=True)
    assert ours.hidden_states.shape == ref.last_hidden_state.shape
    torch.testing.assert_close(ours.hidden_states, ref.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(llava_encoder.encode(["a cat ", red_image, " on a mat"], layer=1).hidden_states,
                               ref.hidden_states[1], rtol=1e-5, atol=1e-5)
    assert ours.item_kinds == [["text", "image", "text"]]
    assert ours.item_spans == [[(1, 7), (7, 23), (23, 32)]]


@torch.no_grad()
def test_order_matters_and_encoding_is_deterministic(magma_encoder, red_image):
    a = magma_encoder.encode([red_image, "a green apple"]).hidden_states
    b = magma_encoder.encode(["a green apple", red_image]).hidden_states
    again = magma_encoder.encode([red_image, "a green apple"]).hidden_states
    assert a.shape == b.shape and not torch.allclose(a, b, atol=1e-4)
    assert torch.equal(a, again)


@torch.no_grad()
@pytest.mark.parametrize("weight_mode", ["log_additive", "multiplicative"])
def test_all_weights_one_is_bit_identical_to_unweighted(magma_encoder, red_image, weight_mode):
    enc = InterleavedEncoder(magma_encoder.model, magma_encoder.tokenizer, magma_encoder.image_processor,
                             weight_mode=weight_mode)
    prompts = [[red_image, "a green apple"], ["xy", red_image, "z"]]
    plain = enc.encode(prompts)
    ones = enc.encode(prompts, weights=[[1.0, 1.0], [1.0, 1.0, 1.0]])
    mask = plain.attention_mask.bool()
    if weight_mode == "log_additive":  # same sdpa kernel, zero bias: bit-identical
        assert torch.equal(plain.hidden_states[mask], ones.hidden_states[mask])
    else:  # a different (eager, shifted-score) formula: equal up to rounding
        torch.testing.assert_close(plain.hidden_states[mask], ones.hidden_states[mask], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_llava_weights_one_identical_and_vision_tower_untouched(llava, llava_encoder, red_image):
    model, _ = llava
    outs = []
    handle = model.model.vision_tower.register_forward_hook(lambda m, a, o: outs.append(o.last_hidden_state.clone()))
    try:
        plain = llava_encoder.encode([red_image, "a green apple"])
        ones = llava_encoder.encode([red_image, "a green apple"], weights=[1.0, 1.0])
        weighted = llava_encoder.encode([red_image, "a green apple"], weights=[1.0, 20.0])
    finally:
        handle.remove()
    assert torch.equal(plain.hidden_states, ones.hidden_states)
    assert not torch.allclose(plain.hidden_states, weighted.hidden_states, atol=1e-4)
    assert len(outs) == 3 and torch.equal(outs[0], outs[2])  # weighting never reaches the vision tower


@torch.no_grad()
def test_weighting_preserves_causality(magma_encoder, red_image):
    items = ["ab", red_image, "cdef"]
    plain = magma_encoder.encode(items)
    start, end = plain.item_spans[0][1]
    weighted = magma_encoder.encode(items, weights=[1.0, 0.1, 1.0])
    h0, h1 = plain.hidden_states[0], weighted.hidden_states[0]
    assert torch.equal(h0[:start], h1[:start])  # positions before the image cannot see it
    assert not torch.allclose(h0[end:], h1[end:], atol=1e-5)  # later positions do


@torch.no_grad()
def test_weight_zero_equals_removing_the_item_from_attention(magma_encoder, red_image):
    """Independent reference: run the LM on the sequence without the item, positions of the others kept."""
    enc = magma_encoder
    items = ["ab", red_image, "cdef"]
    out = enc.encode(items, weights=[1.0, 0.0, 1.0])
    start, end = out.item_spans[0][1]
    embeds, _ = enc.embed(items)
    keep = torch.cat([torch.arange(0, start), torch.arange(end, embeds.shape[1])])
    ref = enc.model.language_model(inputs_embeds=embeds[:, keep], position_ids=keep.unsqueeze(0),
                                   attention_mask=torch.ones(1, keep.numel(), dtype=torch.long))
    torch.testing.assert_close(out.hidden_states[0, keep], ref.last_hidden_state[0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_padding_mask_and_rows_match_single_encodings(magma_encoder, red_image):
    batch = magma_encoder.encode([["a long caption here"], [red_image, "x"]])
    for row, prompt in enumerate([["a long caption here"], [red_image, "x"]]):
        alone = magma_encoder.encode(prompt)
        n = alone.hidden_states.shape[1]
        assert batch.attention_mask[row].tolist() == [1] * n + [0] * (batch.hidden_states.shape[1] - n)
        torch.testing.assert_close(batch.hidden_states[row, :n], alone.hidden_states[0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_layer_selection(red_image):
    from hf_ext.diffusion.multifusion.tiny import tiny_image_processor, tiny_magma_encoder

    model = tiny_magma_encoder("llama", adapter_downsample=None)
    enc = InterleavedEncoder(model, tiny_tokenizer(), tiny_image_processor())
    embeds, _ = enc.embed(["hi", red_image])
    torch.testing.assert_close(enc.encode(["hi", red_image], layer=0).hidden_states, embeds, rtol=0, atol=0)
    last = enc.encode(["hi", red_image]).hidden_states
    assert not torch.allclose(last, enc.encode(["hi", red_image], layer=1).hidden_states)
    with pytest.raises(ValueError, match="layer must be an int in \\[-3, 2\\], got 5"):
        enc.encode(["hi"], layer=5)


@torch.no_grad()
def test_text_only_causal_lm_encoder_and_non_ascii():
    for family in ("llama", "gpt2", "qwen2"):
        enc = InterleavedEncoder(tiny_causal_lm(family), tiny_tokenizer())
        out = enc.encode(["ein grüner Apfel", " と "])
        assert out.hidden_states.shape[0] == 1 and torch.isfinite(out.hidden_states).all()


@torch.no_grad()
def test_adapters_start_near_identity_and_change_outputs():
    from hf_ext.diffusion.multifusion.tiny import tiny_magma_encoder

    plain = tiny_magma_encoder("gpt2", adapter_downsample=None)
    adapted = tiny_magma_encoder("gpt2", adapter_location="both")
    assert len(adapted.mlp_adapters) == len(adapted.attn_adapters) == 2
    for a in [*adapted.mlp_adapters, *adapted.attn_adapters]:
        assert a.down.weight.abs().max() <= 2e-3 and a.up.weight.abs().max() <= 2e-3
    ids = torch.tensor([[1, 40, 41, 42]])
    h0 = plain(input_ids=ids).last_hidden_state
    h1 = adapted(input_ids=ids).last_hidden_state
    assert not torch.equal(h0, h1) and torch.allclose(h0, h1, atol=1e-2)
    with torch.no_grad():
        adapted.mlp_adapters[0].up.bias.copy_(torch.linspace(-1, 1, 64))  # the hook really routes through it
    assert not torch.allclose(adapted(input_ids=ids).last_hidden_state, h1, atol=1e-3)


@torch.no_grad()
def test_magma_encoder_save_load_round_trip(tmp_path, red_image):
    from hf_ext.diffusion.multifusion import MagmaEncoder
    from hf_ext.diffusion.multifusion.tiny import tiny_image_processor, tiny_magma_encoder

    model = tiny_magma_encoder("gpt_neox", adapter_location="both")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    again = MagmaEncoder.from_pretrained(tmp_path).eval()
    a = InterleavedEncoder(model, tiny_tokenizer(), tiny_image_processor()).encode(["hi", red_image]).hidden_states
    b = InterleavedEncoder(again, tiny_tokenizer(), tiny_image_processor()).encode(["hi", red_image]).hidden_states
    assert torch.equal(a, b)


def test_normalize_prompts_forms():
    img = Image.new("RGB", (8, 8))
    assert normalize_prompts("x") == ([["x"]], None)
    rows, w = normalize_prompts([[img, ("t", 20.0)], ["u"]])
    assert rows == [[img, "t"], ["u"]] and w == [[1.0, 20.0], [1.0]]
    assert normalize_prompts(["a", "b"], weights=[1, 2]) == ([["a", "b"]], [[1.0, 2.0]])


@pytest.mark.parametrize("prompt, weights, exc, match", [
    ([], None, ValueError, "empty"),
    ([["a"], []], None, ValueError, "prompt 1 has no items"),
    (["a", 3], None, TypeError, "unsupported type int"),
    (["a", "b"], [1.0], ValueError, "2 items but 1 weights"),
    (["a"], [-1.0], ValueError, r"weights\[0\]\[0\] must be a finite number >= 0, got -1.0"),
    ([("a", 2.0)], [1.0], ValueError, "not both"),
    (42, None, TypeError, "prompt must be"),
])
def test_bad_prompts(prompt, weights, exc, match):
    with pytest.raises(exc, match=match):
        normalize_prompts(prompt, weights)


def test_image_without_an_image_encoder_is_a_clear_error(red_image, llava):
    enc = InterleavedEncoder(tiny_causal_lm("gpt2"), tiny_tokenizer())
    with pytest.raises(ValueError, match="no(?:t| image encoder).*image|image encoder"):
        enc.encode(["a", red_image])
    model, processor = llava
    no_proc = InterleavedEncoder(model, processor.tokenizer, None)
    with pytest.raises(ValueError, match="no image_processor"):
        no_proc.encode([red_image])
    with pytest.raises(ValueError, match="weight_mode"):
        InterleavedEncoder(model, processor.tokenizer, weight_mode="bogus")
