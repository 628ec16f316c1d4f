"""SafeLatentDiffusionXLPipeline: SLD off equals diffusers' StableDiffusionXLPipeline; batching; concepts; loading."""

from __future__ import annotations

import pytest
import torch

from hf_ext.diffusion.sld import SafeLatentDiffusionXLPipeline, SLDConfig

from .conftest import BatchRecorder, gen

STEPS = 3


@pytest.fixture(scope="module")
def xl_pipe(sdxl_components):
    pipe = SafeLatentDiffusionXLPipeline(**sdxl_components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sld_off_equals_sdxl_pipeline(sdxl_components, xl_pipe):
    from diffusers import StableDiffusionXLPipeline

    plain = StableDiffusionXLPipeline(**sdxl_components)
    plain.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=STEPS, output_type="latent", num_images_per_prompt=2)
    ref = plain(["a cat", "a dog"], generator=gen(0), **kw).images
    ours = xl_pipe(["a cat", "a dog"], generator=gen(0), sld_guidance_scale=0, **kw)
    assert torch.equal(ours.images, ref) and ours.applied_safety_concept is None
    # images too (same decode path)
    a = plain("a cat", generator=gen(0), num_inference_steps=STEPS, output_type="np").images
    b = xl_pipe("a cat", generator=gen(0), num_inference_steps=STEPS, output_type="np", sld_preset="off").images
    assert (a == b).all()
    # SLD on changes the result
    on = xl_pipe(["a cat", "a dog"], generator=gen(0), sld_preset="max", **kw).images
    assert (on - ref).abs().max() > 1e-3


def test_one_call_per_step_with_concept_conditioning(xl_pipe):
    with BatchRecorder(xl_pipe.unet) as rec:
        out = xl_pipe(["a cat", "a dog"], num_images_per_prompt=2, generator=gen(0), num_inference_steps=STEPS,
                      output_type="latent", sld_preset="max")
    assert rec.batches == [12] * STEPS
    added = rec.kwargs[0]["added_cond_kwargs"]
    assert added["text_embeds"].shape == (12, 32) and added["time_ids"].shape == (12, 6)
    assert out.applied_safety_concept.startswith("an image showing")


def test_warmup_skip_bit_identical_xl(xl_pipe):
    cfg = SLDConfig.WEAK.replace(warmup_steps=1)
    with BatchRecorder(xl_pipe.unet) as rec:
        a = xl_pipe("a cat", generator=gen(0), num_inference_steps=STEPS, output_type="latent", sld_preset=cfg).images
    assert rec.batches == [2, 3, 3]
    b = xl_pipe("a cat", generator=gen(0), num_inference_steps=STEPS, output_type="latent", sld_preset=cfg,
                sld_skip_warmup_concept=False).images
    assert torch.equal(a, b)


def test_concept_embeds_pair_equals_text(xl_pipe):
    concept = "violence, blood"
    (pair,) = xl_pipe.encode_safety_concept([concept], torch.device("cpu"))
    a = xl_pipe("a cat", generator=gen(0), num_inference_steps=STEPS, output_type="latent", sld_preset="max",
                safety_concept=concept).images
    b = xl_pipe("a cat", generator=gen(0), num_inference_steps=STEPS, output_type="latent", sld_preset="max",
                safety_concept_embeds=pair).images
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="pair"):
        xl_pipe("a cat", num_inference_steps=1, sld_preset="max", safety_concept_embeds=[pair[0]])


def test_xl_save_load_and_from_pipe(sdxl_components, xl_pipe, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    plain = StableDiffusionXLPipeline(**sdxl_components)
    plain.save_pretrained(tmp_path / "sdxl")
    loaded = SafeLatentDiffusionXLPipeline.from_pretrained(tmp_path / "sdxl", safety_concept=["nudity", "gore"])
    loaded.set_progress_bar_config(disable=True)
    loaded.save_pretrained(tmp_path / "sld_xl")
    again = SafeLatentDiffusionXLPipeline.from_pretrained(tmp_path / "sld_xl")
    assert again.safety_concept == ["nudity", "gore"]
    piped = SafeLatentDiffusionXLPipeline.from_pipe(plain)
    piped.set_progress_bar_config(disable=True)
    a = piped("a cat", generator=gen(0), num_inference_steps=2, output_type="latent", sld_preset="max").images
    b = xl_pipe("a cat", generator=gen(0), num_inference_steps=2, output_type="latent", sld_preset="max").images
    assert torch.equal(a, b)


def test_xl_bad_inputs(xl_pipe):
    with pytest.raises(ValueError, match="divisible by 8"):
        xl_pipe("a cat", height=30, width=32, num_inference_steps=1)
    with pytest.raises(ValueError, match="empty list"):
        xl_pipe("a cat", num_inference_steps=1, safety_concept=[])
    with pytest.raises(ValueError, match="unknown SLD preset"):
        xl_pipe("a cat", num_inference_steps=1, sld_preset="nope")
