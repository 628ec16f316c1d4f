"""Attention manipulation: per-batch-row, per-key weights applied inside any transformers model's attention.

This is the one mechanism behind AtMan (explain by suppressing keys, steer generation) and MultiFusion's token
weighting. For query row ``i`` of batch row ``b``, with pre-softmax scores ``S = QKᵀ/√d`` and the set ``V_i`` of
keys that row may see (causality, padding, sliding window):

* ``mode="log_additive"``: ``S'_ik = S_ik + log w_bk``. Multiplies the unnormalised attention ``exp(S)`` by ``w``:
  ``w = 0`` removes the key exactly, ``w > 1`` amplifies it.
* ``mode="multiplicative"`` (AtMan's reference formulation, made causal): ``S'_ik = (S_ik - min_{j∈V_i} S_ij) · w_bk``.
  The shift makes scores non-negative so that ``w < 1`` really suppresses; the minimum is taken over *visible*
  keys only, so suppressing key ``k`` leaves every row ``< k`` unchanged (the reference code's minimum over all keys
  lets future tokens leak into earlier rows).
* ``mode="multiplicative_reference"``: the reference code's variant, for reproducing published numbers only: the
  minimum runs over *all* keys of the row, masked future ones included (padding excluded), so a row's result
  depends on tokens after it (a non-causal artefact). Prefix reuse is not exact under it.

Weights of 1 reproduce the unmodified model in both modes. A query row whose visible keys all have weight 0 is
left unmodified in log-additive mode (there is nothing to attend to otherwise).

How it plugs in: :func:`attention_controls` routes the model's attention through
:func:`hf_ext.core.attention_interface.routed_attention` (hf_ext's functions registered with transformers'
``AttentionInterface`` and ``AttentionMaskInterface``); the router reads the weights from a ``contextvars`` variable
and, where no control applies (other layers, other threads, other models), the original sdpa/eager function runs
unchanged. Attention modules that compute their own softmax instead (Bloom, GPT-Neo, MPT, XGLM, OpenAI-GPT …) get
the same formulas applied to the scores at that softmax (:mod:`hf_ext.core.attention_bypass`), their visible keys
read from the masked scores; ``"multiplicative_reference"`` is refused there (it needs the raw scores of future keys,
which such a model masks before its softmax).

Example:
    >>> import torch
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("llama")
    >>> ids = torch.tensor([[1, 40, 41, 42, 43]])
    >>> w = key_weights(1, 5, [[2]], 0.0)          # suppress key 2 in every layer
    >>> with attention_controls(model, w):
    ...     suppressed = model(ids).logits
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .anatomy import get_anatomy
from .attention_bypass import intercept_attention
from .attention_interface import register_attention_functions, routed_attention
from .key_positions import as_weights, items_to_key_positions, key_weights, spans_to_key_positions  # noqa: F401 (re-exported: their home before 0.3)

__all__ = ["MODES", "AttentionControl", "attention_controls", "log_additive_bias", "register_attention_functions"]

MODES = ("log_additive", "multiplicative", "multiplicative_reference")


@dataclass(frozen=True)
class AttentionControl:
    """One active set of key weights.

    Attributes:
        weights: ``[B, K]`` float32 key weights (``B`` may be 1 to broadcast over the batch).
        mode: ``"log_additive"`` or ``"multiplicative"``.
        attention_layers: ``{id(attention_module): layer_index}`` of the controlled layers.
        model_label: ``"'type' (Class)"`` of the controlled model, for error messages.
    """

    weights: torch.Tensor
    mode: str
    attention_layers: dict
    model_label: str = "the model"

    def applies_to(self, module: nn.Module) -> bool:
        """Whether ``module`` is one of the attention layers this control applies to (by identity)."""
        return id(module) in self.attention_layers


_CONTROLS: contextvars.ContextVar[tuple[AttentionControl, ...]] = contextvars.ContextVar("hf_ext_attention_controls", default=())


# --------------------------------------------------------------------------------------------------------------
# The router: per-key weights inside the attention call
# --------------------------------------------------------------------------------------------------------------
def _expand_weights(weights: torch.Tensor, batch: int, keys: int, device) -> torch.Tensor:
    w = weights.to(device)
    if w.shape[1] < keys:  # keys added after the weights were set (generation): weight 1
        w = torch.cat([w, w.new_ones(w.shape[0], keys - w.shape[1])], dim=1)
    elif w.shape[1] > keys:
        w = w[:, :keys]
    if w.shape[0] != batch:
        if w.shape[0] == 1:
            w = w.expand(batch, -1)
        elif batch % w.shape[0] == 0:  # generate() repeats rows for beams / num_return_sequences
            w = w.repeat_interleave(batch // w.shape[0], dim=0)
        else:
            raise ValueError(f"attention weights have {w.shape[0]} rows but the batch has {batch}; pass one row per batch row or one row for all")
    return w


def _visible_keys(attention_mask, batch: int, q_len: int, k_len: int, device, causal: bool = True) -> torch.Tensor:
    """``[B|1, 1, Q, K]`` bool: which keys each query row may attend to (without a mask: causal, or every key for a
    module that is not causal, e.g. a prefix-LM's bidirectional prefix)."""
    if attention_mask is None and not causal:
        return torch.ones(1, 1, q_len, k_len, dtype=torch.bool, device=device)
    if attention_mask is None:
        q_pos = torch.arange(q_len, device=device).view(-1, 1) + (k_len - q_len)
        return (torch.arange(k_len, device=device).view(1, -1) <= q_pos).view(1, 1, q_len, k_len)
    mask = attention_mask[..., :k_len]
    if mask.dtype == torch.bool:
        return mask
    return mask > torch.finfo(mask.dtype).min / 2


def _mask_values(attention_mask, visible: torch.Tensor, k_len: int) -> torch.Tensor | None:
    """The additive values a float mask holds on its visible keys (``None`` where there are none to keep).

    Most masks are 0 on visible keys, but some families fold a score bias of their own into the mask they hand the
    attention function (Doge's dynamic mask adds a learned per-key term): replacing the mask by hf_ext's bias would
    silently drop it, so the key weights are added on top of these values instead.
    """
    if attention_mask is None or attention_mask.dtype == torch.bool:
        return None
    values = torch.where(visible, attention_mask[..., :k_len], 0.0)
    return values if bool(values.any()) else None


@dataclass
class _Prepared:
    """What every controlled layer of one forward shares: computed by the first layer, reused by the others."""

    controls: tuple
    attention_mask: object  # held so that its id cannot be reused while this entry lives
    shape: tuple
    visible: torch.Tensor
    log_w: torch.Tensor
    mult_w: torch.Tensor | None
    min_over_all: bool
    bias: torch.Tensor | None
    values: torch.Tensor | None = None


# One entry per context: layers of the same forward see the same mask object and the same controls.
_PREPARED: contextvars.ContextVar[_Prepared | None] = contextvars.ContextVar("hf_ext_attention_prepared", default=None)


def log_additive_bias(visible: torch.Tensor, log_w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention bias ``[..., Q, K]``: ``log w`` on visible keys, the dtype's minimum on hidden ones.

    Args:
        visible: ``[..., Q, K]`` bool, which keys each query may see (causality, padding).
        log_w: ``log`` of the key weights, broadcastable to ``visible`` (``-inf`` allowed: weight 0).
        dtype: dtype of the bias (the model's).

    A query whose visible keys all have weight 0 keeps the plain mask (0 on visible keys): there is nothing left
    to attend to, and an all-``-inf`` row would make the softmax undefined.
    """
    min_value = torch.finfo(dtype).min
    log_w = log_w.clamp_min(min_value)
    usable = (visible & (log_w > min_value)).any(-1, keepdim=True)
    return torch.where(visible & usable, log_w, torch.where(visible, 0.0, min_value)).to(dtype)


def _combined_weights(controls: tuple, batch: int, k_len: int, device):
    """``(log_w [B, K], mult_w [B, K] or None, min_over_all)`` of the controls (nested blocks multiply)."""
    log_w = torch.zeros(batch, k_len, device=device)
    mult_w = None
    min_over_all = False
    for control in controls:
        w = _expand_weights(control.weights, batch, k_len, device)
        if control.mode == "log_additive":
            log_w = log_w + torch.log(w)
        else:
            mult_w = w if mult_w is None else mult_w * w
            min_over_all |= control.mode == "multiplicative_reference"
    return log_w, mult_w, min_over_all


def _prepare(controls: tuple, attention_mask, query, k_len: int, causal: bool = True) -> _Prepared:
    batch, _, q_len, _ = query.shape
    shape = (batch, q_len, k_len, query.dtype, query.device, causal)
    cached = _PREPARED.get()
    if (cached is not None and cached.attention_mask is attention_mask and cached.shape == shape
            and len(cached.controls) == len(controls) and all(a is b for a, b in zip(cached.controls, controls))):
        return cached
    visible = _visible_keys(attention_mask, batch, q_len, k_len, query.device, causal)
    values = _mask_values(attention_mask, visible, k_len)
    log_w, mult_w, min_over_all = _combined_weights(controls, batch, k_len, query.device)
    bias = None
    if mult_w is None:
        bias = log_additive_bias(visible, log_w.view(batch, 1, 1, k_len), query.dtype)
        if values is not None:
            bias = (bias.float() + values.float()).to(query.dtype)
    prepared = _Prepared(controls, attention_mask, shape, visible, log_w, mult_w, min_over_all, bias, values)
    _PREPARED.set(prepared)
    return prepared


def _controlled_attention(module, query, key, value, attention_mask, base_fn, **kwargs):
    """The router of :func:`attention_controls`: the active controls of this context that cover ``module``."""
    controls = tuple(c for c in _CONTROLS.get() if c.applies_to(module))
    if not controls:
        return NotImplemented
    # a module that is not causal (a prefix-LM's bidirectional prefix) sees every key when no mask is given
    causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", True) if causal is None else causal
    if not causal and attention_mask is not None:
        _refuse_causal_mask_on_bidirectional(controls[0].model_label, module, attention_mask, query.shape[-2],
                                             key.shape[-2])
    p = _prepare(controls, attention_mask, query, key.shape[-2], bool(causal))
    if p.bias is not None:
        return base_fn(module, query, key, value, p.bias, **kwargs)
    return _multiplicative_attention(module, query, key, value, p.visible, p.mult_w, p.log_w,
                                     min_over_all=p.min_over_all, mask_values=p.values, **kwargs)


def _controlled_scores(module, scores: torch.Tensor, visible: torch.Tensor) -> torch.Tensor | None:
    """The transform of :func:`attention_controls` for modules that compute their own softmax (see
    :mod:`hf_ext.core.attention_bypass`): ``scores``/``visible`` ``[B, H, Q, K]``, masks and ALiBi included."""
    controls = tuple(c for c in _CONTROLS.get() if c.applies_to(module))
    if not controls:
        return None
    batch, _, _, k_len = scores.shape
    log_w, mult_w, min_over_all = _combined_weights(controls, batch, k_len, scores.device)
    log_w = log_w.view(batch, 1, 1, k_len)
    low = torch.finfo(torch.float32).min
    seen = visible.any(-1, keepdim=True)  # rows that see no key at all (padding queries) stay as the model made them
    if mult_w is None:
        return scores + torch.where(visible, log_additive_bias(visible, log_w, torch.float32), 0.0)
    if min_over_all:
        raise NotImplementedError(
            f"mode='multiplicative_reference' cannot act on {controls[0].model_label}: its "
            f"{type(module).__name__} masks future keys before its own softmax, and the reference variant takes "
            "its minimum over their raw scores; use mode='multiplicative' (the causal form)")
    row_min = scores.masked_fill(~visible, math.inf).amin(-1, keepdim=True)
    row_min = torch.where(torch.isfinite(row_min), row_min, torch.zeros_like(row_min))
    shifted = (scores - row_min) * mult_w.view(batch, 1, 1, k_len) + log_w.clamp_min(-1e30)
    return torch.where(seen, shifted.masked_fill(~visible, low), scores)


def _refuse_causal_mask_on_bidirectional(label: str, module, attention_mask, q_len: int, k_len: int) -> None:
    """Raise where a bidirectional module is handed a causal mask (PaliGemma's Gemma with a padding mask).

    Such a model attends bidirectionally when called without a mask and causally with one, so the same row gives
    different numbers padded and unpadded (the model's own forward does): per-key weights have no single meaning.
    """
    if q_len < 2:  # one query row sees every earlier key either way
        return
    visible = _visible_keys(attention_mask, 1, q_len, k_len, attention_mask.device)
    if not visible.triu(1 + k_len - q_len).any():
        raise NotImplementedError(
            f"attention controls cannot act on {label}: its {type(module).__name__} is bidirectional "
            "(is_causal=False) but the model hands it a causal mask when an attention mask is given, so the model "
            "attends differently with and without padding and per-key weights have no single meaning; call it "
            "without attention_mask (one unpadded row at a time)")


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def _multiplicative_attention(module, query, key, value, visible, mult_w, log_w, *, min_over_all=False, scaling=None,
                              dropout=0.0, mask_values=None, **kwargs):
    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        raise NotImplementedError("multiplicative attention controls do not support logit soft-capping or attention sinks; use mode='log_additive'")
    batch, heads, q_len, head_dim = query.shape
    k_len = key.shape[-2]
    groups = heads // key.shape[1]
    key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
    scaling = head_dim**-0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)).float().mul_(scaling)
    if mask_values is not None:  # the model's own score bias (see _mask_values) is part of its scores
        scores = scores + mask_values.float()
    hidden = ~visible
    # reference variant: over every key some row can see (future keys included, padding excluded)
    candidates = visible.any(dim=-2, keepdim=True) if min_over_all else visible
    row_min = scores.masked_fill(~candidates, math.inf).amin(-1, keepdim=True)
    row_min = torch.where(torch.isfinite(row_min), row_min, torch.zeros_like(row_min))
    # in place: the [B, H, Q, K] score tensor is the big one
    scores.sub_(row_min).mul_(mult_w.view(batch, 1, 1, k_len)).add_(log_w.clamp_min(-1e30).view(batch, 1, 1, k_len))
    scores.masked_fill_(hidden, torch.finfo(torch.float32).min)
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return out, probs


@contextmanager
def attention_controls(
    model: nn.Module,
    weights: torch.Tensor | Sequence[float] | Sequence[Sequence[float]],
    *,
    mode: str = "log_additive",
    layers: int | Sequence[int] | None = None,
) -> Iterator[AttentionControl]:
    """Apply per-key attention weights inside ``model`` for the duration of a ``with`` block.

    Args:
        model: any transformers causal LM (or VLM) running with ``sdpa`` or ``eager`` attention.
        weights: ``[B, K]`` (or ``[K]`` for every row) non-negative key weights, indexed by key position in the
            padded sequence (including cached positions during generation). Keys beyond ``K`` get weight 1, so
            weights set for a prompt keep working while ``generate()`` appends tokens. ``B`` may also divide the
            running batch (``generate`` repeats rows for beams).
        mode: ``"log_additive"`` (add ``log w`` to the scores), ``"multiplicative"`` (scale scores shifted by the
            minimum over visible keys) or ``"multiplicative_reference"`` (minimum over all keys, as the AtMan
            reference code; not causal).
        layers: decoder layer indices to control (negative allowed); ``None`` = every layer that has attention
            (a hybrid's state-space layers have none).

    Yields:
        The :class:`AttentionControl` now active in this context. Nested blocks compose (weights multiply).

    Raises:
        ValueError: unknown mode, bad weights, bad layer index, or a flash/flex attention implementation.
        NotImplementedError: (from a forward inside the block) a controlled layer's attention module bypasses
            transformers' ``AttentionInterface`` and hf_ext cannot place the weights at its own softmax (none, a
            fused kernel, more than one candidate, queries that are not the input tokens, or
            ``"multiplicative_reference"``), so the weights could not apply.

    Example:
        >>> from hf_ext.testing import tiny_causal_lm
        >>> model = tiny_causal_lm("gpt2")
        >>> ids = torch.tensor([[1, 40, 41, 42]])
        >>> with attention_controls(model, torch.ones(1, 4), mode="multiplicative", layers=[0]):
        ...     same = model(ids).logits
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}")
    weights = as_weights(weights)
    anatomy = get_anatomy(model)
    selected = anatomy.attention_layers(layers)
    control = AttentionControl(
        weights=weights,
        mode=mode,
        attention_layers={id(anatomy.attentions[i]): i for i in selected},
        model_label=f"{getattr(getattr(model, 'config', None), 'model_type', anatomy.family)!r} ({type(model).__name__})",
    )
    attentions = {i: anatomy.attentions[i] for i in selected}
    _refuse_partly_shared(anatomy, selected, model)
    token = _CONTROLS.set(_CONTROLS.get() + (control,))
    try:
        with routed_attention(model, list(attentions.values()), _controlled_attention), \
                intercept_attention(attentions, _controlled_scores,
                                    lambda index, module, why: _bypass_error(model, anatomy, index, module, why),
                                    root=model):
            yield control
    finally:
        _CONTROLS.reset(token)
        _PREPARED.set(None)


def _refuse_partly_shared(anatomy, selected: list[int], model: nn.Module) -> None:
    """One attention module shared by several layers (Zamba's shared block) runs under the weights of all of them."""
    chosen = {id(anatomy.attentions[i]) for i in selected}
    left = [i for i, a in enumerate(anatomy.attentions) if a is not None and id(a) in chosen and i not in selected]
    if left:
        raise ValueError(f"layers={selected!r} selects an attention module of {anatomy.family!r} "
                         f"({type(model).__name__}) that layers {left} share; select those layers too")


def _bypass_error(model: nn.Module, anatomy, index: int, module: nn.Module, why: str) -> NotImplementedError:
    return NotImplementedError(
        f"attention controls cannot act on {anatomy.family!r} ({type(model).__name__}): decoder layer {index}'s "
        f"{type(module).__name__} cannot take per-key weights: {why}; choose other layers with layers=[...]")
