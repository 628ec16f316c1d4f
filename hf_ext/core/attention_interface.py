"""How hf_ext plugs into transformers' attention: registered attention functions that route every call.

Two attention functions, ``"hf_ext_sdpa"`` and ``"hf_ext_eager"``, are registered with transformers'
``AttentionInterface`` **and** the matching mask functions with ``AttentionMaskInterface`` (without the latter,
``create_causal_mask`` returns ``None`` and padding is silently ignored). Inside :func:`routed_attention` the
configs of a model's decoder and of the chosen attention modules point at those names, and each attention call
goes to the innermost active *router* of the calling context that takes it; with none (other layers, other
threads, other models) the original sdpa/eager function runs unchanged.

A router is any callable ``router(module, query, key, value, attention_mask, base_fn, **kwargs)`` that returns
``(output, weights)`` as transformers' attention functions do, or ``NotImplemented`` to pass the call on (to the
next router out, then to ``base_fn``). :func:`hf_ext.core.attention.attention_controls` (per-key weights) and
:func:`hf_ext.core.segments.segment_attention` (packed suffix recomputation) are the two routers of hf_ext.

Example:
    >>> import torch
    >>> from hf_ext.testing import tiny_causal_lm
    >>> from hf_ext.core.anatomy import get_anatomy
    >>> model = tiny_causal_lm("llama")
    >>> calls = []
    >>> def count(module, query, key, value, attention_mask, base_fn, **kwargs):
    ...     calls.append(query.shape[2])
    ...     return NotImplemented                      # the model's own attention computes the result
    >>> with routed_attention(model, get_anatomy(model).attentions, count):
    ...     _ = model(torch.tensor([[1, 5, 6]]))
    >>> calls                                          # one call per decoder layer, 3 queries each
    [3, 3]
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from torch import nn

from .anatomy import get_anatomy
from .hooks import forward_hooks

__all__ = ["ATTENTION_PREFIX", "BASE_IMPLEMENTATIONS", "awaiting_dispatch", "base_attention_function",
           "register_attention_functions", "require_dispatch", "routed_attention"]

#: Prefix of the registered implementation names (``hf_ext_sdpa``, ``hf_ext_eager``).
ATTENTION_PREFIX = "hf_ext_"
#: The transformers implementations a routed model may run (flash/flex kernels take no per-key bias).
BASE_IMPLEMENTATIONS = ("sdpa", "eager")

Router = Callable[..., Any]

_ROUTERS: contextvars.ContextVar[tuple[Router, ...]] = contextvars.ContextVar("hf_ext_attention_routers", default=())
# One set per active require_dispatch block of this context: keys (pending_key) of the guarded modules whose forward
# has begun but has not yet reached a registered function (a module still pending when its forward returns bypassed
# them). Threads a block's context is carried into share its set, hence the thread in the key.
_PENDING: contextvars.ContextVar[tuple[set, ...]] = contextvars.ContextVar("hf_ext_attention_pending", default=())


def pending_key(module: nn.Module) -> tuple[int, int]:
    """The key of ``module``'s running forward in a pending set: the module and the calling thread, so that threads
    running the same module inside one block (a ``ContextExecutor``) do not clear or re-add each other's entry."""
    return id(module), threading.get_ident()
_ALL_ATTENTION_FUNCTIONS = None


def base_attention_function(module: nn.Module, base: str) -> Callable:
    """The attention function transformers would call for ``module`` under implementation ``base``.

    ``"eager"`` is the model's own ``eager_attention_forward`` (it may add soft-capping, sinks …), Llama's for
    modules defined elsewhere; ``"sdpa"`` is transformers' registered sdpa function.
    """
    global _ALL_ATTENTION_FUNCTIONS
    if base == "eager":
        fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
        if fn is None:
            from transformers.models.llama.modeling_llama import eager_attention_forward as fn
        return fn
    if _ALL_ATTENTION_FUNCTIONS is None:  # imported once: this runs in every attention call
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        _ALL_ATTENTION_FUNCTIONS = ALL_ATTENTION_FUNCTIONS
    return _ALL_ATTENTION_FUNCTIONS[base]


def _routed(module, query, key, value, attention_mask, *, _hf_ext_base: str, **kwargs):
    this_forward = pending_key(module)  # (not `key`: that is the attention's key tensor here)
    for pending in _PENDING.get():
        pending.discard(this_forward)
    base_fn = base_attention_function(module, _hf_ext_base)
    for router in reversed(_ROUTERS.get()):
        out = router(module, query, key, value, attention_mask, base_fn, **kwargs)
        if out is not NotImplemented:
            return out
    return base_fn(module, query, key, value, attention_mask, **kwargs)


_registered = False
_register_lock = threading.Lock()


def register_attention_functions() -> None:
    """Register ``hf_ext_sdpa``/``hf_ext_eager`` with ``AttentionInterface`` and ``AttentionMaskInterface`` (idempotent)."""
    global _registered
    with _register_lock:
        if _registered:
            return
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

        for base in BASE_IMPLEMENTATIONS:
            def fn(module, query, key, value, attention_mask, _base=base, **kwargs):
                return _routed(module, query, key, value, attention_mask, _hf_ext_base=_base, **kwargs)

            fn.__name__ = f"{ATTENTION_PREFIX}{base}_attention_forward"
            AttentionInterface.register(ATTENTION_PREFIX + base, fn)
            AttentionMaskInterface.register(ATTENTION_PREFIX + base, ALL_MASK_ATTENTION_FUNCTIONS[base])
        _registered = True


