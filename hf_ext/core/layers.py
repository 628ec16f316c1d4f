"""Resume a decoder from layer ``l``: the building block of DTM's layer scan and AtMan's prefix reuse.

:func:`run_layers` runs the model's **own** forward code — its masks (causal, sliding, chunked), rotary or absolute
positions, per-layer inputs, final norm and everything the causal-LM class does after its head (Cohere's
``logit_scale``, Granite's ``logits_scaling``, Gemma 2's final soft-capping …) — with the decoder layers before
``start_layer`` replaced, for this call only, by stand-ins that hand the given hidden states on. Nothing of the model
is re-implemented per family. A one-off probe per model checks that the decoder can be resumed at all: each layer
runs once, and resuming from every layer once (three tokens) gives the full forward's outputs; where layers carry
state besides the hidden states (router states, sparse-attention indices, an earlier layer's K/V) only by replaying a
:class:`ResumeContext` recorded in the full forward; otherwise a ``ValueError`` names the type and the reason. The
hidden states keep the decoder's own layout: ``[B, T, D]`` mostly, ``[B, T, streams, D]`` for hyper-connection stacks
(DeepSeek-V4), ``[streams, B, T, D]`` for Gemma-3n's AltUp.

:func:`run_layers` resumes layer ``l`` from that layer's **input**. For most families this is
``output_hidden_states[l]`` of a full forward; some record each layer's output instead (Mamba, FalconMamba:
``hidden_states[l]`` is layer ``l``'s output, the input of layer ``l + 1``). :func:`forward_with_layer_inputs` runs
the forward once and returns the states :func:`run_layers` takes for every family: ``out.hidden_states`` itself
where that is the layer inputs, else the inputs captured with hooks.

Example:
    >>> import torch
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("llama")
    >>> ids = torch.tensor([[1, 5, 6, 7]])
    >>> out, states = forward_with_layer_inputs(model, input_ids=ids)
    >>> logits = run_layers(model, states[1], start_layer=1, return_logits=True)
    >>> torch.allclose(logits, out.logits, atol=1e-5)
    True
"""

from __future__ import annotations

import weakref
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from hf_ext.utils.validation import check_int

from .anatomy import get_anatomy
from .hooks import activate, current_params, register_hooks
from .inputs import forward_accepts, position_ids_from_mask, vocab_size
from .layer_io import Layout, first_hidden, hidden_arg, layout_of, same_tensor
from .resume_context import ContextRecorder, LayerStates, ResumeContext, ResumeLayer


class _Stop(Exception):
    """Raised by the hook after ``end_layer - 1`` to end the forward early."""


@dataclass(frozen=True)
class _ProbeResult:
    reason: str | None  # why the decoder cannot be resumed (naming the type), None if it can
    structures: list  # per layer: None (the layer returns a tensor) or (tuple or list, its length)
    last: str | None  # the state after the last layer: "layer" (the last layer's output), "decoder" (the
    # decoder's output, after the final norm) or None (neither: run_layers cannot start at num_layers)
    layout: Layout | None = None  # of the layers' input (l < num_layers)
    last_layout: Layout | None = None  # of the state after the last layer
    has_logits: bool = False  # whether the model's forward returns logits
    records_inputs: bool = False  # output_hidden_states[l] is layer l's input (l < num_layers; most families)
    needs_context: bool = False  # layers carry state besides the hidden states: resuming replays a ResumeContext


_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# States forward_with_layer_inputs returned for families whose output_hidden_states are layer outputs: run_layers
# takes them as layer inputs without from_layer_inputs=True (held weakly, by identity, like _CONTEXTS)
_LAYER_INPUTS: WeakIdKeyDictionary = WeakIdKeyDictionary()
# the ResumeContext recorded with each state forward_with_layer_inputs returned (decoders that carry state)
_CONTEXTS: WeakIdKeyDictionary = WeakIdKeyDictionary()
_PROBE_LEN = 3


