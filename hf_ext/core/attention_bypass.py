"""Attention modules that bypass transformers' ``AttentionInterface``: acting on the scores at their softmax.

Families with hand-written attention (Bloom, GPT-Neo, MPT, XGLM, TrOCR, GIT, OpenAI-GPT, GPT-NeoX-Japanese …)
compute ``softmax(scores)`` themselves, so the functions hf_ext registers with the interface
(:mod:`hf_ext.core.attention_interface`) never see them. While a guarded module's forward runs inside
:func:`intercept_attention` and has not dispatched through those functions, a ``torch.overrides.TorchFunctionMode``
watches the torch calls it makes: the softmax over its attention scores (``torch.softmax``, ``F.softmax``,
``Tensor.softmax``, ``nn.Softmax``) is handed to a transform **with the scores as the softmax receives them**, i.e.
with everything the model adds before it (ALiBi, causal / padding / sliding-window masks, its own scaling), and the
softmax runs on the scores the transform returns.

Strict by construction: a softmax counts as the attention's when it runs over the last axis of a ``[..., Q, K]``
tensor whose ``Q`` is the module's query length (from its ``[B, Q, D]`` hidden-states input) and whose leading
size is a multiple of the batch ``B`` (``[B, H, Q, K]`` or ``[B * H, Q, K]``). A module must make exactly one such
call, or dispatch through the interface: a second candidate (e.g. a router softmax of the same shape) raises
during the forward, none (a fused kernel, ``scaled_dot_product_attention``) raises when the forward returns, so a
transform is never applied silently to the wrong tensor, nor silently skipped.

Which keys a query row sees is read from the scores themselves: a key is hidden when its score is not finite, lies
below half the dtype's minimum (masked with the dtype's minimum) or more than :data:`HIDDEN_GAP` below the row's
maximum (masked with a large negative constant, e.g. OpenAI-GPT's ``-1e4``): ``exp(-1000)`` is 0 in every float
format, so such a key contributes exactly nothing to the model's own result.

Example:
    >>> import torch
    >>> from hf_ext.core.anatomy import get_anatomy
    >>> from transformers import BloomConfig, BloomForCausalLM
    >>> model = BloomForCausalLM(BloomConfig(vocab_size=64, hidden_size=32, n_layer=2, n_head=4)).eval()
    >>> seen = []
    >>> def record(module, scores, visible):         # scores [B, H, Q, K] float32, ALiBi and masks included
    ...     seen.append(tuple(scores.shape))
    ...     return None                              # None: leave the scores unchanged
    >>> attentions = dict(enumerate(get_anatomy(model).attentions))
    >>> with intercept_attention(attentions, record, lambda i, m, why: RuntimeError(why)):
    ...     _ = model(torch.tensor([[1, 5, 6]]))
    >>> seen[0][2:]                                  # 3 queries over 3 keys
    (3, 3)
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .attention_interface import awaiting_dispatch, pending_key

__all__ = ["HIDDEN_GAP", "intercept_attention", "visible_from_scores"]

#: A key whose score is this far below its row's maximum has softmax weight exactly 0 (``exp(-1000)`` underflows
#: in every float format): it is treated as masked.
HIDDEN_GAP = 1000.0
_SOFTMAXES = frozenset({torch.softmax, nn.functional.softmax, torch.Tensor.softmax, torch.special.softmax})
_FUSED = frozenset({nn.functional.scaled_dot_product_attention})
#: transform(module, scores [B, H, Q, K] float32, visible [B, H, Q, K] bool) -> new scores, or None to keep them
ScoreTransform = Callable[[nn.Module, torch.Tensor, torch.Tensor], "torch.Tensor | None"]
ErrorFactory = Callable[[int, nn.Module, str], BaseException]
# (class, attention implementation) seen dispatching through the interface: run without the (slower) function mode
_DISPATCHING: set[tuple] = set()


def _dispatch_key(module: nn.Module) -> tuple | None:
    """What decides whether ``module`` dispatches: its class and its config's attention implementation (``None``
    for a module without a config: never assumed to dispatch)."""
    impl = getattr(getattr(module, "config", None), "_attn_implementation", None)
    return None if impl is None else (type(module), impl)


def visible_from_scores(scores: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``[..., Q, K]`` bool: the keys each query row attends to, read from pre-softmax ``scores``.

    Args:
        scores: pre-softmax attention scores, masks already added.
        dtype: the dtype the model computed them in (its minimum is the usual mask value); default ``scores.dtype``.
    """
    low = torch.finfo(dtype or scores.dtype).min / 2
    visible = torch.isfinite(scores) & (scores > low)
    row_max = scores.masked_fill(~visible, -math.inf).amax(-1, keepdim=True)
    return visible & (scores >= row_max - HIDDEN_GAP)


