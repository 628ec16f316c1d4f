"""MultiFusion's denoising loop against diffusers' ``StableDiffusionPipeline`` (the external oracle), and the
step-end callbacks as diffusers pipelines define them (``callback_on_step_end``, ``_callback_tensor_inputs``).

With the same precomputed conditioning, scheduler and generator, and no weighting, the two pipelines must give the
same latents; callbacks that record or edit latents must see and do the same in both."""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.callbacks import SDCFGCutoffCallback

from hf_ext.diffusion.multifusion import EncodedPrompt, MultiFusionPipeline, tiny_multifusion_components
from hf_ext.diffusion.mvader import MVaderPipeline
from hf_ext.testing import tiny_sd_components

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

STEPS = 4
SCHEDULERS = ["DDIMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
              "DPMSolverMultistepScheduler"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _pair(setup: str, scheduler: str = "DDIMScheduler"):
    """``(multifusion pipe, SD pipe, multifusion embeds kwargs, SD embeds kwargs)`` on shared components.

    ``"sd"``: the tiny SD components (CLIP embeddings from SD's own text encoder, no projection);
    ``"projection"``: tiny MultiFusion components (a 64-wide LM space mapped to the UNet by the projection)."""
    if setup == "sd":
        comps = tiny_sd_components(seed=0)
        sd = StableDiffusionPipeline(**comps, requires_safety_checker=False)
        pe, ne = sd.encode_prompt(["a red apple", "a blue cube"], torch.device("cpu"), 1, True, ["blurry", ""])
        mf = MultiFusionPipeline(encoder=None, tokenizer=None, unet=comps["unet"], vae=comps["vae"],
                                 scheduler=comps["scheduler"])
        mf_kw = dict(prompt_embeds=EncodedPrompt(pe, torch.ones(pe.shape[:2], dtype=torch.long)),
                     negative_prompt_embeds=EncodedPrompt(ne, torch.ones(ne.shape[:2], dtype=torch.long)))
        sd_kw = dict(prompt_embeds=pe, negative_prompt_embeds=ne)
    else:
        comps = tiny_multifusion_components(encoder="text", family="llama")
        mf = MultiFusionPipeline(**comps)
        sd = StableDiffusionPipeline(vae=comps["vae"], text_encoder=None, tokenizer=None, unet=comps["unet"],
                                     scheduler=comps["scheduler"], safety_checker=None, feature_extractor=None,
                                     requires_safety_checker=False)
        g = _gen(7)
        hidden, neg = torch.randn(2, 2, 9, comps["projection"].config.in_dim, generator=g).unbind(0)
        mf_kw = dict(prompt_embeds=EncodedPrompt(hidden, torch.ones(2, 9, dtype=torch.long)),
                     negative_prompt_embeds=EncodedPrompt(neg, torch.ones(2, 9, dtype=torch.long)))
        with torch.no_grad():
            sd_kw = dict(prompt_embeds=mf.condition(hidden), negative_prompt_embeds=mf.condition(neg))
    for p in (mf, sd):
        p.scheduler = getattr(diffusers, scheduler).from_config(comps["scheduler"].config)
        p.set_progress_bar_config(disable=True)
    return mf, sd, mf_kw, sd_kw


@pytest.mark.parametrize("setup", ["sd", "projection"])
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_loop_equals_stable_diffusion_pipeline(setup, scheduler):
    mf, sd, mf_kw, sd_kw = _pair(setup, scheduler)
    kw = dict(num_inference_steps=STEPS, guidance_scale=6.0, num_images_per_prompt=2)
    a = mf(**mf_kw, **kw, generator=_gen(0), output_type="latent").images
    b = sd(**sd_kw, **kw, generator=_gen(0), output_type="latent").images
    assert torch.equal(a, b), f"latents differ by {(a - b).abs().max()}"
    a_img = mf(**mf_kw, **kw, generator=_gen(0), output_type="np").images
    b_img = sd(**sd_kw, **kw, generator=_gen(0), output_type="np").images
    np.testing.assert_array_equal(a_img, b_img)
    # the oracle is not vacuous: another generator, or no guidance, gives other latents
    c = mf(**mf_kw, **kw, generator=_gen(1), output_type="latent").images
    assert (a - c).abs().max() > 1e-3


def _recorder(store: list, edit_step: int | None = None):
    def callback(pipe, step, timestep, callback_kwargs):
        store.append((step, int(timestep), callback_kwargs["latents"].clone()))
        if step == edit_step:
            return {"latents": callback_kwargs["latents"] * 0.5 + 0.1}
        return {}

    return callback


@pytest.mark.parametrize("setup", ["sd", "projection"])
def test_callbacks_record_and_edit_like_diffusers(setup):
    mf, sd, mf_kw, sd_kw = _pair(setup, "EulerDiscreteScheduler")
    kw = dict(num_inference_steps=STEPS, guidance_scale=6.0, output_type="latent")
    seen_mf, seen_sd = [], []
    a = mf(**mf_kw, **kw, generator=_gen(0), callback_on_step_end=_recorder(seen_mf)).images
    b = sd(**sd_kw, **kw, generator=_gen(0), callback_on_step_end=_recorder(seen_sd)).images
    assert [s[:2] for s in seen_mf] == [s[:2] for s in seen_sd] and len(seen_mf) == STEPS
    assert all(torch.equal(x[2], y[2]) for x, y in zip(seen_mf, seen_sd))
    assert torch.equal(seen_mf[-1][2], a) and torch.equal(a, b)
    edited_mf = mf(**mf_kw, **kw, generator=_gen(0), callback_on_step_end=_recorder([], edit_step=1)).images
    edited_sd = sd(**sd_kw, **kw, generator=_gen(0), callback_on_step_end=_recorder([], edit_step=1)).images
    assert torch.equal(edited_mf, edited_sd) and (edited_mf - a).abs().max() > 1e-2


def test_diffusers_pipeline_callback_and_tensor_inputs():
    """diffusers' own ``SDCFGCutoffCallback`` (cuts ``prompt_embeds`` to the prompt rows, sets the guidance scale to
    0) and ``_interrupt`` act in MultiFusion as in StableDiffusionPipeline."""
    mf, sd, mf_kw, sd_kw = _pair("sd")
    one = {k: (EncodedPrompt(v.hidden_states[:1], v.attention_mask[:1]) if isinstance(v, EncodedPrompt) else v[:1])
           for k, v in mf_kw.items()}
    one_sd = {k: v[:1] for k, v in sd_kw.items()}
    kw = dict(num_inference_steps=STEPS, guidance_scale=6.0, output_type="latent")
    a = mf(**one, **kw, generator=_gen(0), callback_on_step_end=SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=1)).images
    b = sd(**one_sd, **kw, generator=_gen(0), callback_on_step_end=SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=1)).images
    plain = mf(**one, **kw, generator=_gen(0)).images
    assert torch.equal(a, b) and (a - plain).abs().max() > 1e-3

    names = []

    def stop_after_two(pipe, step, timestep, callback_kwargs):
        names.append(sorted(callback_kwargs))
        pipe._interrupt = step == 1
        return {}

    a = mf(**one, **kw, generator=_gen(0), callback_on_step_end=stop_after_two,
           callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]).images
    b = sd(**one_sd, **kw, generator=_gen(0), callback_on_step_end=stop_after_two,
           callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]).images
    assert torch.equal(a, b) and names == [["latents", "prompt_embeds"]] * 4
    assert MultiFusionPipeline._callback_tensor_inputs == ["latents", "prompt_embeds", "encoder_attention_mask"]


