"""SafeLatentDiffusionPipeline vs diffusers' StableDiffusionPipelineSafe / StableDiffusionPipeline, and the six
reference bugs (spec §1.5), each shown absent here (and, where cheap, present in the reference)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from hf_ext.diffusion.sld import DEFAULT_SAFETY_CONCEPT, SafeLatentDiffusionPipeline, SLDConfig

from .conftest import BatchRecorder, gen

PROMPT = "a photo of a cat"
STEPS = 4


def _ours(pipe, prompt=PROMPT, **kw):
    """Run our pipeline, returning (output, final latents captured by callback_on_step_end)."""
    box = {}

    def cb(p, i, t, tensors):
        box["latents"] = tensors["latents"].clone()
        return {}

    kw.setdefault("num_inference_steps", STEPS)
    out = pipe(prompt, generator=gen(0), output_type="np", callback_on_step_end=cb, **kw)
    return out, box["latents"]


def _ref(pipe, prompt=PROMPT, **kw):
    box = {}

    def cb(step, t, latents):
        box["latents"] = latents.clone()

    kw.setdefault("num_inference_steps", STEPS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = pipe(prompt, generator=gen(0), output_type="np", callback=cb, **kw)
    return out, box["latents"]


# ------------------------------------------------------------------------------------------- parity with diffusers
@pytest.mark.parametrize("preset", ["weak", "weak_diffusers", "medium", "strong", "max", "off"])
def test_parity_with_diffusers_safe_pipeline(sld_pipe, ref_pipe, preset):
    cfg = SLDConfig.from_preset(preset)
    cfg = cfg.replace(warmup_steps=min(cfg.warmup_steps, 1))  # 4 steps: let guidance act (δ ≤ 1)
    kw = cfg.to_diffusers_kwargs()
    o, o_lat = _ours(sld_pipe, **kw)
    r, r_lat = _ref(ref_pipe, **kw)
    assert torch.equal(o_lat, r_lat), f"{preset}: latents differ by {(o_lat - r_lat).abs().max()}"
    np.testing.assert_allclose(o.images, r.images, atol=1e-5, rtol=0)
    assert o.applied_safety_concept == r.applied_safety_concept
    if preset != "off":
        assert o.applied_safety_concept == DEFAULT_SAFETY_CONCEPT
        _, plain_lat = _ours(sld_pipe, sld_guidance_scale=0)
        assert (o_lat - plain_lat).abs().max() > 1e-4, "SLD had no effect: the parity check would be vacuous"
    # the preset object and the explicit keywords are the same thing
    if preset == "strong":
        p, p_lat = _ours(sld_pipe, sld_preset=cfg)
        assert torch.equal(p_lat, o_lat)


def test_parity_with_paper_warmup_unchanged(sld_pipe, ref_pipe):
    """Medium exactly as published (δ = 10 ≥ 4 steps: guidance never applied, momentum still charged)."""
    kw = SLDConfig.MEDIUM.to_diffusers_kwargs()
    o, o_lat = _ours(sld_pipe, **kw)
    r, r_lat = _ref(ref_pipe, **kw)
    assert torch.equal(o_lat, r_lat)
    np.testing.assert_allclose(o.images, r.images, atol=1e-5, rtol=0)


def test_parity_with_negative_prompt_and_batch(sld_pipe, ref_pipe):
    kw = dict(SLDConfig.MAX.to_diffusers_kwargs(), negative_prompt=["blurry", "dark"], num_images_per_prompt=2)
    o, o_lat = _ours(sld_pipe, prompt=["a cat", "a dog"], **kw)
    r, r_lat = _ref(ref_pipe, prompt=["a cat", "a dog"], **kw)
    assert torch.equal(o_lat, r_lat)
    assert o.images.shape == (4, 32, 32, 3)


@pytest.mark.parametrize("scheduler_name", ["EulerDiscreteScheduler", "DPMSolverMultistepScheduler", "v_prediction"])
def test_parity_other_schedulers_and_v_prediction(sd_components, scheduler_name):
    import diffusers
    from diffusers import StableDiffusionPipeline, StableDiffusionPipelineSafe

    base = sd_components["scheduler"].config
    if scheduler_name == "v_prediction":
        sched = diffusers.DDIMScheduler.from_config(base, prediction_type="v_prediction")
    else:
        sched = getattr(diffusers, scheduler_name).from_config(base)
    comps = {**sd_components, "scheduler": sched}
    ours = SafeLatentDiffusionPipeline(**comps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = StableDiffusionPipelineSafe(**comps, requires_safety_checker=False)
    plain = StableDiffusionPipeline(**comps, requires_safety_checker=False)
    for p in (ours, ref, plain):
        p.set_progress_bar_config(disable=True)
    kw = SLDConfig.STRONG.replace(warmup_steps=1).to_diffusers_kwargs()
    _, o_lat = _ours(ours, **kw)
    _, r_lat = _ref(ref, **kw)
    assert torch.equal(o_lat, r_lat)
    off = ours(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent", sld_guidance_scale=0).images
    pl = plain(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent").images
    assert torch.equal(off, pl)


# ------------------------------------------------------------------------------------------- SLD off == SD
def test_bug5_sld_off_equals_stable_diffusion_pipeline_bit_for_bit(sd_components, sld_pipe, ref_pipe):
    """Also bug 5: our images are bit-identical to StableDiffusionPipeline (the reference's are not)."""
    from diffusers import StableDiffusionPipeline

    plain = StableDiffusionPipeline(**sd_components, requires_safety_checker=False)
    plain.set_progress_bar_config(disable=True)
    for off in (dict(sld_guidance_scale=0), dict(sld_guidance_scale=1.0), dict(sld_preset="off")):
        o = sld_pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="np", **off)
        assert o.applied_safety_concept is None
    lat = sld_pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent", sld_guidance_scale=0)
    p_lat = plain(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent").images
    assert torch.equal(lat.images, p_lat)
    p_img = plain(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="np").images
    assert np.array_equal(o.images, p_img)
    r, _ = _ref(ref_pipe, sld_guidance_scale=0)
    assert np.abs(r.images - p_img).max() <= 1e-5  # the reference's multiply-by-reciprocal decode: close, not equal


def test_warmup_beyond_schedule_equals_plain(sld_pipe):
    on = sld_pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent", sld_warmup_steps=STEPS,
                  sld_momentum_scale=0.5)
    off = sld_pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent", sld_guidance_scale=0)
    assert torch.equal(on.images, off.images)