@dataclass
class _Call:
    """One forward of a guarded module in this context."""

    module: nn.Module
    index: int
    batch: int | None
    q_len: int | None
    pending: set
    mode: TorchFunctionMode | None = None
    applied: int = 0
    key: tuple = ()  # pending_key of this forward (the module and its thread)

    @property
    def dispatched(self) -> bool:
        return self.key not in self.pending


class _ScoreMode(TorchFunctionMode):
    def __init__(self, call: _Call, transform: ScoreTransform, error: ErrorFactory):
        super().__init__()
        self.call, self.transform, self.error = call, transform, error

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        call = self.call
        if call.dispatched:  # the interface's router acts on this module's attention
            return func(*args, **kwargs)
        if func in _FUSED:
            raise self.error(call.index, call.module, "it calls a fused attention kernel "
                             f"({func.__name__}) directly, whose scores hf_ext cannot reach")
        if func not in _SOFTMAXES or not self._is_scores(args, kwargs):
            return func(*args, **kwargs)
        call.applied += 1
        tokens = (_INPUT_TOKENS.get() or (None,))[-1]
        if tokens is not None and tokens != call.q_len:
            raise self.error(call.index, call.module, f"it attends over {call.q_len} queries for an input of {tokens} "
                             "tokens (the model adds positions of its own), so key weights indexed by input "
                             "position would land on other keys")
        if call.applied > 1:
            raise self.error(call.index, call.module, "it computes more than one softmax over [..., queries, keys] "
                             "tensors, so which one holds the attention scores is ambiguous")
        x = args[0]
        scores = x.float().reshape(call.batch, -1, *x.shape[-2:])
        new = self.transform(call.module, scores, visible_from_scores(scores, x.dtype))
        if new is None:
            return func(*args, **kwargs)
        out = func(new.reshape(x.shape), *args[1:], **kwargs)
        wanted = kwargs.get("dtype") or x.dtype
        return out if out.dtype == wanted else out.to(wanted)

    def _is_scores(self, args, kwargs) -> bool:
        call = self.call
        x = args[0] if args else kwargs.get("input")
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if call.q_len is None or not isinstance(x, torch.Tensor) or x.dim() < 3 or not isinstance(dim, int):
            return False
        lead = math.prod(x.shape[:-2])
        return dim % x.dim() == x.dim() - 1 and x.shape[-2] == call.q_len and lead % call.batch == 0 and lead > 0


def _query_shape(args: tuple, kwargs: dict) -> tuple[int | None, int | None]:
    """``(B, Q)`` of the module's ``[B, Q, D]`` hidden-states input (``None`` when it has none)."""
    hidden = kwargs.get("hidden_states")
    if hidden is None:
        hidden = next((a for a in args if isinstance(a, torch.Tensor)), None)
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
        return None, None
    return hidden.shape[0], hidden.shape[1]


# input lengths of the root forwards running in this context, innermost last (per context: threads share the hooks)
_INPUT_TOKENS: contextvars.ContextVar[tuple] = contextvars.ContextVar("hf_ext_bypass_tokens", default=())
_CALLS: contextvars.ContextVar[tuple[_Call, ...]] = contextvars.ContextVar("hf_ext_bypass_calls", default=())
_GUARDS: contextvars.ContextVar[tuple[dict, ...]] = contextvars.ContextVar("hf_ext_bypass_guards", default=())


