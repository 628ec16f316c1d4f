"""Several safety concepts, each with its own SLD hyperparameters (``SLDConcept``), checked against a hand-written
denoising loop that applies the paper's equations (spec sld_i2p.md §1.1) concept by concept."""

from __future__ import annotations

import json

import pytest
import torch

from hf_ext.diffusion.sld import SafeLatentDiffusionPipeline, SLDConcept, SLDConfig

from .conftest import BatchRecorder, gen

PROMPT = "a photo of a cat"
STEPS = 5
S_G = 7.5
BASE = SLDConfig.MEDIUM  # the call's defaults; fields a concept leaves unset come from here


def _reference_loop(pipe, concepts: list[tuple[str, dict]], *, prompt=PROMPT, steps=STEPS, seed=0, n=1):
    """Eq. 3–8 per concept k with its own (s_S, λ, s_m, β_m, δ):
    μ_k = min(1, s_S|ε_p − ε_k|) where ε_p − ε_k < λ (else 0); γ_k = μ_k(ε_k − ε_∅) + s_m ν_k;
    ν_k ← β_m ν_k + (1 − β_m) γ_k (also in warm-up); ε̄ = ε_∅ + s_g(ε_p − ε_∅ − Σ_{k: i ≥ δ_k} γ_k).
    A fresh scheduler of the pipeline's class and config; ``n`` images per prompt."""
    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    device = torch.device("cpu")
    pe, ne = pipe.encode_prompt(prompt, device, n, True, None)
    rows = pe.shape[0]
    ce = [pipe.encode_prompt(text, device, 1, False, None)[0].expand(rows, -1, -1) for text, _ in concepts]
    latents = torch.randn((rows, 4, 16, 16), generator=gen(seed)) * sched.init_noise_sigma
    nu = [torch.zeros_like(latents) for _ in concepts]
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            x = sched.scale_model_input(torch.cat([latents] * (2 + len(concepts))), t)
            eps = pipe.unet(x, t, encoder_hidden_states=torch.cat([ne, pe, *ce])).sample.chunk(2 + len(concepts))
            eps_u, eps_p = eps[0], eps[1]
            guidance = eps_p - eps_u
            for k, (_, h) in enumerate(concepts):
                eps_s = eps[2 + k]
                diff = eps_p - eps_s
                mu = torch.where(diff < h["threshold"], torch.clamp(diff.abs() * h["guidance_scale"], max=1.0),
                                 torch.zeros_like(diff))
                gamma = mu * (eps_s - eps_u) + h["momentum_scale"] * nu[k]
                nu[k] = h["mom_beta"] * nu[k] + (1 - h["mom_beta"]) * gamma
                if i >= h["warmup_steps"]:
                    guidance = guidance - gamma
            latents = sched.step(eps_u + S_G * guidance, t, latents).prev_sample
    return latents


A = dict(guidance_scale=1500.0, warmup_steps=1, threshold=0.02, momentum_scale=0.3, mom_beta=0.4)
B = dict(guidance_scale=4000.0, warmup_steps=3, threshold=0.05, momentum_scale=0.6, mom_beta=0.8)


def test_two_concepts_match_reference_loop(sld_pipe):
    concepts = [("violence", A), ("blood and gore", B)]
    out = sld_pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=S_G, generator=gen(0), output_type="latent",
                   safety_concept=[SLDConcept(text, **h) for text, h in concepts])
    ref = _reference_loop(sld_pipe, concepts)
    torch.testing.assert_close(out.images, ref, atol=1e-5, rtol=1e-5)
    assert out.applied_safety_concept == ["violence", "blood and gore"]
    # the per-concept values matter: concept B with A's values (or no SLD) gives other latents
    same = _reference_loop(sld_pipe, [("violence", A), ("blood and gore", A)])
    plain = sld_pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=S_G, generator=gen(0), output_type="latent",
                     sld_guidance_scale=0).images
    assert (same - ref).abs().max() > 1e-3 and (plain - ref).abs().max() > 1e-3