# ------------------------------------------------------------------------------------------- compute
def test_one_unet_call_per_step_and_batch_sizes(sld_pipe):
    prompts = ["a cat", "a dog"]
    with BatchRecorder(sld_pipe.unet) as rec:
        out = sld_pipe(prompts, num_images_per_prompt=2, num_inference_steps=STEPS, generator=gen(0),
                       output_type="latent", sld_preset="max")
    assert rec.batches == [12] * len(sld_pipe.scheduler.timesteps) and len(rec.batches) == STEPS
    assert out.applied_safety_concept is not None
    with BatchRecorder(sld_pipe.unet) as rec:
        sld_pipe(prompts, num_images_per_prompt=2, num_inference_steps=STEPS, generator=gen(0), output_type="latent",
                 sld_guidance_scale=0)
    assert rec.batches == [8] * STEPS
    with BatchRecorder(sld_pipe.unet) as rec:
        out = sld_pipe(prompts, num_images_per_prompt=2, num_inference_steps=STEPS, generator=gen(0),
                       output_type="latent", guidance_scale=1.0, sld_preset="max")
    assert rec.batches == [4] * STEPS and out.applied_safety_concept is None
    # two concepts: one call on (2 + 2)·B·n rows
    with BatchRecorder(sld_pipe.unet) as rec:
        sld_pipe(prompts, num_inference_steps=STEPS, generator=gen(0), output_type="latent", sld_preset="max",
                 safety_concept=["violence", "nudity"])
    assert rec.batches == [8] * STEPS