@contextmanager
def intercept_attention(modules: Mapping[int, nn.Module], transform: ScoreTransform, error: ErrorFactory,
                        root: nn.Module | None = None) -> Iterator[None]:
    """Apply ``transform`` to the attention scores of guarded modules that bypass transformers' interface.

    A guarded module whose forward dispatches through hf_ext's registered attention functions (inside
    :func:`hf_ext.core.attention_interface.routed_attention`) is left to the router; one that computes its own
    softmax has ``transform`` applied to its scores (see the module doc); any other raises ``error``. Only forwards
    run in the calling context are affected (other threads run the modules unchanged).

    Args:
        modules: ``{index: attention module}`` to guard (the index, e.g. the layer, is handed to ``error``).
        transform: ``transform(module, scores, visible)`` with ``scores`` ``[B, H, Q, K]`` float32 (``H`` = heads,
            or 1 where the model folds them elsewhere) and ``visible`` the same-shaped bool mask of attended keys;
            returns new scores (same shape) or ``None`` to leave them.
        error: ``error(index, module, reason)`` builds the exception for a module hf_ext cannot act on.
        root: the model the user calls: an intercepted module must see as many queries as it gets input tokens
            (``input_ids`` / ``inputs_embeds``), else keys would not be input positions (CPM-Ant prepends prompt
            positions of its own) and ``error`` is raised.
    """
    guard = {id(m): (i, m) for i, m in modules.items()}
    pending: set = set()

    def before(module, args, kwargs):
        if _innermost(module) is not guard:  # not active in this context, or a nested guard takes it
            return
        batch, q_len = _query_shape(args, kwargs)
        call = _Call(module, guard[id(module)][0], batch, q_len, pending, key=pending_key(module))
        pending.add(call.key)
        key = _dispatch_key(module)
        if key is None or key not in _DISPATCHING:
            call.mode = _ScoreMode(call, transform, error)
            call.mode.__enter__()
        _CALLS.set(_CALLS.get() + (call,))

    def after(module, args, kwargs, output):
        calls = _CALLS.get()
        mine = [c for c in calls if c.module is module and c.pending is pending]
        if not mine:
            return
        call = mine[-1]
        _CALLS.set(tuple(c for c in calls if c is not call))
        if call.mode is not None:
            call.mode.__exit__(None, None, None)
        dispatched = call.dispatched
        pending.discard(call.key)
        if output is None:  # the forward raised (an always-called hook sees None): its error propagates
            return
        if dispatched:
            if call.applied:
                raise error(call.index, module, "it computed a softmax over its scores before dispatching through "
                            "transformers' AttentionInterface")
            if _dispatch_key(module) is not None:
                _DISPATCHING.add(_dispatch_key(module))
            return
        if call.applied != 1:
            raise error(call.index, module, "it computes its attention without transformers' AttentionInterface "
                        "and without a softmax over [..., queries, keys] scores that hf_ext can reach")

    handles = []
    token = _GUARDS.set(_GUARDS.get() + (guard,))
    counting = _count_input_tokens(root) if root is not None else contextlib.nullcontext()
    try:
        with counting, awaiting_dispatch(pending):
            for module in {id(m): m for m in modules.values()}.values():
                handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
                handles.append(module.register_forward_hook(after, with_kwargs=True, always_call=True))
            yield
    finally:
        for handle in handles:
            handle.remove()
        _GUARDS.reset(token)


_ROOTS: dict[int, list] = {}  # id(root) -> [its two hook handles, number of active blocks]
_ROOTS_LOCK = threading.Lock()


@contextmanager
def _count_input_tokens(root: nn.Module) -> Iterator[None]:
    """Hooks on ``root`` that hold the length of its input (``None`` where it has none) while it runs: one pair per
    model however many blocks (threads) are active, so that no block's exit takes away the hook that would pop
    another thread's entry mid-forward."""
    with _ROOTS_LOCK:
        entry = _ROOTS.get(id(root))
        if entry is None:
            entry = _ROOTS[id(root)] = [_root_hooks(root), 0]
        entry[1] += 1
    try:
        yield
    finally:
        with _ROOTS_LOCK:
            entry[1] -= 1
            if entry[1] == 0:
                for handle in entry[0]:
                    handle.remove()
                del _ROOTS[id(root)]


def _root_hooks(root: nn.Module) -> list:

    def before(module, args, kwargs):
        feed = next((kwargs.get(k) for k in ("input_ids", "inputs_embeds") if kwargs.get(k) is not None), None)
        if feed is None and args and isinstance(args[0], torch.Tensor):
            feed = args[0]
        length = feed.shape[1] if isinstance(feed, torch.Tensor) and feed.dim() >= 2 else None
        _INPUT_TOKENS.set(_INPUT_TOKENS.get() + (length,))

    def after(module, args, kwargs, output):
        _INPUT_TOKENS.set(_INPUT_TOKENS.get()[:-1])

    return [root.register_forward_pre_hook(before, with_kwargs=True),
            root.register_forward_hook(after, with_kwargs=True, always_call=True)]


def _innermost(module: nn.Module) -> dict | None:
    """The innermost active guard of this context that covers ``module``."""
    for guard in reversed(_GUARDS.get()):
        if id(module) in guard:
            return guard
    return None
