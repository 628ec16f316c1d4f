"""Segment attention: several suffix recomputations packed into one row, each attending to what its own forward would.

A workload such as AtMan recomputes positions ``s..L-1`` of one sequence many times (once per perturbation),
re-using a base pass's keys/values for ``0..s-1``. Packing puts several such *segments* end to end in one batch
row, so a forward carries about ``L`` tokens instead of one short suffix. Inside attention, segment ``c`` (start
``s_c``, ``n_c = L - s_c`` queries) attends to

    [the base pass's cached keys 0..s_c-1 ; the segment's own new keys s_c..L-1]

that is, to the ``L`` positions of its sequence, with its own additive bias ``[n_c, L]`` (causality, padding and
log-additive key weights), computed by the model's own sdpa/eager attention function. Compared with one dense
``[Q, L + Q]`` mask over the whole packed row this does ``Σ n_c · L`` instead of ``Q · (L + Q)`` score
computations per row, and the segments' new keys are never stored: the cache keeps the base pass's ``L`` positions
and the forward runs without a cache (``use_cache=False``), so its memory is that of one plain forward.

Example (two suffixes, starts 4 and 7 of a 10-token sequence, packed in one row, each with the plain causal bias):
    >>> import torch
    >>> from transformers import DynamicCache
    >>> from hf_ext.core.cache import cache_argument
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("llama")
    >>> ids, L = torch.arange(4, 14).view(1, 10), 10
    >>> cache = DynamicCache()
    >>> _ = model(input_ids=ids, use_cache=True, **{cache_argument(model): cache})        # base pass
    >>> def causal(s):  # [1, 1, L - s, L]: query at position p sees keys 0..p
    ...     visible = torch.arange(L).view(1, L) <= torch.arange(s, L).view(-1, 1)
    ...     return torch.zeros(L - s, L).masked_fill(~visible, torch.finfo(torch.float32).min).view(1, 1, L - s, L)
    >>> segments = [Segment(row=0, offset=0, start=4, bias=causal(4)), Segment(row=0, offset=6, start=7, bias=causal(7))]
    >>> row = torch.cat([ids[:, 4:], ids[:, 7:]], dim=1)                    # 6 + 3 queries in one row
    >>> positions = torch.cat([torch.arange(4, L), torch.arange(7, L)]).view(1, -1)
    >>> with segment_attention(model, SegmentPlan(cache, segments, layer_map(model))):
    ...     packed = model(input_ids=row, position_ids=positions, use_cache=False).logits
    >>> full = model(input_ids=ids).logits
    >>> torch.allclose(packed[:, :6], full[:, 4:], atol=1e-5), torch.allclose(packed[:, 6:], full[:, 7:], atol=1e-5)
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .anatomy import get_anatomy
from .attention_interface import routed_attention

if TYPE_CHECKING:
    from transformers import Cache

__all__ = ["Segment", "SegmentPlan", "layer_map", "segment_attention"]


@dataclass(frozen=True)
class Segment:
    """One suffix recomputation inside a packed row.

    Attributes:
        row: batch row of the packed forward.
        offset: index of the segment's first query in its row.
        start: ``s``, the sequence position of that query (the segment covers positions ``s..L-1``).
        bias: ``[1, 1, L - s, L]`` additive attention bias over the sequence's ``L`` positions, in the model's dtype.
    """

    row: int
    offset: int
    start: int
    bias: torch.Tensor


class SegmentPlan:
    """What the attention layers of one packed forward compute (see the module doc).

    Args:
        cache: the base pass's cache; layer ``i``'s ``keys``/``values`` (``[1, H_kv, >= L, d]``) hold the base keys.
        segments: the segments of every row (rows may hold several; queries in no segment, i.e. row padding, get a
            zero attention output).
        layer_of: ``{id(attention module): layer index}`` of the layers the plan covers.
    """

    def __init__(self, cache: Cache, segments: Sequence[Segment], layer_of: dict[int, int]):
        self.cache = cache
        self.segments = list(segments)
        self.layer_of = layer_of

    def applies_to(self, module: nn.Module) -> bool:
        """Whether ``module`` is an attention layer this plan routes (by identity)."""
        return id(module) in self.layer_of

    def __call__(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                 base_fn, **kwargs):
        """The router of :func:`segment_attention` (see :mod:`hf_ext.core.attention_interface`): :meth:`attend` for
        the layers of the plan, ``NotImplemented`` for the others. The model's own mask is not used."""
        if id(module) not in self.layer_of:
            return NotImplemented
        return self.attend(module, query, key, value, base_fn, **kwargs)

    def attend(
        self,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        base_fn: Callable[..., tuple[torch.Tensor, torch.Tensor | None]],
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        """Attention of one layer: ``query`` ``[B, H, Q, d]``, ``key``/``value`` ``[B, H_kv, Q, d]`` (the row's new
        states only), computed per segment by ``base_fn`` (the model's own sdpa/eager attention function, called as
        ``base_fn(module, query, key, value, bias, **kwargs)``; ``kwargs`` are the layer's attention keywords).
        Returns ``([B, Q, H, d_v], None)`` as transformers' attention functions do."""
        batch, heads, q_len, _ = query.shape
        index = self.layer_of[id(module)]
        cached = self.cache.layers[index] if index < len(self.cache.layers) else None
        if getattr(cached, "keys", None) is None or key.shape[-2] != q_len:
            # a layer that stores no keys of its own, or reads another layer's (cross-layer KV sharing): the
            # row's new states are not its keys, so segments cannot be stitched onto the base pass's
            raise ValueError(f"segment attention: decoder layer {index}'s {type(module).__name__} reads keys it did "
                             f"not compute in this forward ({key.shape[-2]} keys for {q_len} queries, "
                             f"{len(self.cache.layers)} cached layers)")
        base_k, base_v = cached.keys, cached.values
        out = query.new_zeros(batch, q_len, heads, value.shape[-1])
        for seg in self.segments:
            n, s, r, o = seg.bias.shape[-2], seg.start, seg.row, seg.offset
            k = torch.cat([base_k[:1, :, :s], key[r : r + 1, :, o : o + n]], dim=2)
            v = torch.cat([base_v[:1, :, :s], value[r : r + 1, :, o : o + n]], dim=2)
            y, _ = base_fn(module, query[r : r + 1, :, o : o + n], k, v, seg.bias, **kwargs)
            out[r, o : o + n] = y[0]
        return out, None


@contextmanager
def segment_attention(model: nn.Module, plan: SegmentPlan) -> Iterator[SegmentPlan]:
    """Run the attention layers ``plan`` covers by the plan inside the block (other layers run unchanged).

    Args:
        model: a transformers causal LM / VLM with ``sdpa`` or ``eager`` attention.
        plan: the plan (its ``layer_of`` from :func:`layer_map`).

    Raises:
        ValueError: flash/flex attention (a per-segment bias is not possible there).
    """
    anatomy = get_anatomy(model)
    with routed_attention(model, [anatomy.attentions[i] for i in sorted(set(plan.layer_of.values()))], plan):
        yield plan


def layer_map(model: nn.Module, layers: int | Sequence[int] | None = None) -> dict[int, int]:
    """``{id(attention module): layer index}`` of ``model``'s selected decoder layers (``None``: all)."""
    anatomy = get_anatomy(model)
    return {id(anatomy.attentions[i]): i for i in anatomy.attention_layers(layers)}