def test_three_concepts_batch_and_other_scheduler(sd_components):
    """Batch of 2 prompts × 2 images, Euler, three concepts (one with a fractional warm-up)."""
    from diffusers import EulerDiscreteScheduler

    pipe = SafeLatentDiffusionPipeline(**{**sd_components, "scheduler": EulerDiscreteScheduler.from_config(
        sd_components["scheduler"].config)})
    pipe.set_progress_bar_config(disable=True)
    c = dict(guidance_scale=800.0, warmup_steps=0.4, threshold=0.0, momentum_scale=0.0, mom_beta=0.0)
    concepts = [("violence", A), ("blood and gore", B), ("a weapon", c)]
    prompts = ["a photo of a cat", "a city street at night"]
    out = pipe(prompts, num_images_per_prompt=2, num_inference_steps=STEPS, guidance_scale=S_G, generator=gen(2),
               output_type="latent", safety_concept=[SLDConcept(text, **h) for text, h in concepts])
    ref = _reference_loop(pipe, [*concepts[:2], ("a weapon", {**c, "warmup_steps": 2})], prompt=prompts, seed=2,
                          n=2)  # δ = ⌈0.4·5⌉ = 2
    torch.testing.assert_close(out.images, ref, atol=1e-5, rtol=1e-5)


def test_unset_fields_come_from_the_call_and_parallel_warmups(sld_pipe):
    """A concept's unset fields are the call's ``sld_*``/preset values; text and dict specs are interchangeable."""
    strong = SLDConfig.STRONG.replace(warmup_steps=2)
    b_full = {**strong.to_dict(), "guidance_scale": 300.0, "warmup_steps": 0}
    out = sld_pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=S_G, generator=gen(1), output_type="latent",
                   sld_preset=strong,
                   safety_concept=["violence", {"text": "nudity", "guidance_scale": 300.0, "warmup_steps": 0}])
    ref = _reference_loop(sld_pipe, [("violence", strong.to_dict()), ("nudity", b_full)], seed=1)
    torch.testing.assert_close(out.images, ref, atol=1e-5, rtol=1e-5)


def test_single_concept_spec_is_bit_identical_to_text(sld_pipe, ref_pipe):
    kw = SLDConfig.STRONG.replace(warmup_steps=1).to_diffusers_kwargs()
    text = sld_pipe(PROMPT, num_inference_steps=4, generator=gen(0), output_type="latent", safety_concept="violence",
                    **kw).images
    spec = sld_pipe(PROMPT, num_inference_steps=4, generator=gen(0), output_type="latent",
                    safety_concept=SLDConcept("violence", **SLDConfig.STRONG.replace(warmup_steps=1).to_dict())).images
    assert torch.equal(text, spec)


def test_warmup_skip_with_per_concept_momentum(sld_pipe):
    """The concept rows are skipped only while every concept is in warm-up with s_m = 0."""
    a = SLDConcept("violence", guidance_scale=500.0, warmup_steps=2, threshold=0.0, momentum_scale=0.0, mom_beta=0.0)
    b = SLDConcept("nudity", guidance_scale=500.0, warmup_steps=3, threshold=0.0, momentum_scale=0.0, mom_beta=0.0)
    with BatchRecorder(sld_pipe.unet) as rec:
        fast = sld_pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent",
                        safety_concept=[a, b]).images
    assert rec.batches == [2, 2, 4, 4, 4]
    slow = sld_pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent", safety_concept=[a, b],
                    sld_skip_warmup_concept=False).images
    # same maths; only the UNet batch differs (2 vs 4 rows in warm-up), and the CPU UNet is not batch-invariant
    # (its outputs for a row differ by ~1e-6 between batch 2 and 4), so close, not bit-equal
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=0)
    charged = SLDConcept("nudity", guidance_scale=500.0, warmup_steps=3, momentum_scale=0.5)
    with BatchRecorder(sld_pipe.unet) as rec:
        sld_pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent",
                 safety_concept=[a, charged])
    assert rec.batches == [4] * STEPS  # the charged momentum needs ε_S from step 0


