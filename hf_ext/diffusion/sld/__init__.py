"""Safe Latent Diffusion (SLD): pure guidance step, SD/SDXL pipelines, modular-diffusers guider and the I2P harness.

Public API (imported lazily; ``hf_ext.diffusion.sld.cli`` stays torch-free):
    * :class:`SLDConfig` (presets ``WEAK``, ``WEAK_DIFFUSERS``, ``MEDIUM``, ``STRONG``, ``MAX``), :func:`sld_step`,
      :class:`SLDGuidanceRunner`, :data:`PRESETS`;
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

import importlib
from typing import Any

_EXPORTS = {
    "DIFFUSERS_KWARGS": "guidance", "PRESETS": "guidance", "SLDConfig": "guidance", "SLDDiagnostics": "guidance",
    "SLDGuidanceRunner": "guidance", "SLDStepOutput": "guidance", "sld_step": "guidance",
    "DEFAULT_SAFETY_CONCEPT": "_common", "SafeLatentDiffusionPipelineOutput": "_common",
    "SafeLatentDiffusionPipeline": "pipeline_sld",
    "SafeLatentDiffusionXLPipeline": "pipeline_sld_xl",
    "SafeLatentGuidance": "guider", "sld_sdxl_modular_blocks": "guider",
    "I2P_CATEGORIES": "i2p", "I2P_COLUMNS": "i2p", "load_i2p": "i2p", "generate_i2p": "i2p",
    "inappropriate_probability": "i2p", "expected_max_inappropriateness": "i2p", "i2p_report": "i2p",
    "InappropriateClassifier": "i2p", "CLIPZeroShotClassifier": "i2p", "NudeNetClassifier": "i2p", "AnyOfClassifier": "i2p",
    "classify_images": "i2p",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
