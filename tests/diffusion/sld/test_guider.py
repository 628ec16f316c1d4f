"""SafeLatentGuidance (modular-diffusers guider) driven the way a modular denoise loop drives guiders."""

from __future__ import annotations

import pytest
import torch

from hf_ext.diffusion.sld import SafeLatentGuidance, SLDConcept, SLDConfig

from .conftest import gen

STEPS = 4


def _modular_style_loop(pipe, guider, prompt="a photo of a cat", concept="violence"):
    """The body of diffusers' StableDiffusionXLLoopDenoiser, for an SD UNet: set_state, prepare_inputs with
    (cond, uncond, concept…) tuples, one denoiser call per guider batch, then guider(batches)."""
    device = torch.device("cpu")
    pe, ne = pipe.encode_prompt(prompt, device, 1, True, None)
    ces = pipe.encode_safety_concept([concept] if isinstance(concept, str) else concept, device)
    sched = pipe.scheduler
    sched.set_timesteps(STEPS)
    latents = torch.randn((1, 4, 16, 16), generator=gen(0)) * sched.init_noise_sigma
    calls = []
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            guider.set_state(step=i, num_inference_steps=STEPS, timestep=t)
            batches = guider.prepare_inputs({"prompt_embeds": (pe, ne, *ces), "image_embeds": (None, None)})
            calls.append(len(batches))
            for b in batches:
                guider.prepare_models(pipe.unet)
                b.noise_pred = pipe.unet(sched.scale_model_input(latents, t), t,
                                         encoder_hidden_states=b.prompt_embeds).sample
                guider.cleanup_models(pipe.unet)
            noise = guider(batches).pred
            latents = sched.step(noise, t, latents).prev_sample
    return latents, calls


@pytest.mark.parametrize("preset", ["strong", "weak"])
def test_guider_loop_matches_pipeline(sld_pipe, preset):
    cfg = SLDConfig.from_preset(preset).replace(warmup_steps=2)
    guider = SafeLatentGuidance(guidance_scale=7.5, **cfg.to_diffusers_kwargs())
    lat, calls = _modular_style_loop(sld_pipe, guider)
    # weak (s_m = 0) skips the concept during warm-up: 2 conditions, then 3
    assert calls == ([2, 2, 3, 3] if preset == "weak" else [3, 3, 3, 3])
    ref = sld_pipe("a photo of a cat", num_inference_steps=STEPS, generator=gen(0), output_type="latent",
                   safety_concept="violence", sld_preset=cfg).images
    # unbatched vs batched UNet calls differ by ~1e-6; the gate (s_S·|ε_p − ε_S| clamp, threshold) amplifies that
    torch.testing.assert_close(lat, ref, atol=5e-4, rtol=1e-3)
    # and it is not plain CFG
    plain = SafeLatentGuidance(guidance_scale=7.5, sld_guidance_scale=0)
    lat_plain, calls = _modular_style_loop(sld_pipe, plain)
    assert calls == [2] * STEPS and (lat_plain - lat).abs().max() > 2e-2


def test_guider_state_conditions_and_config_roundtrip(tmp_path):
    g = SafeLatentGuidance.from_preset("medium", guidance_scale=5.0)
    g.set_state(step=0, num_inference_steps=20, timestep=torch.tensor(999))
    assert g.num_conditions == 3
    g2 = SafeLatentGuidance(guidance_scale=1.0)
    g2.set_state(step=0, num_inference_steps=20, timestep=torch.tensor(999))
    assert g2.num_conditions == 1
    g.save_pretrained(tmp_path / "guider")
    loaded = SafeLatentGuidance.from_pretrained(tmp_path / "guider")
    assert loaded.sld_config == SLDConfig.MEDIUM and loaded.guidance_scale == 5.0
    # momentum is reset at step 0
    u, p, s = (torch.randn(1, 4) * 0.01 for _ in range(3))
    g.set_state(step=12, num_inference_steps=20, timestep=torch.tensor(100))
    g.forward(p, u, s)
    assert g._momentum is not None
    g.set_state(step=0, num_inference_steps=20, timestep=torch.tensor(999))
    assert g._momentum is None


def test_guider_needs_concept_inputs():
    g = SafeLatentGuidance(sld_warmup_steps=0)
    g.set_state(step=0, num_inference_steps=4, timestep=torch.tensor(999))
    with pytest.raises(ValueError, match="third"):
        g.prepare_inputs({"prompt_embeds": (torch.ones(1, 2), torch.zeros(1, 2))})
    with pytest.raises(ValueError, match="sld_guidance_scale must be >= 0"):
        SafeLatentGuidance(sld_guidance_scale=-1)


