"""``MVaderPipeline``: M-VADER (Weinbach et al., 2022) — the S-MAGMA encoder (causal LM + MAGMA image prefix +
adapters, biases tuned for semantic search) conditioning a fusion-tuned Stable Diffusion UNet.

It shares every part with :class:`~hf_ext.diffusion.multifusion.MultiFusionPipeline` (encoding, projection, guidance,
save/load, offload). What differs is what M-VADER had: the encoder must be a
:class:`~hf_ext.diffusion.multifusion.MagmaEncoder` (S-MAGMA), and there is no AtMan token weighting (that came with
MultiFusion); prompts are arbitrary interleavings of text and several images.

Example:
    >>> from hf_ext.diffusion.multifusion import tiny_multifusion_components
    >>> pipe = MVaderPipeline(**tiny_multifusion_components(encoder="magma", family="gpt2"))
    >>> pipe.set_progress_bar_config(disable=True)
    >>> g = torch.Generator().manual_seed(0)
    >>> pipe(["a red ball"], num_inference_steps=2, generator=g, output_type="latent").images.shape
    torch.Size([1, 4, 16, 16])
"""

from __future__ import annotations

import torch  # noqa: F401 - used in the docstring example

# ConfigMixin, ModelMixin: the component loader looks these names up here
from diffusers import AutoencoderKL, ConfigMixin, ModelMixin, UNet2DConditionModel  # noqa: F401
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import PreTrainedTokenizerBase
from transformers.image_processing_utils import BaseImageProcessor

from ..multifusion.modeling_multifusion import MagmaEncoder, MultiFusionProjector  # noqa: F401
from ..multifusion.pipeline_multifusion import MultiFusionPipeline, MultiFusionPipelineOutput

__all__ = ["MVaderPipeline", "MultiFusionPipelineOutput"]


class MVaderPipeline(MultiFusionPipeline):
    """M-VADER: S-MAGMA-encoded interleaved prompts → image (no per-item weighting).

    Args: as :class:`MultiFusionPipeline`; ``encoder`` must be a :class:`MagmaEncoder`.

    Raises:
        TypeError: the encoder is not a :class:`MagmaEncoder`.
    """

    # resolved at run time by diffusers, like MultiFusionPipeline's: the names are imported for real above
    def __init__(self, encoder: MagmaEncoder, tokenizer: PreTrainedTokenizerBase, unet: UNet2DConditionModel,
                 vae: AutoencoderKL, scheduler: SchedulerMixin, image_processor: BaseImageProcessor | None = None,
                 projection: MultiFusionProjector | None = None, encoder_layer: int = -1):
        if encoder is not None and not isinstance(encoder, MagmaEncoder):
            raise TypeError(f"MVaderPipeline needs an S-MAGMA encoder (hf_ext MagmaEncoder: causal LM + image prefix), got "
                            f"{type(encoder).__name__}; use MultiFusionPipeline for VLM encoders")
        super().__init__(encoder, tokenizer, unet, vae, scheduler, image_processor=image_processor,
                         projection=projection, encoder_layer=encoder_layer)

    @classmethod
    def from_multifusion(cls, pipe: MultiFusionPipeline) -> MVaderPipeline:
        """An M-VADER pipeline sharing ``pipe``'s components (no copies)."""
        return cls(**{name: getattr(pipe, name) for name in ("encoder", "tokenizer", "unet", "vae", "scheduler",
                                                            "image_processor", "projection")},
                   encoder_layer=pipe.config.encoder_layer)

    def __call__(self, prompt=None, negative_prompt=None, weights=None, negative_weights=None, **kwargs):
        if weights is not None or negative_weights is not None or kwargs.get("cross_attention_weighting"):
            raise ValueError("M-VADER has no per-item token weighting; use MultiFusionPipeline (AtMan weighting) for weights")
        return super().__call__(prompt, negative_prompt, **kwargs)
