"""Token weighting in a diffusers UNet's cross-attention (``attn2``): ``+log w_k`` on the logits of key ``k``.

:func:`cross_attention_weights` wraps every cross-attention module's processor in a :class:`WeightedCrossAttnProcessor`
for the duration of a ``with`` block and restores the original processors afterwards (also on exceptions). The
weights live in a ``contextvars`` variable, so concurrent requests do not see each other's weights. The wrapped
processor is called unchanged with ``attention_mask = mask + log w`` (the UNet's own ``encoder_attention_mask`` bias is
kept), so any mask-aware processor (``AttnProcessor2_0``, ``AttnProcessor``) works. Weights of 1 reproduce the plain
UNet; weight 0 removes a key.

Example:
    >>> from hf_ext.testing import tiny_sd_components
    >>> unet = tiny_sd_components()["unet"]
    >>> x, t, ctx = torch.randn(1, 4, 16, 16), torch.tensor([10]), torch.randn(1, 5, 32)
    >>> with cross_attention_weights(unet, torch.tensor([[1.0, 1.0, 5.0, 5.0, 1.0]])):
    ...     out = unet(x, t, encoder_hidden_states=ctx).sample
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["WeightedCrossAttnProcessor", "cross_attention_modules", "cross_attention_weights"]

_WEIGHTS: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar("hf_ext_unet_key_weights", default=None)


class WeightedCrossAttnProcessor:
    """Adds ``log w`` (the active :func:`cross_attention_weights`) to a wrapped processor's attention mask.

    Args:
        base: the processor it wraps (called with the modified mask).
    """

    def __init__(self, base: Callable[..., torch.Tensor]):
        self.base = base

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        weights = _WEIGHTS.get()
        if weights is None or encoder_hidden_states is None:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        batch, keys = encoder_hidden_states.shape[0], encoder_hidden_states.shape[1]
        w = weights.to(encoder_hidden_states.device)
        if w.shape[1] != keys:
            raise ValueError(f"cross-attention weights have {w.shape[1]} keys but the encoder sequence has {keys}")
        if w.shape[0] != batch:
            if w.shape[0] == 1 or batch % w.shape[0] == 0:
                w = w.repeat_interleave(batch // w.shape[0], dim=0)
            else:
                raise ValueError(f"cross-attention weights have {w.shape[0]} rows but the batch has {batch}")
        dtype = hidden_states.dtype
        bias = torch.log(w.float()).clamp_min(torch.finfo(dtype).min / 2).to(dtype).view(batch, 1, keys)
        if attention_mask is not None:
            mask = attention_mask.to(dtype)
            if mask.dim() == 2:
                mask = mask.view(batch, 1, keys)
            if mask.shape[0] == batch:
                bias = bias + mask
            else:  # already repeated over heads: [B*heads, 1, K]
                bias = bias.repeat_interleave(mask.shape[0] // batch, dim=0) + mask
        return self.base(attn, hidden_states, encoder_hidden_states, bias, temb, **kwargs)


def cross_attention_modules(unet: nn.Module) -> list[nn.Module]:
    """The cross-attention modules of a diffusers UNet (``attn2`` of every transformer block).

    Raises:
        ValueError: the model has none (not a conditional UNet).
    """
    modules = [m for name, m in unet.named_modules()
               if name.endswith("attn2") and hasattr(m, "processor") and getattr(m, "is_cross_attention", True)]
    if not modules:
        raise ValueError(f"{type(unet).__name__} has no cross-attention (attn2) modules to weight")
    return modules


@contextmanager
def cross_attention_weights(unet: nn.Module, weights: torch.Tensor | Sequence[float] | Sequence[Sequence[float]]
                            ) -> Iterator[None]:
    """Weight the keys of the UNet's cross-attention inside a ``with`` block.

    Args:
        unet: a diffusers ``UNet2DConditionModel`` (or any model with ``attn2`` ``Attention`` modules).
        weights: ``[B, K]`` (or ``[K]``) non-negative weights over the encoder sequence; ``B`` may be 1 or divide the
            batch (classifier-free guidance doubles it: pass ``[uncond rows; cond rows]``).

    Raises:
        ValueError: negative / non-finite weights, or no cross-attention modules.
    """
    w = torch.as_tensor(weights, dtype=torch.float32)
    if w.dim() == 1:
        w = w.unsqueeze(0)
    if w.dim() != 2 or not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"cross-attention weights must be a [B, K] tensor of finite values >= 0, got shape {tuple(w.shape)}")
    modules = cross_attention_modules(unet)
    installed = []
    for module in modules:
        if not isinstance(module.processor, WeightedCrossAttnProcessor):
            installed.append((module, module.processor))
            module.processor = WeightedCrossAttnProcessor(module.processor)
    token = _WEIGHTS.set(w)
    try:
        yield
    finally:
        _WEIGHTS.reset(token)
        for module, original in installed:
            module.processor = original
