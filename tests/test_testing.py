"""Tests of the tiny CLIP / Stable Diffusion / SDXL / Llava factories of ``hf_ext.testing`` (CPU, offline)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from hf_ext.testing import (
    BOS_ID,
    CLIP_BOS_ID,
    CLIP_EOS_ID,
    LLAVA_IMAGE_TOKEN_ID,
    TINY_VOCAB_SIZE,
    tiny_clip_tokenizer,
    tiny_clip_vocab,
    tiny_llava,
    tiny_llava_inputs,
    tiny_sd_components,
    tiny_sdxl_components,
)

PROMPT = "a photo of a cat"


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _run(pipe, seed: int = 0, prompt: str = PROMPT) -> np.ndarray:
    return pipe(prompt, num_inference_steps=2, generator=torch.Generator().manual_seed(seed), output_type="np").images


# --------------------------------------------------------------------------------------------- CLIP tokenizer


@pytest.fixture(scope="module")
def clip_tok():
    return tiny_clip_tokenizer(max_length=16)


def test_clip_tokenizer_encodes_words_within_vocab(clip_tok):
    vocab, _ = tiny_clip_vocab()
    assert len(vocab) <= 1000 and len(clip_tok) == len(vocab)
    ids = clip_tok(PROMPT).input_ids
    # Independent reference: the word tokens looked up in the generated vocab by hand.
    expected = [vocab[t] for t in ("<|startoftext|>", "a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>", "<|endoftext|>")]
    assert ids == expected
    assert ids[0] == CLIP_BOS_ID and ids[-1] == CLIP_EOS_ID
    assert clip_tok.decode(ids, skip_special_tokens=True) == PROMPT
    # Unmerged words, upper case, digits and non-ASCII fall back to byte-level characters inside the vocab.
    other = clip_tok("Zebra-crossing 42 in Köln!").input_ids
    assert all(0 <= i < len(vocab) for i in other) and vocab["<|endoftext|>"] not in other[:-1]


def test_clip_tokenizer_pads_and_truncates(clip_tok):
    padded = clip_tok(PROMPT, padding="max_length", truncation=True, max_length=clip_tok.model_max_length)
    assert clip_tok.model_max_length == 16
    assert len(padded.input_ids) == 16 and padded.input_ids[7:] == [CLIP_EOS_ID] * 9
    assert padded.attention_mask == [1] * 7 + [0] * 9
    long = clip_tok(" ".join(["dog"] * 40), padding="max_length", truncation=True, max_length=16).input_ids
    assert len(long) == 16 and long[0] == CLIP_BOS_ID and long[-1] == CLIP_EOS_ID


def test_clip_tokenizer_save_load_round_trip(clip_tok, tmp_path):
    from transformers import AutoTokenizer, CLIPTokenizer

    clip_tok.save_pretrained(tmp_path)
    for loaded in (CLIPTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert isinstance(loaded, CLIPTokenizer) and loaded.model_max_length == 16
        for text in (PROMPT, "Zebra-crossing 42 in Köln!"):
            assert loaded(text, padding="max_length", truncation=True).input_ids == \
                clip_tok(text, padding="max_length", truncation=True).input_ids


# --------------------------------------------------------------------------------------------- Stable Diffusion 1.x


@pytest.fixture(scope="module")
def sd_pipe():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**tiny_sd_components(seed=0), requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sd_components_keys_and_seeded_weights(sd_pipe):
    comps = tiny_sd_components(seed=0)
    assert set(comps) == {"unet", "vae", "text_encoder", "tokenizer", "scheduler", "safety_checker",
                          "feature_extractor", "image_encoder"}
    assert comps["safety_checker"] is comps["feature_extractor"] is comps["image_encoder"] is None
    for name in ("unet", "vae", "text_encoder"):
        assert _state_equal(comps[name], getattr(sd_pipe, name)), name
        assert not comps[name].training and next(comps[name].parameters()).dtype == torch.float32
    other = tiny_sd_components(seed=1)
    for name in ("unet", "vae", "text_encoder"):
        assert not _state_equal(other[name], comps[name]), name
    assert comps["text_encoder"].config.vocab_size == len(comps["tokenizer"])


def test_sd_pipeline_runs_and_is_deterministic(sd_pipe):
    image = _run(sd_pipe, seed=0)
    assert image.shape == (1, 32, 32, 3) and image.dtype == np.float32
    assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0
    np.testing.assert_array_equal(_run(sd_pipe, seed=0), image)
    assert np.abs(_run(sd_pipe, seed=1) - image).max() > 1e-4
    # The text conditioning reaches the image.
    assert np.abs(_run(sd_pipe, seed=0, prompt="the dog") - image).max() > 1e-6


def test_sd_pipeline_save_load_round_trip(sd_pipe, tmp_path):
    from diffusers import StableDiffusionPipeline

    sd_pipe.save_pretrained(tmp_path)
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path, safety_checker=None, feature_extractor=None,
                                                     requires_safety_checker=False)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.tokenizer) is type(sd_pipe.tokenizer)
    np.testing.assert_array_equal(_run(loaded, seed=0), _run(sd_pipe, seed=0))


# --------------------------------------------------------------------------------------------- SDXL


@pytest.fixture(scope="module")
def sdxl_pipe():
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(**tiny_sdxl_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sdxl_components_are_consistent(sdxl_pipe):
    unet, te2 = sdxl_pipe.unet, sdxl_pipe.text_encoder_2
    assert unet.config.addition_embed_type == "text_time"
    assert unet.config.cross_attention_dim == sdxl_pipe.text_encoder.config.hidden_size + te2.config.hidden_size
    assert unet.add_embedding.linear_1.in_features == 6 * unet.config.addition_time_embed_dim + te2.config.projection_dim
    assert sdxl_pipe.image_encoder is None and sdxl_pipe.feature_extractor is None


def test_sdxl_pipeline_runs_and_is_deterministic(sdxl_pipe):
    image = _run(sdxl_pipe, seed=0)
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()
    np.testing.assert_array_equal(_run(sdxl_pipe, seed=0), image)
    assert np.abs(_run(sdxl_pipe, seed=1) - image).max() > 1e-4
    fresh = tiny_sdxl_components(seed=0)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert _state_equal(fresh[name], getattr(sdxl_pipe, name)), name


# --------------------------------------------------------------------------------------------- Llava


@pytest.fixture(scope="module")
def llava():
    return tiny_llava(seed=0)


def test_llava_forward_shape_and_text_config(llava):
    model, _ = llava
    inputs = tiny_llava_inputs(model, batch=2, text_len=5)
    n_img = (inputs["input_ids"] == LLAVA_IMAGE_TOKEN_ID).sum(dim=1)
    assert n_img.tolist() == [16, 16] and inputs["input_ids"][:, 0].eq(BOS_ID).all()
    assert inputs["pixel_values"].shape == (2, 3, 32, 32)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (2, 1 + 16 + 5, TINY_VOCAB_SIZE) and torch.isfinite(logits).all()
    text_config = model.config.get_text_config()
    assert text_config.model_type == "llama" and text_config.num_hidden_layers == 2
    assert 0 <= model.config.image_token_id < text_config.vocab_size


def test_llava_image_changes_text_positions(llava):
    model, _ = llava
    inputs = tiny_llava_inputs(model, batch=1, text_len=3)
    with torch.no_grad():
        a = model(**inputs).logits
        b = model(**{**inputs, "pixel_values": inputs["pixel_values"] + 1.0}).logits
    assert torch.equal(a[:, 0], b[:, 0])  # causal: BOS precedes the image
    assert (a[:, -1] - b[:, -1]).abs().max() > 1e-6


def test_llava_greedy_generate_matches_naive_argmax_loop(llava):
    model, _ = llava
    inputs = tiny_llava_inputs(model, batch=2, text_len=5, seed=3)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        ids = inputs["input_ids"]
        for _ in range(3):  # independent reference: full forward each step, argmax of the last logits
            logits = model(input_ids=ids, pixel_values=inputs["pixel_values"],
                           attention_mask=torch.ones_like(ids)).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 3)
    assert torch.equal(out, ids)


def test_llava_seeded_weights():
    a, _ = tiny_llava(seed=0, with_processor=False)
    b, _ = tiny_llava(seed=0, with_processor=False)
    c, _ = tiny_llava(seed=1, with_processor=False)
    assert _state_equal(a, b) and not _state_equal(a, c)
    assert not a.training and next(a.parameters()).dtype == torch.float32


def test_llava_full_strategy_and_processor():
    from PIL import Image

    model, processor = tiny_llava(seed=0, vision_feature_select_strategy="full")
    inputs = tiny_llava_inputs(model, batch=1, text_len=2)
    assert (inputs["input_ids"] == LLAVA_IMAGE_TOKEN_ID).sum() == 17
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    enc = processor(text=["<image>hi there", "<image>x"], images=[image, image], return_tensors="pt", padding=True)
    assert enc["pixel_values"].shape == (2, 3, 32, 32)
    assert (enc["input_ids"] == LLAVA_IMAGE_TOKEN_ID).sum(dim=1).tolist() == [17, 17]
    with torch.no_grad():
        assert model(**enc).logits.shape == (*enc["input_ids"].shape, TINY_VOCAB_SIZE)


# --------------------------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors(llava):
    model, _ = llava
    with pytest.raises(ValueError, match="vision_feature_select_strategy 'patches'.*default"):
        tiny_llava(vision_feature_select_strategy="patches")
    with pytest.raises(ValueError, match=r"max_length must be in \[2, 77\]"):
        tiny_clip_tokenizer(max_length=1)
    with pytest.raises(ValueError, match="max_length"):
        tiny_sd_components(max_length=100)
    with pytest.raises(TypeError, match="seed must be an int"):
        tiny_sdxl_components(seed="0")
    with pytest.raises(ValueError, match="batch must be a positive int, got 0"):
        tiny_llava_inputs(model, batch=0)
    with pytest.raises(ValueError, match="text_len"):
        tiny_llava_inputs(model, text_len=-1)
    with pytest.raises(TypeError, match="needs a Llava model"):
        tiny_llava_inputs(torch.nn.Linear(2, 2))


def test_missing_diffusers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` raise ImportError
    with pytest.raises(ImportError, match=r"hf-ext\[diffusion\]"):
        tiny_sd_components()
    with pytest.raises(ImportError, match=r"hf-ext\[diffusion\]"):
        tiny_sdxl_components()