def _probe(model: nn.Module, anatomy) -> _ProbeResult:
    """One tiny forward with hooks on every layer: can this decoder be resumed from the input of layer ``l``?"""
    if (cached := _PROBES.get(model)) is not None:
        return cached
    layers = anatomy.layers
    seen: dict[int, list] = {i: [] for i in range(len(layers))}
    decoder_out = []

    def pre(i):
        def record(module, args, kwargs):
            others = {id(v) for v in (*args[1:], *kwargs.values()) if isinstance(v, torch.Tensor)}
            seen[i].append([others, hidden_arg(args, kwargs)])
        return record

    def post(i):
        return lambda module, args, out: seen[i][-1].append(out)

    hooks = {layer: post(i) for i, layer in enumerate(layers)}
    hooks[anatomy.decoder] = lambda module, args, out: decoder_out.append(first_hidden(out))
    ids = torch.arange(1, _PROBE_LEN + 1)[None].clamp_max(vocab_size(model, "input") - 1)
    ids = ids.to(anatomy.input_embeddings.weight.device)
    recorder = ContextRecorder(len(layers))
    with register_hooks(hooks, pre_hooks={layer: pre(i) for i, layer in enumerate(layers)}, with_kwargs=True), \
            recorder.register(layers), torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    hidden = getattr(out, "hidden_states", None)
    has_logits = isinstance(getattr(out, "logits", None), torch.Tensor)
    reason, structures, previous, carried, flagged, layout = None, [], None, [], [], None
    looped = next((i for i in range(len(layers)) if len(seen[i]) != 1), None)
    if looped is not None:
        reason = f"decoder layer {looped} runs {len(seen[looped])} times per forward (a looped or recurrent stack)"
    # the layer inputs the pre-hooks saw are the reference states: output_hidden_states records them for most
    # families, the layers' outputs for others (Mamba), nothing for some
    inputs = [] if reason is not None else [seen[i][0][1] for i in range(len(layers))]
    for i, x in enumerate(inputs):
        y = seen[i][0][2]
        y0 = y[0] if isinstance(y, (tuple, list)) else y
        structures.append((type(y), len(y)) if isinstance(y, (tuple, list)) else None)
        if not (isinstance(x, torch.Tensor) and isinstance(y0, torch.Tensor) and x.shape == y0.shape
                and layout_of(x, _PROBE_LEN) is not None and (layout is None or layout.matches(x))):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            reason = (f"decoder layer {i} does not map hidden states (batch and sequence axes, then sizes shared by "
                      f"every layer) to the same shape (input {shape})")
            break
        layout = layout or layout_of(x, _PROBE_LEN)
        if previous is not None and not torch.equal(x, previous):
            reason = (f"decoder layer {i} does not read layer {i - 1}'s output: the decoder carries more than the "
                      "hidden states between layers")
            break
        if i > 0 and any(id(t) in seen[i][0][0] for t in carried):
            flagged.append(i)  # reads another tensor layer i - 1 returned: checked numerically below
        carried = [t for t in (y[1:] if isinstance(y, (tuple, list)) else ()) if isinstance(t, torch.Tensor)]
        previous = y0
    records_inputs = reason is None and hidden is not None and len(hidden) == len(layers) + 1 \
        and all(same_tensor(h, x) for h, x in zip(hidden, inputs))
    final = decoder_out[-1] if decoder_out else None
    last = last_layout = None
    if reason is None and records_inputs:
        if same_tensor(hidden[-1], previous):
            last = "layer"
        elif final is not None and same_tensor(hidden[-1], final):
            last = "decoder"
        last_layout = layout_of(hidden[-1], _PROBE_LEN)
    elif reason is None and final is not None:
        # output_hidden_states is not the layer inputs (Mamba records each layer's output): the inputs come from
        # pre-hooks and, after the last layer, the decoder's output (forward_with_layer_inputs)
        last, last_layout = "decoder", layout_of(final, _PROBE_LEN)
    elif reason is None:
        reason = (f"output_hidden_states is not the list of decoder layer inputs and the decoder "
                  f"({type(anatomy.decoder).__name__}) returns no hidden-state tensor to resume after the last layer")
    prefix = f"run_layers cannot resume {anatomy.family!r} ({type(model).__name__}) from hidden states: "
    result = _ProbeResult(None if reason is None else prefix + reason, structures, last, layout, last_layout,
                          has_logits, records_inputs)
    _PROBES[model] = result
    # Resuming must not depend on anything the stand-ins do not hand on: a layer that reads another tensor the
    # previous layer returned (ZAYA's router states, shared sparse-attention indices) or state an earlier layer left
    # behind (Gemma-3n's and Kolibri's shared K/V) would otherwise run on missing or stale inputs. Each layer i is run
    # once with every earlier layer a stand-in (three tokens, stopping after layer i; the last one through to the
    # logits or the decoder's output) and compared with the full forward: a dependency of layer i on state of an
    # earlier layer shows there. Such a decoder is still resumable if the stand-ins replay what the earlier layers
    # returned and left behind in the full forward (a ResumeContext): checked the same way. Both checks run after a
    # forward on other tokens, so that state left on a shared object (which neither hands on) is stale and shows.
    expected = out.logits if has_logits else final
    if reason is None and expected is not None:
        with torch.no_grad():
            model(input_ids=ids.flip(-1), use_cache=False)
        failed = _first_mismatch(model, inputs, ids, expected, has_logits, None)
        context = recorder.context(model, 1, _PROBE_LEN) if failed is not None else None
        if context is not None:
            with torch.no_grad():
                model(input_ids=ids.flip(-1), use_cache=False)
        if context is not None and _first_mismatch(model, inputs, ids, expected, has_logits, context) is None:
            result = replace(result, needs_context=True)
        elif failed is not None:
            i, why = failed  # the reason without a context: what resuming from hidden states alone misses
            carried_by = (f"decoder layer {i} reads more than layer {i - 1}'s hidden states (another tensor layer "
                          f"{i - 1} returned)" if i in flagged else
                          f"decoder layer {i} reads state an earlier layer left behind (e.g. shared keys/values)")
            result = replace(result, reason=prefix + f"{carried_by}: resumed from layer {i}, it {why}; the "
                             "decoder carries state between layers")
        _PROBES[model] = result
    return result


