"""The 4D attention masks a decoder builds for itself, per layer type (full and sliding-window attention).

Example:
    >>> import torch
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("llama")
    >>> masks = build_layer_masks(model.config, torch.zeros(1, 4, 8), None, torch.arange(4)[None])
    >>> sorted(masks)
    ['full_attention']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..compat import build_causal_mask

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = ["build_layer_masks"]


def build_layer_masks(
    decoder_config: PretrainedConfig,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor,
) -> dict[str, torch.Tensor | None]:
    """The per-layer-type 4D masks the decoder would build itself (``full_attention`` / ``sliding_attention``).

    Args:
        decoder_config: the decoder's config (carries ``_attn_implementation`` and ``layer_types``).
        hidden_states: ``[B, T, D]``, used for batch size, length, dtype and device.
        attention_mask: ``[B, T]`` padding mask or ``None``.
        position_ids: ``[B, T]``.

    Returns:
        ``{layer_type: mask}``; a mask may be ``None`` where the attention kernel is causal on its own.
    """
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    def call(fn):
        return build_causal_mask(fn, decoder_config, hidden_states, attention_mask, position_ids)

    masks = {"full_attention": call(create_causal_mask)}
    layer_types = getattr(decoder_config, "layer_types", None) or []
    if "sliding_attention" in layer_types:
        masks["sliding_attention"] = call(create_sliding_window_causal_mask)
    return masks