def test_disabled_concept_is_dropped(sld_pipe):
    on = SLDConcept("violence", guidance_scale=1500.0, warmup_steps=0)
    alone = sld_pipe(PROMPT, num_inference_steps=3, generator=gen(0), output_type="latent", safety_concept=[on])
    with BatchRecorder(sld_pipe.unet) as rec:
        both = sld_pipe(PROMPT, num_inference_steps=3, generator=gen(0), output_type="latent",
                        safety_concept=[on, SLDConcept("nudity", guidance_scale=0.0)])
    assert rec.batches == [3, 3, 3] and torch.equal(alone.images, both.images)
    assert both.applied_safety_concept == "violence"
    off = sld_pipe(PROMPT, num_inference_steps=3, generator=gen(0), output_type="latent",
                   safety_concept=SLDConcept("nudity", guidance_scale=1.0))
    assert off.applied_safety_concept is None


def test_concepts_saved_in_config(sd_components, tmp_path):
    specs = ["violence", SLDConcept("nudity", guidance_scale=2000.0, warmup_steps=0.25)]
    pipe = SafeLatentDiffusionPipeline(**sd_components, safety_concept=specs)
    assert pipe.safety_concept == specs
    pipe.save_pretrained(tmp_path / "p")
    stored = json.loads((tmp_path / "p" / "model_index.json").read_text())["safety_concept"]
    assert stored == ["violence", {"text": "nudity", "guidance_scale": 2000.0, "warmup_steps": 0.25}]
    loaded = SafeLatentDiffusionPipeline.from_pretrained(tmp_path / "p")
    assert loaded.safety_concept == specs


def test_concept_embeds_with_per_concept_values(sld_pipe):
    a, b = SLDConcept("violence", **A), SLDConcept("blood and gore", **B)
    embeds = sld_pipe.encode_safety_concept([a.text, b.text], torch.device("cpu"))
    by_text = sld_pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=S_G, generator=gen(0), output_type="latent",
                       safety_concept=[a, b]).images
    by_embeds = sld_pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=S_G, generator=gen(0),
                         output_type="latent", safety_concept=[a, b], safety_concept_embeds=embeds).images
    assert torch.equal(by_text, by_embeds)
    with pytest.raises(ValueError, match="one SLDConcept per embedding"):
        sld_pipe(PROMPT, num_inference_steps=1, safety_concept=[a, b, SLDConcept("x")], safety_concept_embeds=embeds)


@pytest.mark.parametrize("spec, err, match", [
    (dict(guidance_scale=-1.0), ValueError, r"SLDConcept\('c'\)\.guidance_scale=-1\.0"),
    (dict(mom_beta=1.5), ValueError, r"mom_beta=1\.5"),
    (dict(warmup_steps=1.5), ValueError, r"warmup_steps=1\.5"),
    (dict(warmup_steps=-2), ValueError, r"warmup_steps=-2"),
    (dict(threshold="high"), TypeError, r"threshold='high'"),
    (dict(momentum_scale=-0.1), ValueError, r"momentum_scale=-0\.1"),
])
def test_bad_concept_values_name_field_and_value(spec, err, match):
    with pytest.raises(err, match=match):
        SLDConcept("c", **spec)


def test_bad_concept_lists(sld_pipe):
    with pytest.raises(ValueError, match="non-empty string"):
        SLDConcept("  ")
    with pytest.raises(TypeError, match=r"safety_concept\[1\] must be a str, an SLDConcept or a dict.*got 3"):
        sld_pipe(PROMPT, num_inference_steps=1, safety_concept=["violence", 3])
    with pytest.raises(ValueError, match=r"safety_concept\[0\]=''"):
        sld_pipe(PROMPT, num_inference_steps=1, safety_concept=[""])
    with pytest.raises(ValueError, match=r"unknown SLDConcept field\(s\) \['scale'\]"):
        sld_pipe(PROMPT, num_inference_steps=1, safety_concept=[{"text": "violence", "scale": 3}])