def test_warmup_skip_is_bit_identical_and_cheaper(sld_pipe):
    cfg = SLDConfig.WEAK.replace(warmup_steps=2)  # s_m = 0: momentum never read
    with BatchRecorder(sld_pipe.unet) as rec:
        fast = sld_pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent", sld_preset=cfg,
                        return_sld_diagnostics=True)
    assert rec.batches == [2, 2, 3, 3]
    with BatchRecorder(sld_pipe.unet) as rec:
        slow = sld_pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent", sld_preset=cfg,
                        sld_skip_warmup_concept=False)
    assert rec.batches == [3, 3, 3, 3]
    assert torch.equal(fast.images, slow.images)
    assert [d.concept_evaluated for d in fast.sld_diagnostics] == [False, False, True, True]
    assert [d.applied for d in fast.sld_diagnostics] == [False, False, True, True]
    assert 0.0 <= fast.sld_diagnostics[-1].guided_fraction <= 1.0 and fast.sld_diagnostics[-1].gamma_norm > 0


def test_warmup_fraction_equals_index(sld_pipe):
    a = sld_pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent", sld_preset="strong",
                 sld_warmup_steps=0.5)
    b = sld_pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent", sld_preset="strong",
                 sld_warmup_steps=2)
    assert torch.equal(a.images, b.images)


def test_momentum_is_charged_during_warmup(sld_pipe):
    a = sld_pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent", sld_preset="strong",
                 sld_warmup_steps=2, sld_momentum_scale=0.5)
    b = sld_pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent", sld_preset="strong",
                 sld_warmup_steps=2, sld_momentum_scale=0.0)
    assert not torch.equal(a.images, b.images)


# ------------------------------------------------------------------------------------------- API features
def test_prompt_embeds_equal_text(sld_pipe):
    pe, ne = sld_pipe.encode_prompt(["a cat"], torch.device("cpu"), 1, True, ["dark"])
    a = sld_pipe(["a cat"], negative_prompt=["dark"], num_inference_steps=STEPS, generator=gen(0),
                 output_type="latent", sld_preset="max")
    b = sld_pipe(prompt_embeds=pe, negative_prompt_embeds=ne, num_inference_steps=STEPS, generator=gen(0),
                 output_type="latent", sld_preset="max")
    assert torch.equal(a.images, b.images)
    (ce,) = sld_pipe.encode_safety_concept([DEFAULT_SAFETY_CONCEPT], torch.device("cpu"))
    c = sld_pipe(["a cat"], negative_prompt=["dark"], num_inference_steps=STEPS, generator=gen(0),
                 output_type="latent", sld_preset="max", safety_concept_embeds=ce)
    assert torch.equal(a.images, c.images) and c.applied_safety_concept == "<safety_concept_embeds>"


def test_callback_on_step_end_can_edit_latents(sld_pipe):
    seen = []

    def cb(pipe, i, t, tensors):
        seen.append((i, sorted(tensors)))
        return {"latents": torch.zeros_like(tensors["latents"])} if i == STEPS - 1 else {}

    out = sld_pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent", sld_preset="max",
                   callback_on_step_end=cb, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
    assert [i for i, _ in seen] == list(range(STEPS)) and seen[0][1] == ["latents", "prompt_embeds"]
    assert torch.count_nonzero(out.images) == 0


def test_output_types_and_tuple(sld_pipe):
    lat = sld_pipe(PROMPT, num_inference_steps=2, generator=gen(0), output_type="latent").images
    assert lat.shape == (1, 4, 16, 16)
    pt = sld_pipe(PROMPT, num_inference_steps=2, generator=gen(0), output_type="pt").images
    assert pt.shape == (1, 3, 32, 32)
    pil = sld_pipe(PROMPT, num_inference_steps=2, generator=gen(0)).images
    assert pil[0].size == (32, 32)
    tup = sld_pipe(PROMPT, num_inference_steps=2, generator=gen(0), output_type="np", return_dict=False,
                   sld_warmup_steps=0)
    assert len(tup) == 4 and tup[2] == DEFAULT_SAFETY_CONCEPT and tup[1] is None and tup[3] is None


