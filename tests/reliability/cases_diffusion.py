"""Catalogue cases: hf_ext.diffusion (SLD and MultiFusion), on the tiny offline pipelines."""

from __future__ import annotations

import functools

from hf_ext.diffusion.multifusion import MultiFusionPipeline, MultiFusionProjector
from hf_ext.diffusion.multifusion.tiny import tiny_multifusion_components
from hf_ext.diffusion.sld import SafeLatentDiffusionPipeline, SLDConfig
from hf_ext.tiny import tiny_sd_components

from .catalogue import case, float_cases, int_cases


@functools.cache
def sld():
    return SafeLatentDiffusionPipeline(**tiny_sd_components())


@functools.cache
def multifusion():
    return MultiFusionPipeline(**tiny_multifusion_components())


def _sld(**kw):
    return sld()("a cat", output_type="latent", **{"num_inference_steps": 1, **kw})


int_cases("sld.SafeLatentDiffusionPipeline", lambda v: _sld(num_inference_steps=v), "num_inference_steps", min=1,
          extra=(10**7,))
for name in ("guidance_scale", "momentum_scale"):
    float_cases("sld.SLDConfig", lambda v, n=name: SLDConfig(**{n: v}), f"SLDConfig.{name}", min=0)
float_cases("sld.SLDConfig", lambda v: SLDConfig(mom_beta=v), "mom_beta", min=0, max=1)
for bad in (-1, "10", None, True, 1.5, -0.5):
    case(f"sld.SLDConfig:warmup_steps={bad!r}", lambda b=bad: SLDConfig(warmup_steps=b), "warmup_steps", repr(bad))
int_cases("multifusion.MultiFusionPipeline", lambda v: multifusion()("a cat", num_inference_steps=v,
                                                                     output_type="latent"),
          "num_inference_steps", min=1)
int_cases("multifusion.MultiFusionPipeline", lambda v: multifusion()("a cat", num_inference_steps=1,
                                                                     num_images_per_prompt=v, output_type="latent"),
          "num_images_per_prompt", min=1)
int_cases("multifusion.MultiFusionProjector", lambda v: MultiFusionProjector(v, 8), "in_dim", min=1, size=True)
