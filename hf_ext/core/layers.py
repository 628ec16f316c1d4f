"""Resume a decoder from layer ``l``: the building block of DTM's layer scan and AtMan's prefix reuse.

Example:
    >>> import torch
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("llama")
    >>> ids = torch.tensor([[1, 5, 6, 7]])
    >>> out = model(ids, output_hidden_states=True)
    >>> logits = run_layers(model, out.hidden_states[1], start_layer=1, return_logits=True)
    >>> torch.allclose(logits, out.logits, atol=1e-5)
    True
"""

from __future__ import annotations

import inspect

import torch

from ..compat import build_causal_mask
from .anatomy import get_anatomy
from .inputs import position_ids_from_mask


def _layer_accepts(layer: torch.nn.Module) -> set[str]:
    return set(inspect.signature(layer.forward).parameters)


def build_layer_masks(decoder_config, hidden_states: torch.Tensor, attention_mask, position_ids) -> dict:
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


def run_layers(
    model: torch.nn.Module,
    hidden_states: torch.Tensor,
    start_layer: int,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.LongTensor | None = None,
    *,
    end_layer: int | None = None,
    return_logits: bool = False,
) -> torch.Tensor:
    """Continue the decoder of ``model`` from ``start_layer`` on given hidden states.

    Rotary families (Llama, Qwen2, GPT-NeoX …) get their position embeddings recomputed from ``position_ids``;
    absolute-position families (GPT-2, OPT) already carry positions in the hidden states (added before layer 0).

    Args:
        model: a transformers causal LM (see :func:`~hf_ext.core.anatomy.get_anatomy`).
        hidden_states: ``[B, T, D]``, the input of layer ``start_layer`` — i.e. ``output_hidden_states[start_layer]``
            of a full forward (index 0 is the embedding output).
        start_layer: first layer to run, ``0 <= start_layer <= num_layers``.
        attention_mask: ``[B, T]`` padding mask (1 = token, 0 = padding), or ``None`` for no padding.
        position_ids: ``[B, T]``. Defaults to ``position_ids_from_mask(attention_mask)`` when a mask is given (so
            left padding does not shift positions), else ``0..T-1``. Pass the ids the full forward used.
        end_layer: stop before this layer (default: run to the end). The final norm and head run only when the
            stack is run to the end.
        return_logits: apply the LM head and return ``[B, T, V]`` logits instead of hidden states.

    Returns:
        ``[B, T, D]`` hidden states after ``end_layer - 1`` (after the final norm when run to the end), or
        ``[B, T, V]`` logits.

    Raises:
        ValueError: bad layer indices, shapes, or ``return_logits`` with a partial stack or a model without head.
    """
    anatomy = get_anatomy(model)
    n = anatomy.num_layers
    end = n if end_layer is None else end_layer
    if not (isinstance(start_layer, int) and 0 <= start_layer <= n):
        raise ValueError(f"start_layer={start_layer!r} must be an int in [0, {n}] for this {n}-layer model")
    if not (isinstance(end, int) and start_layer <= end <= n):
        raise ValueError(f"end_layer={end_layer!r} must be an int in [start_layer={start_layer}, {n}]")
    if hidden_states.dim() != 3:
        raise ValueError(f"hidden_states must be [batch, seq, hidden], got shape {tuple(hidden_states.shape)}")
    batch, length, _ = hidden_states.shape
    if attention_mask is not None and tuple(attention_mask.shape) != (batch, length):
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} does not match hidden states {(batch, length)}")
    if return_logits and (end != n or anatomy.lm_head is None):
        raise ValueError("return_logits=True needs end_layer=None (the whole stack) and a model with an LM head")

    if position_ids is None:
        if attention_mask is not None:
            position_ids = position_ids_from_mask(attention_mask)
        else:
            position_ids = torch.arange(length, device=hidden_states.device).unsqueeze(0).expand(batch, -1)
    position_ids = position_ids.to(hidden_states.device)

    decoder_config = getattr(anatomy.decoder, "config", anatomy.text_config)
    masks = build_layer_masks(decoder_config, hidden_states, attention_mask, position_ids)
    layer_types = getattr(decoder_config, "layer_types", None) or ["full_attention"] * n

    position_embeddings = None
    if anatomy.rotary_emb is not None:
        position_embeddings = anatomy.rotary_emb(hidden_states, position_ids)

    for index in range(start_layer, end):
        layer = anatomy.layers[index]
        kwargs = dict(attention_mask=masks[layer_types[index]], position_ids=position_ids, use_cache=False)
        if position_embeddings is not None and "position_embeddings" in _layer_accepts(layer):
            kwargs["position_embeddings"] = position_embeddings
        out = layer(hidden_states, **kwargs)
        hidden_states = out[0] if isinstance(out, tuple) else out

    if end == n:
        for module in anatomy.final_modules:
            hidden_states = module(hidden_states)
    if return_logits:
        return anatomy.lm_head(hidden_states)
    return hidden_states
