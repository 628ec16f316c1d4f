"""Resume a decoder whose layers hand on more than the hidden states, by replaying a recorded full forward.

Some decoders carry state from layer to layer besides the hidden states: extra tensors a layer returns and the
decoder passes to the next one (ZAYA's router states, DSA top-k indices, Kolibri's candidate-key pool), or entries a
layer adds to a dict the decoder passes to every layer (Gemma-3n's and Kolibri's shared keys/values). What layers
``< l`` produce depends only on their own inputs, which resuming at layer ``l`` does not change, so
:func:`~hf_ext.core.layers.run_layers` can still resume such a decoder exactly: the stand-ins for the skipped layers
replay what those layers returned and left behind in a full forward on the same batch, recorded in a
:class:`ResumeContext` by :func:`~hf_ext.core.layers.forward_with_layer_inputs` (``states.context``).

Example:
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from hf_ext.core.layers import forward_with_layer_inputs
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
    ...                                      num_hidden_layers=2, num_attention_heads=2)).eval()
    >>> _, states = forward_with_layer_inputs(model, input_ids=torch.tensor([[1, 5, 6]]))
    >>> getattr(states, "context", None) is None  # llama's layers hand on the hidden states only
    True
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, MutableMapping
from typing import Any

import torch
from torch import nn

from .hooks import HookHandle, current_params, register_hooks

__all__ = ["ResumeContext"]

# per layer: (where the mapping was passed: a positional index or a keyword, entries set, keys removed)
Effect = tuple[int | str, dict, tuple]


class ResumeContext:
    """What each decoder layer of one full forward returned besides its hidden states, and what it added to or
    removed from the dict-like arguments it was called with (shared keys/values), for one batch.

    Made by :func:`~hf_ext.core.layers.forward_with_layer_inputs` (``states.context``) for decoders that carry
    state between layers; :func:`~hf_ext.core.layers.run_layers` (``context=``) replays it for the layers it skips.

    Args:
        model: the model the forward ran.
        batch: rows of the batch (``B`` of ``[B, T]``).
        length: tokens per row (``T``).
        outputs: per layer, ``(container, rest)``: the type of the layer's output (``tuple``, ``list``, or ``None``
            for a bare tensor) and its elements after the hidden states.
        effects: per layer, ``(where, set, removed)`` for each dict-like argument the layer changed: its
            positional index or keyword, the entries it set (key -> value) and the keys it removed.

    Example:
        >>> import torch
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
        ...                                      num_hidden_layers=2, num_attention_heads=2))
        >>> context = ResumeContext(model, 1, 3, [(tuple, (None,))] * 2, [[], []])
        >>> context.check(model, batch=1, length=3, start_layer=2)
        >>> context.num_layers
        2
    """

    def __init__(self, model: nn.Module, batch: int, length: int, outputs: list[tuple[type | None, tuple]],
                 effects: list[list[Effect]]):
        if len(outputs) != len(effects):
            raise ValueError(f"ResumeContext needs one output and one effect list per layer, got {len(outputs)} "
                             f"outputs and {len(effects)} effect lists")
        self._model = weakref.ref(model)
        self.model_type = type(model).__name__
        self.batch, self.length = int(batch), int(length)
        self.outputs, self.effects = list(outputs), list(effects)

    @property
    def num_layers(self) -> int:
        """How many decoder layers were recorded."""
        return len(self.outputs)

    def check(self, model: nn.Module, batch: int, length: int, start_layer: int) -> None:
        """Refuse this context for a resume of ``model`` at ``start_layer`` on a ``[batch, length]`` batch.

        Args:
            model: the model to resume.
            batch: rows of the hidden states to resume from.
            length: tokens per row of those hidden states.
            start_layer: the first layer to run (the layers before it replay this context).

        Raises:
            ValueError: the context was recorded on another model, on a batch of another shape, or on fewer layers.
        """
        fix = "pass context=states.context of forward_with_layer_inputs(model, ...) on the same batch"
        if self._model() is not model:
            raise ValueError(f"the ResumeContext was recorded on another model ({self.model_type}) than the "
                             f"{type(model).__name__} being resumed: {fix}")
        if (self.batch, self.length) != (batch, length):
            raise ValueError(f"the ResumeContext of {self.model_type} was recorded on a batch of shape "
                             f"{(self.batch, self.length)} (batch, length), the hidden states are {(batch, length)}: "
                             f"{fix}")
        if start_layer > self.num_layers:
            raise ValueError(f"the ResumeContext of {self.model_type} records {self.num_layers} layers, resuming "
                             f"at layer {start_layer} needs {start_layer}: {fix}")

    def _replay(self, index: int, hidden: torch.Tensor, args: tuple, kwargs: dict) -> Any:
        """Layer ``index``'s recorded effects applied to the mappings it is called with, and its recorded output
        with ``hidden`` as the hidden states."""
        for where, entries, removed in self.effects[index]:
            target = args[where] if isinstance(where, int) and where < len(args) else kwargs.get(where)
            if not isinstance(target, MutableMapping):
                raise ValueError(f"the ResumeContext of {self.model_type} recorded changes to argument {where!r} of "
                                 f"decoder layer {index}, which this call does not pass as a mapping")
            target.update(entries)
            for key in removed:
                target.pop(key, None)
        container, rest = self.outputs[index]
        return hidden if container is None else container((hidden, *rest))


class LayerStates(tuple):
    """The states :func:`~hf_ext.core.layers.forward_with_layer_inputs` returns for a decoder that carries state
    between layers: a tuple of ``num_layers + 1`` tensors with the :class:`ResumeContext` of their forward as
    ``.context`` (pass it to :func:`~hf_ext.core.layers.run_layers`)."""

    def __new__(cls, states: tuple = (), context: ResumeContext | None = None):
        obj = super().__new__(cls, states)
        obj.context = context
        return obj


class ContextRecorder:
    """Hooks that record a :class:`ResumeContext` over one forward: a pre-hook (with kwargs) and a forward hook
    per decoder layer, acting only while ``active()`` is true (the calling thread's forward)."""

    def __init__(self, num_layers: int, active: Callable[[], bool] = lambda: True):
        self.active = active
        self.outputs: list[list] = [[] for _ in range(num_layers)]
        self.effects: list[list[Effect]] = [[] for _ in range(num_layers)]
        self._before: dict[int, list] = {}

    def pre_hook(self, index: int) -> Callable:
        """A ``with_kwargs`` pre-hook for layer ``index``: snapshots the dict-like arguments of the call."""
        def snapshot(module, args, kwargs):
            if self.active():
                where = [*enumerate(args), *kwargs.items()]
                self._before[index] = [(k, v, dict(v)) for k, v in where if isinstance(v, MutableMapping)]
        return snapshot

    def post_hook(self, index: int) -> Callable:
        """A forward hook for layer ``index``: records its output and what it changed in the snapshotted mappings."""
        def record(module, args, out):
            if not self.active():
                return
            if isinstance(out, (tuple, list)):
                self.outputs[index].append((type(out), tuple(out[1:])))
            else:
                self.outputs[index].append((None, ()))
            changes = []
            for where, mapping, before in self._before.pop(index, []):
                entries = {k: v for k, v in mapping.items() if k not in before or before[k] is not v}
                removed = tuple(k for k in before if k not in mapping)
                if entries or removed:
                    changes.append((where, entries, removed))
            self.effects[index].append(changes)
        return record

    def register(self, layers: list[nn.Module]) -> HookHandle:
        """Register the hooks on ``layers`` (a :class:`~hf_ext.core.hooks.HookHandle`, a context manager)."""
        return register_hooks({layer: self.post_hook(i) for i, layer in enumerate(layers)},
                              pre_hooks={layer: self.pre_hook(i) for i, layer in enumerate(layers)}, with_kwargs=True)

    def context(self, model: nn.Module, batch: int, length: int) -> ResumeContext | None:
        """The recorded context, or ``None`` unless every layer ran exactly once."""
        if any(len(o) != 1 for o in self.outputs):
            return None
        return ResumeContext(model, batch, length, [o[0] for o in self.outputs], [e[0] for e in self.effects])


class ResumeLayer(nn.Module):
    """Stands in for a decoder layer below ``start_layer`` inside the calling
    :func:`~hf_ext.core.layers.run_layers` (activated with ``token``; the original layer everywhere else: other
    threads, other calls). It hands the given hidden states on in the layer's own output structure, with the
    layer's other outputs and side effects replayed from a :class:`ResumeContext` when one is active."""

    def __init__(self, original: nn.Module, index: int, token: object, structure: tuple[type, int] | None):
        super().__init__()
        object.__setattr__(self, "_original", original)  # not a submodule: state dicts and hooks stay the layer's
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_token", token)
        object.__setattr__(self, "_structure", structure)

    def __getattr__(self, name):  # attributes the decoder reads from its layers (attention_type, layer_idx …)
        return getattr(object.__getattribute__(self, "_original"), name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The original layer's forward, or inside the calling ``run_layers`` what it hands on instead."""
        params = current_params(self._token)
        if params is None:
            return self._original(*args, **kwargs)
        hidden, context = params["hidden"], params.get("context")
        if context is not None:
            return context._replay(self._index, hidden, args, kwargs)
        if self._structure is None:
            return hidden
        container, length = self._structure  # a tuple, or a list (OpenAI-GPT's blocks)
        return container((hidden,) + (None,) * (length - 1))
