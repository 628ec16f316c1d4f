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
    >>> pipe = MultiFusionPipeline(**tiny_multifusion_components())
"""

from __future__ import annotations

from hf_ext.registry import register_component
from hf_ext.utils.imports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "encoding_multifusion": ["InterleavedEncoder", "EncodedPrompt", "normalize_prompts", "pad_and_stack"],
    "modeling_multifusion": ["MagmaEncoder", "ImagePrefix", "BottleneckAdapter", "MultiFusionProjector"],
    "pipeline_multifusion": ["MultiFusionPipeline", "MultiFusionPipelineOutput"],
    "attention_processor": ["cross_attention_weights", "WeightedCrossAttnProcessor"],
    "tiny": ["tiny_multifusion_components", "tiny_magma_encoder", "tiny_vision_tower", "tiny_image_processor"],
    "tuning": ["enable_bitfit", "enable_lora", "trainable_parameter_names", "language_model_of"],
})

register_component(
    name="multifusion", title="MultiFusion", order=80, package=__name__,
    summary="MultiFusion: images from interleaved text and image prompts",
    cli=".cli", tour=".tour", cards=["multifusion"], extras=["diffusion"], notebook="10_multifusion.ipynb",
)