def _first_mismatch(model, inputs, ids, expected, has_logits, context) -> tuple[int, str] | None:
    """The first layer ``i >= 1`` whose resume (stopping after it; the last one to the end) differs from the probe's
    full forward, with how (``None`` if none does)."""
    n = len(inputs)
    for i in range(1, n):
        last_one = i == n - 1
        try:
            with torch.no_grad():
                resumed = run_layers(model, inputs[i], i, end_layer=None if last_one else i + 1, from_layer_inputs=True,
                                     return_logits=last_one and has_logits, input_ids=ids, context=context)
            target = expected if last_one else inputs[i + 1]
            if not torch.allclose(resumed.float(), target.float(), atol=1e-4, rtol=1e-4):
                return i, "differs from the full forward"
        except Exception as exc:  # noqa: BLE001 - the layer needs state it was not given (a KeyError, a shape)
            return i, f"fails ({type(exc).__name__}: {str(exc)[:80]})"
    return None


def _layer_filler(probe: _ProbeResult, hidden_states: torch.Tensor, at_end: bool) -> torch.Tensor:
    """What the stand-ins hand on: the given hidden states, or, resuming after the last layer from the decoder's
    output (already merged from hyper-connection streams and normed), zeros in the layers' layout for the
    decoder's own post-processing to run on (its output is then replaced by the given states)."""
    layout = probe.layout
    if not at_end or probe.last != "decoder" or layout is None or layout.matches(hidden_states):
        return hidden_states
    shape = list(layout.shape)
    shape[layout.batch_axis] = hidden_states.shape[probe.last_layout.batch_axis]
    shape[layout.seq_axis] = hidden_states.shape[probe.last_layout.seq_axis]
    return hidden_states.new_zeros(shape)


def resume_refusal(model: nn.Module) -> str | None:
    """Why :func:`run_layers` cannot resume ``model`` from hidden states (naming its type), or ``None`` if it can.

    Checked once per model with one tiny forward (looped stacks cannot be resumed; layers that read more than the
    previous layer's hidden states, e.g. ZAYA's router states, only with a ``context``). A family whose
    ``output_hidden_states`` records layer outputs (Mamba) is resumable: take its states from
    :func:`forward_with_layer_inputs`.

    Example:
        >>> from hf_ext.testing import tiny_causal_lm
        >>> resume_refusal(tiny_causal_lm("llama")) is None
        True
    """
    return _probe(model, get_anatomy(model)).reason


