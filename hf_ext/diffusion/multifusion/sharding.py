"""FSDP2 for MultiFusion's two training stages.

* Stage A (:func:`shard_semantic`): the encoder's language model is a transformers decoder: its layers (found by
  the model anatomy, for a Llava-style VLM, a :class:`~.modeling_multifusion.MagmaEncoder` or a plain causal LM)
  are the units, the whole encoder (embeddings, vision tower, image prefix) the root.
* Stage B (:func:`shard_fusion`): the trained part is the UNet (its cross-attention) and the projection. The UNet's
  down, mid and up blocks are the units and the UNet the root; the projection is its own root. The frozen encoder
  and VAE run without gradients and stay replicated.

Frozen and trainable parameters may share a unit: FSDP2 gathers both and reduce-scatters only the gradients that
exist. Collect the trainable parameters (and build the optimizer) after sharding.

Example (under ``torchrun --nproc_per_node 2``):
    >>> from hf_ext.diffusion.multifusion import MultiFusionPipeline, tiny_multifusion_components
    >>> pipe = MultiFusionPipeline(**tiny_multifusion_components())
    >>> shard_fusion(pipe)  # needs a process group  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from ...core.sharding import decoder_layers, shard_model

if TYPE_CHECKING:
    from .encoding_multifusion import InterleavedEncoder
    from .pipeline_multifusion import MultiFusionPipeline

__all__ = ["shard_fusion", "shard_semantic", "unet_blocks"]


def shard_semantic(encoder: InterleavedEncoder, **shard_kwargs: Any) -> nn.Module:
    """Shard the model of an :class:`~.encoding_multifusion.InterleavedEncoder` for stage A; returns ``encoder.model``.

    Args:
        encoder: the interleaved encoder (``encoder.lm`` is its language model, ``encoder.model`` the whole model).
        **shard_kwargs: see :func:`hf_ext.core.sharding.shard_model`.
    """
    return shard_model(encoder.model, decoder_layers(encoder.lm), **shard_kwargs)


def unet_blocks(unet: nn.Module) -> list[nn.Module]:
    """The down blocks, mid block and up blocks of a diffusers ``UNet2DConditionModel``-style UNet.

    Raises:
        ValueError: the UNet has no ``down_blocks`` / ``up_blocks``.
    """
    down, up = getattr(unet, "down_blocks", None), getattr(unet, "up_blocks", None)
    if not isinstance(down, nn.ModuleList) or not isinstance(up, nn.ModuleList):
        raise ValueError(f"{type(unet).__name__} has no down_blocks/up_blocks ModuleLists; shard_fusion supports "
                         "UNet2DConditionModel-style UNets")
    mid = getattr(unet, "mid_block", None)
    return [*down, *([mid] if isinstance(mid, nn.Module) else []), *up]


def shard_fusion(pipe: MultiFusionPipeline, **shard_kwargs: Any) -> MultiFusionPipeline:
    """Shard a :class:`~.pipeline_multifusion.MultiFusionPipeline` for stage B (UNet blocks + UNet, the projection).

    Args:
        pipe: the pipeline (modified in place; returned).
        **shard_kwargs: see :func:`hf_ext.core.sharding.shard_model`.
    """
    shard_model(pipe.unet, unet_blocks(pipe.unet), **shard_kwargs)
    if pipe.projection is not None:
        shard_model(pipe.projection, [], **shard_kwargs)
    return pipe
