"""Small input helpers shared by the core: position ids from padding masks, validation."""

from __future__ import annotations

import torch


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.LongTensor:
    """Position ids that count only real tokens, so left-padded rows get the positions of their unpadded twin.

    Args:
        attention_mask: ``[B, T]`` with 1 for real tokens and 0 for padding.

    Returns:
        ``[B, T]`` long tensor: ``cumsum(mask) - 1``, clamped at 0 on padding (whose value is never attended).

    Example:
        >>> position_ids_from_mask(torch.tensor([[0, 0, 1, 1, 1]])).tolist()
        [[0, 0, 0, 1, 2]]
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be 2D [batch, seq], got shape {tuple(attention_mask.shape)}")
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).clamp_min(0).masked_fill(mask == 0, 0)