def _context_for(model, anatomy, probe, hidden_states, start_layer, shape, context) -> ResumeContext | None:
    """The context the stand-ins replay: the given one, else for a decoder that carries state the one recorded with
    ``hidden_states`` (a state :func:`forward_with_layer_inputs` returned); checked against model and batch shape."""
    if context is None and probe.needs_context and start_layer > 0:
        context = _CONTEXTS.get(hidden_states)
        if context is None:
            raise ValueError(
                f"run_layers cannot resume {anatomy.family!r} ({type(model).__name__}) at layer {start_layer} without "
                "a ResumeContext: the decoder carries state between layers besides the hidden states (tensors a layer "
                "returns to the next, or keys/values an earlier layer stores); pass context=states.context of "
                "forward_with_layer_inputs(model, ...) on the same batch")
    if context is not None:
        if not isinstance(context, ResumeContext):
            raise ValueError(f"context must be a ResumeContext (states.context of forward_with_layer_inputs), got "
                             f"{type(context).__name__}")
        context.check(model, *shape, start_layer)
    return context


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
    from_layer_inputs: bool = False,
    context: ResumeContext | None = None,
) -> torch.Tensor:
    """Continue the decoder of ``model`` from ``start_layer`` on given hidden states.

    The model's own forward runs (masks, positions, final norm, and with ``return_logits`` its head and whatever
    its causal-LM class does to the logits); the layers before ``start_layer`` are skipped and hand
    ``hidden_states`` on. Rotary families get positions from ``position_ids``; absolute-position families (GPT-2,
    OPT) already carry them in the hidden states (added before layer 0).

    Args:
        model: a transformers causal LM (see :func:`~hf_ext.core.anatomy.get_anatomy`).
        hidden_states: ``[B, T, D]``, the input of layer ``start_layer`` —
            ``forward_with_layer_inputs(model, ...)[1][start_layer]``, which equals
            ``output_hidden_states[start_layer]`` of a full forward for most families (index 0 is the embedding
            output) but not for those recording layer outputs (Mamba, FalconMamba); with ``start_layer ==
            num_layers``, the state after the last layer (the decoder's output for those). In the decoder's own
            layout where that is not ``[B, T, D]`` (hyper-connection streams ``[B, T, S, D]``, AltUp
            ``[S, B, T, D]``).
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
        from_layer_inputs: vouch that ``hidden_states`` is (derived from) layer ``start_layer``'s input, for a
            family whose ``output_hidden_states[l]`` is layer ``l``'s *output* (Mamba, FalconMamba): there, states
            that :func:`forward_with_layer_inputs` did not return are refused unless this is set, since
            ``output_hidden_states[start_layer]`` has the same shape and would silently skip a layer.
        context: for a decoder whose layers carry state besides the hidden states (ZAYA's router states, shared
            keys/values, DSA top-k indices): ``states.context`` of the :func:`forward_with_layer_inputs` call on the
            same batch, replayed for the skipped layers (found by itself for states that call returned).

    Returns:
        ``[B, T, D]`` hidden states after ``end_layer - 1`` (after the final norm when run to the end), or
        ``[B, T, V]`` logits.

    Raises:
        ValueError: bad layer indices or shapes, ``return_logits`` with a partial stack or a model without head, or
            a decoder that cannot be resumed from hidden states (the message names the model type and why), or one
            that carries state between layers resumed without a ``context`` of a batch of the same shape.
    """
    anatomy = get_anatomy(model)
    n = anatomy.num_layers
    check_int("start_layer", start_layer, min=0, max=n)  # n: nothing left to run (the final norm / head only)
    end = n if end_layer is None else check_int("end_layer", end_layer, min=start_layer, max=n)
    probe = _probe(model, anatomy)
    if probe.reason is not None:
        raise ValueError(probe.reason)
    structures, last = probe.structures, probe.last
    if start_layer == n and last is None:
        reason = (f"run_layers cannot resume {anatomy.family!r} ({type(model).__name__}) from its last hidden states: "
                  "output_hidden_states[-1] is neither the last layer's output nor the decoder's output")
        raise ValueError(reason)
    layout = probe.layout if start_layer < n else probe.last_layout
    if not isinstance(hidden_states, torch.Tensor) or layout is None or not layout.matches(hidden_states):
        shape = tuple(hidden_states.shape) if isinstance(hidden_states, torch.Tensor) else type(hidden_states).__name__
        expected = layout.describe() if layout is not None else "[batch, seq, hidden]"
        raise ValueError(f"hidden_states must be {expected} (the input of layer {start_layer} of "
                         f"{type(model).__name__}: forward_with_layer_inputs(...)[1][{start_layer}]), got shape {shape}")
    if start_layer < n and not probe.records_inputs and not from_layer_inputs \
            and hidden_states not in _LAYER_INPUTS:
        raise ValueError(
            f"{anatomy.family!r} ({type(model).__name__}) records each layer's output in output_hidden_states, so "
            f"output_hidden_states[{start_layer}] is not the input of layer {start_layer} (resuming from it would skip "
            f"a layer): take states[{start_layer}] of forward_with_layer_inputs(model, ...), or pass "
            "from_layer_inputs=True for states derived from a layer's input")
    batch, length = hidden_states.shape[layout.batch_axis], hidden_states.shape[layout.seq_axis]
    if attention_mask is not None and tuple(attention_mask.shape) != (batch, length):
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} does not match hidden states {(batch, length)}")
    if input_ids is not None and tuple(input_ids.shape) != (batch, length):
        raise ValueError(f"input_ids shape {tuple(input_ids.shape)} does not match hidden states {(batch, length)}")
    context = _context_for(model, anatomy, probe, hidden_states, start_layer, (batch, length), context)
    if return_logits and (end != n or not probe.has_logits):
        raise ValueError(f"return_logits=True needs end_layer=None (the whole stack) and a model whose forward returns "
                         f"logits ({type(model).__name__} with end_layer={end_layer!r})")

    if position_ids is None:
        if attention_mask is not None:
            position_ids = position_ids_from_mask(attention_mask)
        else:
            position_ids = torch.arange(length, device=hidden_states.device).unsqueeze(0).expand(batch, -1)
    position_ids = position_ids.to(hidden_states.device)

    # The whole model runs (a bare decoder class may not take inputs_embeds); without logits the decoder's output
    # is taken by a hook and the head is skipped.
    kwargs = {"attention_mask": attention_mask, "position_ids": position_ids, "use_cache": False}
    # hidden states not shaped like the embeddings (hyper-connection streams) cannot stand in for them
    embeds_like = (layout.batch_axis, layout.seq_axis) == (0, 1) and hidden_states.dim() == 3 \
        and hidden_states.shape[-1] == anatomy.input_embeddings.weight.shape[-1]
    if input_ids is not None or not embeds_like or not forward_accepts(model, "inputs_embeds"):
        feed = input_ids if input_ids is not None else torch.zeros(batch, length, dtype=torch.long)
        kwargs["input_ids"] = feed.to(hidden_states.device)
    else:
        kwargs["inputs_embeds"] = hidden_states
    token = object()
    captured = {}
    with ExitStack() as stack:
        filler = _layer_filler(probe, hidden_states, start_layer == n)
        stack.enter_context(activate(token, {"hidden": filler, "context": context}))
        originals = list(anatomy.layers[:start_layer])
        for i, layer in enumerate(originals):
            anatomy.layers[i] = ResumeLayer(layer, i, token, structures[i])
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
                    captured["out"] = out[0] if isinstance(out, (tuple, list)) else out
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
                    captured["out"] = first_hidden(out)
                    raise _Stop

            stack.enter_context(register_hooks({anatomy.decoder: take_output}))
        try:
            out = model(**kwargs)
        except _Stop:
            return captured["out"]
    return out.logits if hasattr(out, "logits") else out[0]