# --------------------------------------------------------------------------------------------------------------
# Switching a model's implementation (ref-counted, so nested and concurrent blocks restore correctly)
# --------------------------------------------------------------------------------------------------------------
_switch_lock = threading.Lock()
_switched: dict[int, list] = {}  # id(config) -> [config, original implementation, refcount]


def _configs_to_switch(model: nn.Module, attentions: Sequence[nn.Module]) -> list:
    configs = {}
    for owner in [get_anatomy(model).decoder, *attentions]:
        config = getattr(owner, "config", None)
        if config is not None and hasattr(config, "_attn_implementation_internal"):
            configs[id(config)] = config
    # none (CPM-Ant): nothing dispatches through the interface; hand-written attention is reached at its softmax
    # (hf_ext.core.attention_bypass)
    return list(configs.values())


def _acquire(configs: list) -> None:
    with _switch_lock:
        for config in configs:
            entry = _switched.get(id(config))
            if entry is not None:
                entry[2] += 1
                continue
            current = config._attn_implementation or "eager"
            if current.startswith(ATTENTION_PREFIX):
                continue
            if current not in BASE_IMPLEMENTATIONS:
                raise ValueError(
                    f"attention controls need the 'sdpa' or 'eager' attention implementation, but the model uses {current!r}; "
                    "call model.set_attn_implementation('sdpa') first (flash/flex kernels cannot take per-key weights)"
                )
            config._attn_implementation_internal = ATTENTION_PREFIX + current
            _switched[id(config)] = [config, current, 1]


def _release(configs: list) -> None:
    with _switch_lock:
        for config in configs:
            entry = _switched.get(id(config))
            if entry is None:
                continue
            entry[2] -= 1
            if entry[2] == 0:
                config._attn_implementation_internal = entry[1]
                del _switched[id(config)]


@contextmanager
def routed_attention(model: nn.Module, attentions: Sequence[nn.Module], router: Router) -> Iterator[Router]:
    """Route the attention calls of ``model`` through ``router`` (in this context) for the duration of the block.

    Args:
        model: a transformers causal LM / VLM running ``sdpa`` or ``eager`` attention.
        attentions: the attention modules the router is meant for: their configs point at hf_ext's functions too
            (for models whose attention modules hold a config of their own); the decoder's config is always
            switched, so the router sees every layer's calls and returns ``NotImplemented`` for those it leaves.
        router: ``router(module, query, key, value, attention_mask, base_fn, **kwargs)`` returning
            ``(output, weights)`` or ``NotImplemented`` (see the module doc). Inner blocks are asked first.

    Raises:
        ValueError: a flash/flex attention implementation.
    """
    register_attention_functions()
    configs = _configs_to_switch(model, attentions)
    _acquire(configs)
    token = _ROUTERS.set(_ROUTERS.get() + (router,))
    try:
        yield router
    finally:
        _ROUTERS.reset(token)
        _release(configs)


@contextmanager
def awaiting_dispatch(pending: set) -> Iterator[set]:
    """While active (in this context), a module whose :func:`pending_key` is in ``pending`` is removed from it as soon as it
    calls one of hf_ext's registered attention functions: how a guard tells a module that dispatched through
    transformers' ``AttentionInterface`` from one that bypassed it (see :func:`require_dispatch`)."""
    token = _PENDING.set(_PENDING.get() + (pending,))
    try:
        yield pending
    finally:
        _PENDING.reset(token)


@contextmanager
def require_dispatch(modules: Mapping[int, nn.Module], error: Callable[[int, nn.Module], BaseException]) -> Iterator[None]:
    """Raise when a guarded attention module computes its attention without hf_ext's registered functions.

    A module whose forward returns (inside the block, in this context) without having called ``hf_ext_sdpa`` /
    ``hf_ext_eager`` computes its attention some other way (a hand-written kernel, not transformers'
    ``AttentionInterface``), so a router could not have acted on it: its forward then raises ``error(index,
    module)`` instead of silently returning an unmodified result. Use inside :func:`routed_attention`.

    Args:
        modules: ``{index: attention module}`` to guard (the index is handed to ``error``, e.g. the layer index).
        error: builds the exception to raise for a module that bypassed the registered functions.

    Example:
        >>> import torch
        >>> from hf_ext.testing import tiny_causal_lm
        >>> model = tiny_causal_lm("llama")
        >>> attentions = dict(enumerate(get_anatomy(model).attentions))
        >>> pass_on = lambda *args, **kwargs: NotImplemented
        >>> with routed_attention(model, list(attentions.values()), pass_on), \\
        ...         require_dispatch(attentions, lambda i, m: RuntimeError(f"layer {i} bypassed")):
        ...     _ = model(torch.tensor([[1, 5, 6]]))          # every layer dispatches: nothing raised
    """
    index = {id(module): i for i, module in modules.items()}

    def before(module, args, pending):
        pending.add(pending_key(module))

    def after(module, args, output, pending):
        if pending_key(module) in pending:
            pending.discard(pending_key(module))
            raise error(index[id(module)], module)

    pending: set = set()
    token = _PENDING.set(_PENDING.get() + (pending,))
    try:
        with forward_hooks({m: after for m in modules.values()}, params=pending,
                           pre_hooks={m: before for m in modules.values()}):
            yield
    finally:
        _PENDING.reset(token)