def test_modular_sdxl_pipeline_with_sld_guider(sdxl_components):
    """diffusers' modular SDXL pipeline + SafeLatentGuidance ≈ SafeLatentDiffusionXLPipeline (unbatched calls)."""
    from hf_ext.diffusion.sld import SafeLatentDiffusionXLPipeline, sld_sdxl_modular_blocks

    blocks = sld_sdxl_modular_blocks()
    assert list(blocks.sub_blocks)[:2] == ["text_encoder", "safety_concept"]
    pipe = blocks.init_pipeline()
    pipe.update_components(**{k: v for k, v in sdxl_components.items() if v is not None},
                           guider=SafeLatentGuidance.from_preset("max", guidance_scale=5.0))
    pipe.set_progress_bar_config(disable=True)
    lat = pipe(prompt="a cat", num_inference_steps=3, generator=gen(0), output="latents", safety_concept="violence")
    xl = SafeLatentDiffusionXLPipeline(**sdxl_components)
    xl.set_progress_bar_config(disable=True)
    ref = xl("a cat", num_inference_steps=3, generator=gen(0), output_type="latent", sld_preset="max",
             safety_concept="violence").images
    off = xl("a cat", num_inference_steps=3, generator=gen(0), output_type="latent", sld_preset="off").images
    torch.testing.assert_close(lat, ref, atol=2e-3, rtol=1e-3)
    assert (off - ref).abs().max() > 0.1  # SLD's effect is far larger than the batching noise


TWO = [dict(guidance_scale=1500.0, warmup_steps=1, threshold=0.02, momentum_scale=0.3, mom_beta=0.4),
       dict(guidance_scale=4000.0, warmup_steps=2, threshold=0.05, momentum_scale=0.0, mom_beta=0.0)]


def test_guider_two_concepts_match_pipeline(sld_pipe):
    guider = SafeLatentGuidance(guidance_scale=7.5, sld_concepts=TWO)
    lat, calls = _modular_style_loop(sld_pipe, guider, concept=["violence", "blood"])
    assert calls == [4] * STEPS  # concept 1 charges its momentum from step 0
    ref = sld_pipe("a photo of a cat", num_inference_steps=STEPS, generator=gen(0), output_type="latent",
                   safety_concept=[SLDConcept("violence", **TWO[0]), SLDConcept("blood", **TWO[1])]).images
    torch.testing.assert_close(lat, ref, atol=5e-4, rtol=1e-3)
    one = SafeLatentGuidance(guidance_scale=7.5, **{f"sld_{k}": v for k, v in TWO[0].items()})
    lat_one, _ = _modular_style_loop(sld_pipe, one)
    assert (lat_one - lat).abs().max() > 1e-2
    # both in a skipped warm-up: 2 conditions until the first concept's δ
    skip = SafeLatentGuidance(guidance_scale=7.5, sld_concepts=[{**TWO[1], "warmup_steps": 1}, TWO[1]])
    assert _modular_style_loop(sld_pipe, skip, concept=["violence", "blood"])[1] == [2, 4, 4, 4]


def test_guider_concept_errors(sd_components):
    with pytest.raises(TypeError, match=r"sld_concepts must be a non-empty list"):
        SafeLatentGuidance(sld_concepts={"guidance_scale": 2.0})
    with pytest.raises(ValueError, match=r"sld_concepts\[1\]=.*mom_beta=2"):
        SafeLatentGuidance(sld_concepts=[{}, {"mom_beta": 2}])
    with pytest.raises(ValueError, match=r"sld_concepts\[0\].*disables that concept"):
        SafeLatentGuidance(sld_concepts=[{"guidance_scale": 0.0}, {}])
    g = SafeLatentGuidance(sld_concepts=[{}, {}], sld_warmup_steps=0)
    g.set_state(step=0, num_inference_steps=4, timestep=torch.tensor(999))
    x = torch.ones(1, 2)
    with pytest.raises(ValueError, match="needs 2 safety-concept"):
        g.prepare_inputs({"prompt_embeds": (x, x, x)})
    one = SafeLatentGuidance(sld_warmup_steps=0)
    one.set_state(step=0, num_inference_steps=4, timestep=torch.tensor(999))
    with pytest.raises(ValueError, match="has 2 concept entries but this guider has 1"):
        one.prepare_inputs({"prompt_embeds": (x, x, x, x)})


def test_modular_sdxl_two_concepts(sdxl_components):
    from hf_ext.diffusion.sld import SafeLatentDiffusionXLPipeline, sld_sdxl_modular_blocks

    two = [TWO[0], {**TWO[1], "warmup_steps": 0}]  # 3 steps: let the second concept act from the start
    pipe = sld_sdxl_modular_blocks().init_pipeline()
    pipe.update_components(**{k: v for k, v in sdxl_components.items() if v is not None},
                           guider=SafeLatentGuidance(guidance_scale=5.0, sld_concepts=two))
    pipe.set_progress_bar_config(disable=True)
    lat = pipe(prompt="a cat", num_inference_steps=3, generator=gen(0), output="latents",
               safety_concept=["violence", "blood"])
    xl = SafeLatentDiffusionXLPipeline(**sdxl_components)
    xl.set_progress_bar_config(disable=True)
    ref = xl("a cat", num_inference_steps=3, generator=gen(0), output_type="latent",
             safety_concept=[SLDConcept("violence", **two[0]), SLDConcept("blood", **two[1])]).images
    first = xl("a cat", num_inference_steps=3, generator=gen(0), output_type="latent",
               safety_concept=[SLDConcept("violence", **TWO[0])]).images
    torch.testing.assert_close(lat, ref, atol=2e-3, rtol=1e-3)
    assert (first - ref).abs().max() > 0.05  # the second concept matters far beyond the batching noise
    with pytest.raises(ValueError, match="belong to the guider"):
        pipe(prompt="a cat", num_inference_steps=1, output="latents",
             safety_concept=[SLDConcept("violence", guidance_scale=10.0)])