def forward_with_layer_inputs(model: nn.Module, **forward_kwargs: Any) -> tuple[Any, tuple[torch.Tensor, ...]]:
    """Run ``model``'s forward once and return its output and the states :func:`run_layers` resumes from.

    Where ``output_hidden_states`` is the list of layer inputs (most families) this is one forward with
    ``output_hidden_states=True`` and the states are ``out.hidden_states`` itself (no overhead). Where it is not
    (Mamba and FalconMamba record each layer's output), the layer inputs are taken with pre-hooks on the decoder
    layers and the state after the last layer with a hook on the decoder (its output, after the final norm).

    Args:
        model: a transformers causal LM (see :func:`~hf_ext.core.anatomy.get_anatomy`).
        **forward_kwargs: the model's forward arguments (``input_ids`` ``[B, T]``, ``attention_mask`` ``[B, T]``,
            ``position_ids`` ``[B, T]``, ``use_cache`` …); ``output_hidden_states`` is set where it carries the states.

    Returns:
        ``(output, states)``: the forward's output and ``num_layers + 1`` tensors in the decoder's layout (``[B, T,
        D]`` mostly): ``states[l]`` is the input of layer ``l`` for ``l < num_layers``, ``states[num_layers]`` the
        state :func:`run_layers` takes with ``start_layer=num_layers`` (the last layer's or the decoder's output).
        For a decoder whose layers carry state besides the hidden states, ``states.context`` is the
        :class:`~hf_ext.core.resume_context.ResumeContext` that :func:`run_layers` replays (``context=``).

    Raises:
        ValueError: a decoder that cannot be resumed from hidden states (the message names the model type and why),
            or a forward that did not run every decoder layer once.

    Example:
        >>> import torch
        >>> from transformers import MambaConfig, MambaForCausalLM
        >>> config = MambaConfig(vocab_size=32, hidden_size=16, state_size=4, num_hidden_layers=2)
        >>> model = MambaForCausalLM(config).eval()  # output_hidden_states[l] is layer l's output here
        >>> ids = torch.tensor([[1, 5, 6, 7]])
        >>> out, states = forward_with_layer_inputs(model, input_ids=ids)
        >>> len(states) == get_anatomy(model).num_layers + 1
        True
        >>> logits = run_layers(model, states[1], start_layer=1, return_logits=True)
        >>> torch.allclose(logits, out.logits, atol=1e-5)
        True
    """
    anatomy = get_anatomy(model)
    probe = _probe(model, anatomy)
    if probe.reason is not None:
        raise ValueError(probe.reason)
    token = object()
    recorder = ContextRecorder(len(anatomy.layers), lambda: current_params(token) is not None)
    with activate(token, True), ExitStack() as stack:
        if probe.needs_context:
            stack.enter_context(recorder.register(anatomy.layers))
        if probe.records_inputs:
            out = model(**{**forward_kwargs, "output_hidden_states": True})
            states = tuple(out.hidden_states)
        else:
            out, states = _forward_taking_inputs(model, anatomy, token, forward_kwargs)
    if not probe.needs_context:
        return out, states
    batch, length = (states[0].shape[a] for a in (probe.layout.batch_axis, probe.layout.seq_axis))
    context = recorder.context(model, batch, length)
    if context is None:
        raise ValueError(f"forward_with_layer_inputs: the forward of {anatomy.family!r} ({type(model).__name__}) did "
                         "not run every decoder layer once (cannot record the state carried between its layers)")
    for state in states:
        _CONTEXTS[state] = context
    return out, LayerStates(states, context)