def test_callback_sees_padding_mask_and_bad_callback_arguments():
    comps = tiny_multifusion_components(encoder="text", family="gpt2")
    mf = MultiFusionPipeline(**comps)
    mf.set_progress_bar_config(disable=True)
    masks = []

    def cb(pipe, step, timestep, callback_kwargs):
        masks.append(callback_kwargs["encoder_attention_mask"])
        return {}

    mf(["a long prompt about a red apple on a table"], negative_prompt=["x"], num_inference_steps=2,
       generator=_gen(0), output_type="latent", callback_on_step_end=cb,
       callback_on_step_end_tensor_inputs=["encoder_attention_mask"])
    assert masks[0].shape[0] == 2 and not bool(masks[0].all())  # [negative; prompt] rows, padded negative
    with pytest.raises(ValueError, match=r"\['noise_pred'\].*choose from"):
        mf(["a"], num_inference_steps=1, callback_on_step_end=cb, callback_on_step_end_tensor_inputs=["noise_pred"])
    with pytest.raises(TypeError, match="callback_on_step_end must be callable"):
        mf(["a"], num_inference_steps=1, callback_on_step_end="latents")


def test_mvader_passes_callbacks():
    pipe = MVaderPipeline(**tiny_multifusion_components(encoder="magma", family="gpt2"))
    pipe.set_progress_bar_config(disable=True)
    seen = []
    out = pipe(["a red ball"], num_inference_steps=3, generator=_gen(0), output_type="latent",
               callback_on_step_end=_recorder(seen))
    assert [s[0] for s in seen] == [0, 1, 2] and torch.equal(seen[-1][2], out.images)
    with pytest.raises(ValueError, match="choose from"):
        pipe(["a"], num_inference_steps=1, callback_on_step_end=_recorder([]),
             callback_on_step_end_tensor_inputs=["weights"])


def test_cfg_cutoff_with_cross_attention_weighting(red_image):
    """After SDCFGCutoffCallback halves the rows, the UNet cross-attention weights follow: weights of 1 give the
    unweighted result, other weights run and change it."""
    pipe = MultiFusionPipeline(**tiny_multifusion_components())
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=3, output_type="latent")
    cut = lambda: SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=1)  # noqa: E731
    ones = pipe([red_image, "a red apple"], weights=[1.0, 1.0], cross_attention_weighting=True, generator=_gen(0),
                callback_on_step_end=cut(), **kw).images
    plain = pipe([red_image, "a red apple"], generator=_gen(0), callback_on_step_end=cut(), **kw).images
    weighted = pipe([red_image, "a red apple"], weights=[1.0, 5.0], cross_attention_weighting=True,
                    generator=_gen(0), callback_on_step_end=cut(), **kw).images
    torch.testing.assert_close(ones, plain, atol=1e-5, rtol=0)
    assert (weighted - plain).abs().max() > 1e-3