# ------------------------------------------------------------------------------------------- the reference's bugs
class _FlagIndex2:
    """Stub safety checker (diffusers' interface) flagging image 2."""

    def __call__(self, images, clip_input):
        return images, [i == 2 for i in range(len(images))]


def _feature_extractor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8})


def test_bug1_unsafe_images_have_batch_size(sd_components, ref_pipe):
    comps = {**sd_components, "feature_extractor": _feature_extractor()}
    ours = SafeLatentDiffusionPipeline(**comps)
    ours.set_progress_bar_config(disable=True)
    ours.safety_checker = _FlagIndex2()
    out = ours(PROMPT, num_images_per_prompt=3, num_inference_steps=2, generator=gen(0), output_type="np",
               sld_warmup_steps=0)
    assert out.nsfw_content_detected == [False, False, True]
    assert len(out.unsafe_images) == 3 and out.unsafe_images[0] is None and out.unsafe_images[2].shape == (32, 32, 3)
    assert np.count_nonzero(out.images[2]) == 0 and np.count_nonzero(out.images[0]) > 0
    assert np.count_nonzero(out.unsafe_images[2]) > 0
    # the reference: flagged_images = np.zeros((2, ...)) -> IndexError for a flagged image at index 2
    from diffusers import StableDiffusionPipelineSafe

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = StableDiffusionPipelineSafe(**comps, requires_safety_checker=False)
        ref.set_progress_bar_config(disable=True)
        ref.safety_checker = _FlagIndex2()
        with pytest.raises(IndexError):
            ref(PROMPT, num_images_per_prompt=3, num_inference_steps=2, generator=gen(0), output_type="np")


def test_bug2_no_swapped_uncond_text(ref_pipe):
    """The reference's dead perform_safety_guidance unpacks (text, uncond) from the (uncond, text, concept) chunks."""
    from hf_ext.diffusion.sld.guidance import sld_step

    g = torch.Generator().manual_seed(0)
    u, p, s = (torch.randn(1, 4, 8, 8, generator=g) * 0.01 for _ in range(3))
    cfg = SLDConfig(guidance_scale=500.0, warmup_steps=0, threshold=0.0, momentum_scale=0.0, mom_beta=0.0)
    d = p - s
    mu = torch.where(d >= 0.0, torch.zeros_like(d), (d.abs() * 500).clamp(max=1))
    truth = (p - u) - mu * (s - u)
    ours = sld_step(eps_uncond=u, eps_cond=p, eps_concept=s, momentum=None, step=0, guidance_scale=1.0, config=cfg)
    torch.testing.assert_close(ours.noise_guidance, truth)
    ref_guidance, _ = ref_pipe.perform_safety_guidance(True, None, p - u, (u, p, s), 0, **cfg.to_diffusers_kwargs())
    assert (ref_guidance - truth).abs().max() > 1e-4