def _forward_taking_inputs(model, anatomy, token, forward_kwargs):
    """The forward's output and the layer inputs taken with pre-hooks, then the decoder's output (families whose
    ``output_hidden_states`` are layer outputs); the states are registered as layer inputs for run_layers."""
    layers = anatomy.layers
    inputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(layers))}
    final: list[torch.Tensor] = []

    def take_input(i):
        def record(module, args, kwargs):
            if current_params(token) is not None:  # not another thread's forward of the same model
                inputs[i].append(hidden_arg(args, kwargs))
        return record

    def take_output(module, args, out):
        if current_params(token) is not None:
            final.append(first_hidden(out))

    with register_hooks({anatomy.decoder: take_output},
                        pre_hooks={layer: take_input(i) for i, layer in enumerate(layers)}, with_kwargs=True):
        out = model(**forward_kwargs)
    runs = [len(inputs[i]) for i in range(len(layers))] + [len(final)]
    if runs != [1] * len(runs) or any(not isinstance(t, torch.Tensor) for t in final):
        raise ValueError(f"forward_with_layer_inputs: the forward of {anatomy.family!r} ({type(model).__name__}) did "
                         f"not run every decoder layer and the decoder once with hidden states (runs {runs})")
    states = (*(inputs[i][0] for i in range(len(layers))), final[0])
    for state in states:
        _LAYER_INPUTS[state] = True
    return out, states
