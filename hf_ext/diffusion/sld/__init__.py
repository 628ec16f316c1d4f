"""Safe Latent Diffusion (SLD): pure guidance step, SD/SDXL pipelines, modular-diffusers guider and the I2P harness.

Public API (imported lazily; ``hf_ext.diffusion.sld.cli`` stays torch-free):
    * :class:`SLDConfig` (presets ``WEAK``, ``WEAK_DIFFUSERS``, ``MEDIUM``, ``STRONG``, ``MAX``), :func:`sld_step`,
      :class:`SLDGuidanceRunner`, :data:`PRESETS`; :class:`SLDConcept` (a concept with its own SLD values);
    * :class:`SafeLatentDiffusionPipeline` (SD 1.x/2.x), :class:`SafeLatentDiffusionXLPipeline` (SDXL);
    * :class:`SafeLatentGuidance` (a modular-diffusers guider) and :func:`sld_sdxl_modular_blocks` (diffusers'
      modular SDXL blocks with a safety-concept encoder step and a 3-branch denoiser);
    * I2P: :func:`load_i2p`, :func:`generate_i2p`, :func:`inappropriate_probability`,
      :func:`expected_max_inappropriateness`, :class:`CLIPZeroShotClassifier`.

Example:
    >>> from hf_ext.diffusion.sld import SafeLatentDiffusionPipeline, SLDConfig
    >>> from hf_ext.testing import tiny_sd_components
    >>> pipe = SafeLatentDiffusionPipeline(**tiny_sd_components())
    >>> pipe("a cat", num_inference_steps=2, sld_preset=SLDConfig.STRONG, output_type="np").images.shape
    (1, 32, 32, 3)
"""

from __future__ import annotations

from hf_ext.registry import register_component
from hf_ext.utils.imports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "guidance": ["DIFFUSERS_KWARGS", "PRESETS", "SLDConcept", "SLDConfig", "SLDDiagnostics", "SLDGuidanceRunner", "SLDStepOutput",
                 "sld_step"],
    "_common": ["DEFAULT_SAFETY_CONCEPT", "SafeLatentDiffusionPipelineOutput"],
    "pipeline_sld": ["SafeLatentDiffusionPipeline"],
    "pipeline_sld_xl": ["SafeLatentDiffusionXLPipeline"],
    "guider": ["SafeLatentGuidance", "sld_sdxl_modular_blocks"],
    "i2p": ["I2P_CATEGORIES", "I2P_COLUMNS", "load_i2p", "generate_i2p", "inappropriate_probability",
            "expected_max_inappropriateness", "i2p_report", "InappropriateClassifier", "CLIPZeroShotClassifier",
            "NudeNetClassifier", "AnyOfClassifier", "classify_images"],
})

register_component(
    name="sld", title="SLD", order=70, package=__name__,
    summary="Safe Latent Diffusion: generate with SLD, evaluate on I2P",
    cli=".cli", tour=".tour", cards=["sld"], extras=["diffusion", "plots"], notebook="09_sld.ipynb",
)