def test_bug3_concept_encoded_on_execution_device(sd_components, monkeypatch):
    """Under sequential offload ``pipe.device`` is not where the text encoder runs; we use ``_execution_device``."""
    from diffusers import StableDiffusionPipelineSafe

    ours = SafeLatentDiffusionPipeline(**sd_components)
    ours.set_progress_bar_config(disable=True)
    # simulate offload: the execution device (cpu) differs from what ``pipe.device`` reports (meta)
    monkeypatch.setattr(SafeLatentDiffusionPipeline, "device", property(lambda self: torch.device("meta")))
    monkeypatch.setattr(SafeLatentDiffusionPipeline, "_execution_device", property(lambda self: torch.device("cpu")))
    out = ours(PROMPT, num_inference_steps=2, generator=gen(0), output_type="latent", sld_warmup_steps=0)
    assert out.images.device.type == "cpu" and torch.isfinite(out.images).all()
    monkeypatch.setattr(StableDiffusionPipelineSafe, "device", property(lambda self: torch.device("meta")))
    monkeypatch.setattr(StableDiffusionPipelineSafe, "_execution_device", property(lambda self: torch.device("cpu")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = StableDiffusionPipelineSafe(**sd_components, requires_safety_checker=False)
        ref.set_progress_bar_config(disable=True)
        with pytest.raises((RuntimeError, NotImplementedError, ValueError)):
            ref(PROMPT, num_inference_steps=2, generator=gen(0), output_type="np")


def test_bug4_safety_concept_survives_save_and_load(sd_components, tmp_path):
    ours = SafeLatentDiffusionPipeline(**sd_components, safety_concept="an image showing violence")
    ours.safety_concept = ["violence", "blood"]
    ours.save_pretrained(tmp_path / "sld")
    loaded = SafeLatentDiffusionPipeline.from_pretrained(tmp_path / "sld")
    assert loaded.safety_concept == ["violence", "blood"]
    loaded.set_progress_bar_config(disable=True)
    ours.set_progress_bar_config(disable=True)
    a = ours(PROMPT, num_inference_steps=2, generator=gen(0), output_type="latent", sld_warmup_steps=0)
    b = loaded(PROMPT, num_inference_steps=2, generator=gen(0), output_type="latent", sld_warmup_steps=0)
    assert torch.equal(a.images, b.images) and b.applied_safety_concept == ["violence", "blood"]
    # plain diffusers loads the folder's vendored copy of the class (see test_export.py for a Python without hf_ext)
    from diffusers import DiffusionPipeline

    generic = DiffusionPipeline.from_pretrained(tmp_path / "sld", trust_remote_code=True)
    assert type(generic).__name__ == "SafeLatentDiffusionPipeline" and generic.safety_concept == ["violence", "blood"]
    assert type(generic).__module__.startswith("diffusers_modules.")


def test_bug6_scheduler_used_as_given_and_hand_loop_matches(sd_components):
    """No silent steps_offset rewrite: a reference loop built from the pipeline's scheduler config matches."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    sched = DDIMScheduler.from_config(sd_components["scheduler"].config, steps_offset=0)
    pipe = SafeLatentDiffusionPipeline(**{**sd_components, "scheduler": sched})
    pipe.set_progress_bar_config(disable=True)
    assert pipe.scheduler.config.steps_offset == 0
    StableDiffusionPipeline(**{**sd_components, "scheduler": DDIMScheduler.from_config(sched.config)})  # no effect
    # closed form μ ≡ 1 (s_S, λ huge; s_m = 0; δ = 0): ε = ε_∅ + s_g (ε_p − ε_S), stepped by a fresh scheduler
    cfg = dict(sld_guidance_scale=1e12, sld_threshold=1e12, sld_momentum_scale=0.0, sld_mom_beta=0.0,
               sld_warmup_steps=0)
    out = pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent", safety_concept="violence",
               **cfg)
    loop_sched = DDIMScheduler.from_config(pipe.scheduler.config)
    loop_sched.set_timesteps(STEPS)
    assert loop_sched.timesteps.tolist() == pipe.scheduler.timesteps.tolist() == [750, 500, 250, 0]
    pe, ne = pipe.encode_prompt(PROMPT, torch.device("cpu"), 1, True, None)
    (ce,) = pipe.encode_safety_concept(["violence"], torch.device("cpu"))
    latents = torch.randn((1, 4, 16, 16), generator=gen(0)) * loop_sched.init_noise_sigma
    unet = sd_components["unet"]
    with torch.no_grad():
        for t in loop_sched.timesteps:
            eps_u, eps_p, eps_s = (unet(latents, t, encoder_hidden_states=e).sample for e in (ne, pe, ce))
            latents = loop_sched.step(eps_u + 7.5 * (eps_p - eps_s), t, latents).prev_sample
    torch.testing.assert_close(out.images, latents, atol=1e-4, rtol=1e-4)  # float re-association only
    cfg_only = pipe(PROMPT, num_inference_steps=STEPS, generator=gen(0), output_type="latent", sld_guidance_scale=0)
    assert (cfg_only.images - latents).abs().max() > 1e-2


# ------------------------------------------------------------------------------------------- loading / bad input
def test_from_pretrained_standard_sd_folder_and_from_pipe(sd_components, tmp_path):
    from diffusers import StableDiffusionPipeline

    plain = StableDiffusionPipeline(**sd_components, requires_safety_checker=False)
    plain.save_pretrained(tmp_path / "sd")
    pipe = SafeLatentDiffusionPipeline.from_pretrained(tmp_path / "sd")
    assert pipe.safety_concept == DEFAULT_SAFETY_CONCEPT and type(pipe) is SafeLatentDiffusionPipeline
    pipe.set_progress_bar_config(disable=True)
    a = pipe(PROMPT, num_inference_steps=2, generator=gen(0), output_type="latent", sld_preset="max").images
    piped = SafeLatentDiffusionPipeline.from_pipe(plain)
    assert piped.unet is plain.unet
    piped.set_progress_bar_config(disable=True)
    b = piped(PROMPT, num_inference_steps=2, generator=gen(0), output_type="latent", sld_preset="max").images
    assert torch.equal(a, b)


def test_bad_inputs(sld_pipe):
    with pytest.raises(ValueError, match="divisible by 8"):
        sld_pipe(PROMPT, height=36, width=32, num_inference_steps=1)
    with pytest.raises(ValueError, match="unknown SLD preset"):
        sld_pipe(PROMPT, num_inference_steps=1, sld_preset="ultra")
    with pytest.raises(ValueError, match="sld_guidance_scale must be >= 0"):
        sld_pipe(PROMPT, num_inference_steps=1, sld_guidance_scale=-5)
    with pytest.raises(ValueError, match="empty list"):
        sld_pipe(PROMPT, num_inference_steps=1, safety_concept=[])
    with pytest.raises(ValueError, match="empty list"):
        SafeLatentDiffusionPipeline(**{k: getattr(sld_pipe, k) for k in ("vae", "text_encoder", "tokenizer", "unet",
                                                                           "scheduler")}, safety_concept=[])
    with pytest.raises(ValueError, match="output_type"):
        sld_pipe(PROMPT, num_inference_steps=1, output_type="jpeg")
    with pytest.raises(ValueError, match="batch 1 or 1"):
        sld_pipe(PROMPT, num_inference_steps=1, safety_concept_embeds=torch.zeros(3, 16, 32), sld_warmup_steps=0)


def test_determinism(sld_pipe):
    a = sld_pipe(PROMPT, num_inference_steps=2, generator=gen(3), output_type="latent", sld_preset="max").images
    b = sld_pipe(PROMPT, num_inference_steps=2, generator=gen(3), output_type="latent", sld_preset="max").images
    assert torch.equal(a, b)


@pytest.mark.gpu
def test_parity_on_cuda_fp16(sd_components):
    """On a GPU (fp16) ours and diffusers' safe pipeline agree (batch-size-dependent kernels: allclose)."""
    import copy

    from diffusers import StableDiffusionPipelineSafe

    comps = {k: (copy.deepcopy(v).to("cuda", torch.float16) if isinstance(v, torch.nn.Module) else v)
             for k, v in sd_components.items()}
    ours = SafeLatentDiffusionPipeline(**comps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = StableDiffusionPipelineSafe(**comps, requires_safety_checker=False)
    kw = SLDConfig.STRONG.replace(warmup_steps=1).to_diffusers_kwargs()
    for p in (ours, ref):
        p.set_progress_bar_config(disable=True)
    a, _ = _ours(ours, **kw)
    b, _ = _ref(ref, **kw)
    np.testing.assert_allclose(a.images, b.images, atol=2e-2)
