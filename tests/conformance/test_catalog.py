"""The catalog's and shrinker's mechanisms for multimodal types (issue 17): multimodal-rope sections that fit the
tiny rotary size, the causal LM a VLM wraps, and types that are no language model. Runs in the core tier."""

from __future__ import annotations

import pytest
import torch
import transformers
from packaging.version import Version

from .catalog import build, exclusion, require_type, text_ids, wrapped_language_model
from .shrink import _scaled_sections, shrink_config


@pytest.mark.parametrize(("sections", "target", "expected"), [
    ([16, 24, 24], 8, [2, 3, 3]),  # Qwen2-VL: the remainder (none) would go to the unique first section
    ([22, 22, 20], 8, [2, 2, 4]),  # Ernie-4.5-VL stacks h and w: they stay equal, t takes the remainder
    ([8, 12, 12], 4, [2, 1, 1]),  # GLM-4V at partial_rotary_factor 0.5
])
def test_scaled_sections_sum_to_the_target_and_keep_equal_sections_equal(sections, target, expected):
    out = _scaled_sections(sections, target)
    assert out == expected and sum(out) == target
    assert all(out[i] == out[j] for i in range(3) for j in range(3) if sections[i] == sections[j])


@pytest.mark.parametrize(("config_cls", "model_cls"), [
    (transformers.Glm4vMoeConfig, transformers.Glm4vMoeForConditionalGeneration),  # partial rotary factor 0.5
    (transformers.Ernie4_5_VLMoeConfig, transformers.Ernie4_5_VLMoeForConditionalGeneration),  # sections not in config
])
@torch.no_grad()
def test_tiny_multimodal_rope_runs_and_counts_positions_like_plain_rope(config_cls, model_cls):
    """Text-only, all three rope axes carry the same position: the logits depend on the positions (rope is
    applied) and the explicit 0-based positions equal the model's own."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_cls(shrink_config(config_cls)).eval()
    ids = text_ids(1, 6)
    own = model(input_ids=ids, use_cache=False).logits
    count = torch.arange(6)[None]
    torch.testing.assert_close(model(input_ids=ids, position_ids=count, use_cache=False).logits, own)
    gap = count + (count == 5) * 3
    assert (model(input_ids=ids, position_ids=gap, use_cache=False).logits[0, -1] - own[0, -1]).abs().max() > 1e-5


@pytest.mark.parametrize(("model_type", "name", "cls"), [
    ("blip-2", "language_model", "OPTForCausalLM"), ("kosmos-2", "text_model", "Kosmos2TextForCausalLM")])
@torch.no_grad()
def test_wrapped_language_model_is_the_vlms_causal_lm(model_type, name, cls):
    vlm = build(model_type)
    found, lm = wrapped_language_model(vlm)
    assert (found, type(lm).__name__) == (name, cls) and lm is vlm.get_submodule(name)
    # the VLM itself needs an image; its language model reads text alone and is the one the VLM generates with
    with pytest.raises((TypeError, ValueError)):
        vlm(input_ids=text_ids(1, 4))
    assert lm.get_output_embeddings() is not None


def test_a_vlm_whose_layers_read_the_image_has_no_wrapped_language_model():
    assert wrapped_language_model(build("idefics")) is None  # gated cross-attention inside the language layers


def test_types_without_an_lm_head_that_cannot_generate_are_excluded():
    for model_type in ("pi0", "pi05"):
        require_type(model_type)
        assert exclusion(model_type).startswith("not a language model")
    assert exclusion("llama") is None


def test_an_encoder_decoder_by_structure_is_excluded_and_blip2_is_not():
    # DiffusionGemma's config does not say is_encoder_decoder, but its base holds an encoder and a decoder stack
    # and its forward takes decoder_input_ids; BLIP-2's forward takes decoder_input_ids (for T5 language models)
    # yet its base holds no such pair
    require_type("diffusion_gemma")
    if Version(transformers.__version__) < Version("5.25"):  # the encoder/decoder layout is 5.25's (5.17's does not build)
        pytest.skip(f"DiffusionGemma's structure differs on transformers {transformers.__version__}")
    assert exclusion("diffusion_gemma").startswith("encoder-decoder")
    for model_type in ("blip-2", "instructblip", "gemma3", "llama"):
        assert exclusion(model_type) is None
