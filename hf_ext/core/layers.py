"""Resume a decoder from layer ``l``: the building block of DTM's layer scan and AtMan's prefix reuse.

:func:`run_layers` runs the model's **own** forward code — its masks (causal, sliding, chunked), rotary or absolute
positions, per-layer inputs, final norm and everything the causal-LM class does after its head (Cohere's
``logit_scale``, Granite's ``logits_scaling``, Gemma 2's final soft-capping …) — with the decoder layers before
``start_layer`` replaced, for this call only, by stand-ins that hand the given hidden states on. Nothing of the model
is re-implemented per family. A one-off probe per model checks that the decoder can be resumed at all: each layer
runs once and reads only the previous layer's output (no extra state carried between layers), and
``output_hidden_states[l]`` is layer ``l``'s input; otherwise a ``ValueError`` names the model type and the reason.

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

import weakref
from contextlib import ExitStack
from typing import TYPE_CHECKING

import torch
from torch import nn

from hf_ext.utils.validation import check_int

from ..compat import build_causal_mask
from .anatomy import get_anatomy
from .hooks import activate, current_params, register_hooks
from .inputs import forward_accepts, position_ids_from_mask, vocab_size

if TYPE_CHECKING:
    from transformers import PretrainedConfig

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


class _Stop(Exception):
    """Raised by the hook after ``end_layer - 1`` to end the forward early."""


class _Resume(nn.Module):
    """Stands in for a decoder layer below ``start_layer``: hands the given hidden states on (in the layer's own
    output structure) inside the calling :func:`run_layers`, and is the original layer everywhere else (other
    threads, other calls)."""

    def __init__(self, original: nn.Module, token: object, structure: int | None):
        super().__init__()
        object.__setattr__(self, "_original", original)  # not a submodule: state dicts and hooks stay the layer's
        object.__setattr__(self, "_token", token)
        object.__setattr__(self, "_structure", structure)

    def __getattr__(self, name):  # attributes the decoder reads from its layers (attention_type, layer_idx …)
        return getattr(object.__getattribute__(self, "_original"), name)

    def forward(self, *args, **kwargs):
        params = current_params(self._token)
        if params is None:
            return self._original(*args, **kwargs)
        hidden = params["hidden"]
        return hidden if self._structure is None else (hidden,) + (None,) * (self._structure - 1)


# model -> (error message or None, per-layer output structure: None for a tensor, else the tuple's length,
#           what output_hidden_states[num_layers] is: "layer" (the last layer's output) / "decoder" (after the final
#           norm, the decoder's output) / None)
_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _first(out):
    """The hidden states a decoder returned (``None`` if it returned something else)."""
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out if isinstance(out, torch.Tensor) else None


def _hidden_arg(args, kwargs):
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    return kwargs.get("hidden_states")


def _probe(model: nn.Module, anatomy) -> tuple[str | None, list, str | None]:
    """One tiny forward with hooks on every layer: can this decoder be resumed from ``output_hidden_states[l]``?"""
    cached = _PROBES.get(model)
    if cached is not None:
        return cached
    layers = anatomy.layers
    seen: dict[int, list] = {i: [] for i in range(len(layers))}
    decoder_out = []

    def pre(i):
        def record(module, args, kwargs):
            others = {id(v) for v in (*args[1:], *kwargs.values()) if isinstance(v, torch.Tensor)}
            seen[i].append([others, _hidden_arg(args, kwargs)])
        return record

    def post(i):
        return lambda module, args, out: seen[i][-1].append(out)

    hooks = {layer: post(i) for i, layer in enumerate(layers)}
    hooks[anatomy.decoder] = lambda module, args, out: decoder_out.append(_first(out))
    ids = torch.tensor([[1, 2, 3]]).clamp_max(vocab_size(model, "input") - 1).to(anatomy.input_embeddings.weight.device)
    with register_hooks(hooks, pre_hooks={layer: pre(i) for i, layer in enumerate(layers)}, with_kwargs=True), \
            torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    hidden = getattr(out, "hidden_states", None)
    reason, structures, previous, carried, flagged = None, [], None, [], []
    for i in range(len(layers)):
        calls = seen[i]
        if len(calls) != 1:
            reason = f"decoder layer {i} runs {len(calls)} times per forward (a looped or recurrent stack)"
            break
        _, x, y = calls[0]
        y0 = y[0] if isinstance(y, tuple) else y
        structures.append(len(y) if isinstance(y, tuple) else None)
        if not (isinstance(x, torch.Tensor) and isinstance(y0, torch.Tensor) and x.shape == y0.shape and x.dim() == 3):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            reason = f"decoder layer {i} does not map [batch, seq, hidden] states to the same shape (input {shape})"
            break
        if hidden is None or len(hidden) != len(layers) + 1 or not torch.equal(hidden[i], x):
            reason = f"output_hidden_states[{i}] is not the input of decoder layer {i}"
            break
        if previous is not None and not torch.equal(x, previous):
            reason = (f"decoder layer {i} does not read layer {i - 1}'s output: the decoder carries more than the "
                      "hidden states between layers")
            break
        if i > 0 and any(id(t) in calls[0][0] for t in carried):
            flagged.append(i)  # reads another tensor layer i - 1 returned: checked numerically below
        carried = [t for t in (y[1:] if isinstance(y, tuple) else ()) if isinstance(t, torch.Tensor)]
        previous = y0
    last = None
    if reason is None:
        if torch.equal(hidden[-1], previous):
            last = "layer"
        elif decoder_out and decoder_out[-1] is not None and torch.equal(hidden[-1], decoder_out[-1]):
            last = "decoder"
    result = (None if reason is None else
              f"run_layers cannot resume {anatomy.family!r} ({type(model).__name__}) from hidden states: {reason}",
              structures, last)
    _PROBES[model] = result
    for i in flagged if reason is None else []:
        # a layer that also reads what the previous one returned (ZAYA's router states; sparse-attention indices)
        # is resumable only where the stand-in's missing extra gives the same numbers: resume once and compare
        try:
            with torch.no_grad():
                resumed = run_layers(model, hidden[i], i, return_logits=True, input_ids=ids)
            same = bool(torch.allclose(resumed.float(), out.logits.float(), atol=1e-4, rtol=1e-4))
        except Exception:  # noqa: BLE001 - no head to compare through, or the layer needs state it was not given
            # (Kolibri's shared KV of an earlier layer: KeyError): the resumed forward is not the model's, so refuse
            same = False
        if not same:
            result = (f"run_layers cannot resume {anatomy.family!r} ({type(model).__name__}) from hidden states: "
                      f"decoder layer {i} reads more than layer {i - 1}'s hidden states (another tensor layer {i - 1} "
                      "returned): the decoder carries state between layers", structures, last)
            _PROBES[model] = result
            break
    return result


def resume_refusal(model: nn.Module) -> str | None:
    """Why :func:`run_layers` cannot resume ``model`` from hidden states (naming its type), or ``None`` if it can.

    Checked once per model with one tiny forward (looped stacks, layers that read more than the previous layer's
    hidden states, e.g. ZAYA's router states, cannot be resumed from hidden states alone).

    Example:
        >>> from hf_ext.testing import tiny_causal_lm
        >>> resume_refusal(tiny_causal_lm("llama")) is None
        True
    """
    return _probe(model, get_anatomy(model))[0]


def run_layers(
    model: torch.nn.Module,
    hidden_states: torch.Tensor,
    start_layer: int,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.LongTensor | None = None,
    *,
    end_layer: int | None = None,
    return_logits: bool = False,
    input_ids: torch.LongTensor | None = None,
) -> torch.Tensor:
    """Continue the decoder of ``model`` from ``start_layer`` on given hidden states.

    The model's own forward runs (masks, positions, final norm, and with ``return_logits`` its head and whatever
    its causal-LM class does to the logits); the layers before ``start_layer`` are skipped and hand
    ``hidden_states`` on. Rotary families get positions from ``position_ids``; absolute-position families (GPT-2,
    OPT) already carry them in the hidden states (added before layer 0).

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
        return_logits: run the model's head and return ``[B, T, V]`` logits instead of hidden states.
        input_ids: ``[B, T]`` the token ids of the full forward, for families that feed every layer something
            derived from the ids besides the hidden states (per-layer embeddings); default: the decoder is fed
            ``inputs_embeds=hidden_states``, whose pre-layer processing is discarded.

    Returns:
        ``[B, T, D]`` hidden states after ``end_layer - 1`` (after the final norm when run to the end), or
        ``[B, T, V]`` logits.

    Raises:
        ValueError: bad layer indices or shapes, ``return_logits`` with a partial stack or a model without head, or
            a decoder that cannot be resumed from hidden states (the message names the model type and why).
    """
    anatomy = get_anatomy(model)
    n = anatomy.num_layers
    check_int("start_layer", start_layer, min=0, max=n)  # n: nothing left to run (the final norm / head only)
    end = n if end_layer is None else check_int("end_layer", end_layer, min=start_layer, max=n)
    reason, structures, last = _probe(model, anatomy)
    if reason is not None:
        raise ValueError(reason)
    if hidden_states.dim() != 3:
        raise ValueError(f"hidden_states must be [batch, seq, hidden], got shape {tuple(hidden_states.shape)}")
    batch, length, _ = hidden_states.shape
    if attention_mask is not None and tuple(attention_mask.shape) != (batch, length):
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} does not match hidden states {(batch, length)}")
    if input_ids is not None and tuple(input_ids.shape) != (batch, length):
        raise ValueError(f"input_ids shape {tuple(input_ids.shape)} does not match hidden states {(batch, length)}")
    if return_logits and (end != n or anatomy.lm_head is None):
        raise ValueError("return_logits=True needs end_layer=None (the whole stack) and a model with an LM head")
    if start_layer == n and last is None:
        reason = (f"run_layers cannot resume {anatomy.family!r} ({type(model).__name__}) from its last hidden states: "
                  "output_hidden_states[-1] is neither the last layer's output nor the decoder's output")
        raise ValueError(reason)

    if position_ids is None:
        if attention_mask is not None:
            position_ids = position_ids_from_mask(attention_mask)
        else:
            position_ids = torch.arange(length, device=hidden_states.device).unsqueeze(0).expand(batch, -1)
    position_ids = position_ids.to(hidden_states.device)

    # The whole model runs (a bare decoder class may not take inputs_embeds); without logits the decoder's output
    # is taken by a hook and the head is skipped.
    kwargs = {"attention_mask": attention_mask, "position_ids": position_ids, "use_cache": False}
    if input_ids is not None or not forward_accepts(model, "inputs_embeds"):
        feed = input_ids if input_ids is not None else torch.zeros(batch, length, dtype=torch.long)
        kwargs["input_ids"] = feed.to(hidden_states.device)
    else:
        kwargs["inputs_embeds"] = hidden_states
    token = object()
    captured = {}
    with ExitStack() as stack:
        stack.enter_context(activate(token, {"hidden": hidden_states}))
        originals = list(anatomy.layers[:start_layer])
        for i, layer in enumerate(originals):
            anatomy.layers[i] = _Resume(layer, token, structures[i])
        stack.callback(lambda: [anatomy.layers.__setitem__(i, layer) for i, layer in enumerate(originals)])
        if start_layer < n:
            def substitute(module, args, kw):
                if current_params(token) is None:
                    return None
                if args and isinstance(args[0], torch.Tensor):
                    return (hidden_states, *args[1:]), kw
                return args, {**kw, "hidden_states": hidden_states}

            if start_layer == 0:
                stack.enter_context(register_hooks(pre_hooks={anatomy.layers[0]: substitute}, with_kwargs=True))
        if end < n:
            def stop(module, args, out):
                if current_params(token) is not None:
                    captured["out"] = out[0] if isinstance(out, tuple) else out
                    raise _Stop

            stack.enter_context(register_hooks({anatomy.layers[end - 1]: stop}))
        if start_layer == n and last == "decoder":
            # output_hidden_states[-1] already went through the final norm: it *is* the decoder's output
            def replace_output(module, args, out):
                if current_params(token) is None:
                    return None
                if hasattr(out, "last_hidden_state"):
                    out.last_hidden_state = hidden_states
                    return out
                return (hidden_states, *out[1:]) if isinstance(out, tuple) else hidden_states

            stack.enter_context(register_hooks({anatomy.decoder: replace_output}))
        if end == start_layer and end < n:
            return hidden_states
        if end == n and not return_logits:
            def take_output(module, args, out):
                if current_params(token) is not None:
                    captured["out"] = _first(out)
                    raise _Stop

            stack.enter_context(register_hooks({anatomy.decoder: take_output}))
        try:
            out = model(**kwargs)
        except _Stop:
            return captured["out"]
    return out.logits if hasattr(out, "logits") else out[0]

