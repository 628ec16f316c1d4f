"""MultiFusion: image generation conditioned on interleaved multilingual text and images (Bellagente et al., 2023).

Public API (imported lazily; ``import hf_ext.diffusion.multifusion`` does not import torch):
    * :class:`InterleavedEncoder`, :class:`EncodedPrompt`, :func:`normalize_prompts` — encode ``list[str | PIL.Image]``
      prompts with a Llava-style VLM, a :class:`MagmaEncoder` or a causal LM; per-item weights inside the LM attention.
    * :class:`MagmaEncoder`, :class:`ImagePrefix`, :class:`BottleneckAdapter`, :class:`MultiFusionProjector` — components.
    * :class:`MultiFusionPipeline`, :class:`MultiFusionPipelineOutput` — the diffusers pipeline.
    * :func:`cross_attention_weights`, :class:`WeightedCrossAttnProcessor` — token weighting in the UNet.
    * :mod:`.training` (stage A semantic bias tuning, stage B fusion tuning on Accelerate), :mod:`.evaluation`
      (MCC-250-style compositional eval, multilingual check), :func:`tiny_multifusion_components`.

Example:
    >>> from hf_ext.diffusion.multifusion import MultiFusionPipeline, tiny_multifusion_components
    >>> pipe = MultiFusionPipeline(**tiny_multifusion_components())  # doctest: +SKIP
"""

import importlib
from typing import Any

_EXPORTS = {
    "InterleavedEncoder": "encoding_multifusion", "EncodedPrompt": "encoding_multifusion",
    "normalize_prompts": "encoding_multifusion", "pad_and_stack": "encoding_multifusion",
    "MagmaEncoder": "modeling_multifusion", "ImagePrefix": "modeling_multifusion",
    "BottleneckAdapter": "modeling_multifusion", "MultiFusionProjector": "modeling_multifusion",
    "MultiFusionPipeline": "pipeline_multifusion", "MultiFusionPipelineOutput": "pipeline_multifusion",
    "cross_attention_weights": "attention_processor", "WeightedCrossAttnProcessor": "attention_processor",
    "tiny_multifusion_components": "tiny", "tiny_magma_encoder": "tiny", "tiny_vision_tower": "tiny",
    "tiny_image_processor": "tiny",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
