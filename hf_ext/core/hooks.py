"""Hooks with a lifetime: forward hooks and module swaps that always restore the model.

Two rules make these safe to use on a shared model:

* **Lifetime.** Everything is undone in ``finally``: after the ``with`` block, normally or through an exception,
  the model computes bit-identical outputs to before.
* **Per-call state in ``contextvars``.** A hook registered by one thread is visible to every thread that runs the
  model, so the hook itself is a no-op unless the *calling* context activated it. Parameters (e.g. a steering
  strength per batch row) travel in the same context variable, so two threads (or two asyncio tasks) steering one
  model with different strengths do not see each other's values. Work handed to a thread pool does not inherit
  the context: wrap it with :func:`carry_context` (or submit through a :class:`ContextExecutor`) to carry the
  steering into the worker.

Example:
    >>> import torch
    >>> from hf_ext.testing import tiny_causal_lm
    >>> from hf_ext.core.anatomy import get_anatomy
    >>> model = tiny_causal_lm("llama")
    >>> mlp = get_anatomy(model).mlp_outputs[0]
    >>> def scale(module, args, output, params):
    ...     return output * rows(params["alpha"], output)
    >>> ids = torch.tensor([[1, 5, 6], [1, 7, 8]])
    >>> with forward_hooks({mlp: scale}, params={"alpha": torch.tensor([1.0, 0.0])}):
    ...     steered = model(ids).logits
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn

T = TypeVar("T")
HookFn = Callable[[nn.Module, tuple, Any, Any], Any]
PreHookFn = Callable[[nn.Module, tuple, Any], Any]

# token -> params of the hook groups active in the current context (immutable dict: copy on write).
_EMPTY: dict[object, Any] = {}
_ACTIVE: contextvars.ContextVar[dict[object, Any]] = contextvars.ContextVar("hf_ext_active_hooks", default=_EMPTY)  # noqa: B039 - never mutated


def current_params(token: object, default: Any = None) -> Any:
    """Parameters of an active hook group in the calling context (``default`` if it is not active here)."""
    return _ACTIVE.get().get(token, default)


@contextmanager
def activate(token: object, params: Any = None) -> Iterator[None]:
    """Mark ``token`` active with ``params`` in the current context for the duration of the block."""
    ctx_token = _ACTIVE.set({**_ACTIVE.get(), token: params})
    try:
        yield
    finally:
        _ACTIVE.reset(ctx_token)


def carry_context(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` bound to a copy of the *calling* context, so that it runs with the caller's steering.

    Steering (:func:`forward_hooks`, SCAR ``steer()``, ``attention_controls`` …) is active only in the context that
    entered the block: a worker thread of a ``ThreadPoolExecutor`` (or a ``threading.Thread``) starts with an empty
    context and runs the model **unsteered**. Wrap the work with ``carry_context`` inside the block to carry the
    steering along. Each call of the wrapper runs in its own copy of the captured context, so it can be called
    from several threads at once; the steering seen is the one active when ``carry_context`` was called.
    (``asyncio`` tasks and ``loop.run_in_executor`` / ``asyncio.to_thread`` copy the context already.)

    Args:
        fn: any callable.

    Returns:
        A callable with ``fn``'s arguments and result.

    Example:
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> lin = nn.Linear(2, 2)
        >>> x = torch.ones(1, 2)
        >>> with ThreadPoolExecutor(1) as pool, forward_hooks({lin: lambda m, a, out, p: out * 0}):
        ...     plain = pool.submit(lin, x).result()
        ...     steered = pool.submit(carry_context(lin), x).result()
        >>> bool((steered == 0).all()), bool((plain == 0).all())
        (True, False)
    """
    if not callable(fn):
        raise TypeError(f"carry_context needs a callable, got {fn!r} ({type(fn).__name__})")
    captured = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        return captured.copy().run(fn, *args, **kwargs)

    return run


class ContextExecutor(Executor):
    """An executor wrapper whose ``submit`` / ``map`` run each task in the context of the *submitting* call.

    ``ContextExecutor(ThreadPoolExecutor(4))`` is a drop-in executor for code that submits model calls from inside
    a steering block (:func:`carry_context` for every task). Shutting it down shuts the wrapped executor down.

    Example:
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> lin = nn.Linear(2, 2)
        >>> with ContextExecutor(ThreadPoolExecutor(2)) as pool:
        ...     with forward_hooks({lin: lambda m, a, out, p: out * 0}):
        ...         outs = list(pool.map(lin, [torch.ones(1, 2)] * 3))
        >>> all(bool((o == 0).all()) for o in outs)
        True
    """

    def __init__(self, executor: Executor):
        if not isinstance(executor, Executor):
            raise TypeError(f"executor must be a concurrent.futures.Executor, got {executor!r}")
        self.executor = executor

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self.executor.submit(carry_context(fn), *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.executor.shutdown(wait=wait, cancel_futures=cancel_futures)


def rows(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-batch-row parameter ``[B]`` (or a scalar) against ``like`` ``[B, ...]``.

    Args:
        value: scalar, ``[1]`` or ``[B]``.
        like: the tensor it multiplies/adds to; its first dim is the batch, or a multiple ``B*n`` of it with each
            row's entries contiguous: OPT's MLP sees ``[B*T, D]``, and ``generate()`` repeats rows for beams.

    Returns:
        ``value`` reshaped to ``[B, 1, ..., 1]`` (rows repeated to ``like.shape[0]``) on ``like``'s device and dtype.

    Raises:
        ValueError: ``like``'s leading dim is not a multiple of the number of values.
    """
    value = torch.as_tensor(value, device=like.device, dtype=like.dtype)
    if value.dim() == 0:
        return value
    leading = like.shape[0]
    if value.dim() != 1 or value.shape[0] == 0 or leading % value.shape[0] != 0:
        raise ValueError(
            f"per-row parameter has shape {tuple(value.shape)} but the batch has {leading} rows; "
            "pass a scalar or a 1D tensor with one value per batch row"
        )
    if value.shape[0] not in (1, leading):
        value = value.repeat_interleave(leading // value.shape[0])
    return value.view(-1, *([1] * (like.dim() - 1)))


def _check_modules(modules: Mapping) -> None:
    for module in modules:
        if not isinstance(module, nn.Module):
            raise TypeError(f"hook targets must be nn.Module instances, got {type(module).__name__}")


class HookHandle:
    """The hooks one :func:`register_hooks` call placed; :meth:`remove` takes them all off again (idempotent).

    Attributes:
        functions: the hook callables as registered on the modules.
    """

    def __init__(self, handles: list, functions: list[Callable]):
        self._handles = handles
        self.functions = tuple(functions)

    @property
    def active(self) -> bool:
        """Whether the hooks are still registered."""
        return bool(self._handles)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def remove_from(self, root: nn.Module) -> int:
        """Remove these hook functions from every module under ``root`` (e.g. a ``copy.deepcopy`` of the hooked
        model, whose modules carry the same functions); returns how many were removed. Other hooks stay."""
        mine = {id(fn) for fn in self.functions}
        removed = 0
        for module in root.modules():
            for hooks in (module._forward_hooks, module._forward_pre_hooks):
                for key in [k for k, fn in hooks.items() if id(fn) in mine]:
                    del hooks[key]
                    removed += 1
        return removed

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def register_hooks(hooks: Mapping[nn.Module, Callable] | None = None, *,
                   pre_hooks: Mapping[nn.Module, Callable] | None = None, with_kwargs: bool = False) -> HookHandle:
    """Register plain forward (and pre-forward) hooks that stay until :meth:`HookHandle.remove`.

    For hooks that belong to an object's lifetime (an attached adapter, an encoder's bottleneck adapters). The
    hooks run in every thread; gate them with :func:`current_params` / :func:`activate` when they must act only in
    the calling context, or use :func:`forward_hooks` for a ``with`` block that does both.

    Args:
        hooks: ``{module: fn(module, args, output) -> new_output | None}``.
        pre_hooks: ``{module: fn(module, args) -> new_args | None}``, or with ``with_kwargs=True``
            ``fn(module, args, kwargs) -> (args, kwargs) | None`` (the keyword arguments of the call are visible).
        with_kwargs: register the pre-hooks with the call's keyword arguments.

    Returns:
        A :class:`HookHandle` (also a context manager that removes the hooks on exit).

    Raises:
        TypeError: a key that is not an ``nn.Module``.

    Example:
        >>> lin = nn.Linear(2, 2)
        >>> handle = register_hooks({lin: lambda module, args, output: output * 0})
        >>> bool((lin(torch.ones(1, 2)) == 0).all())
        True
        >>> handle.remove(); len(lin._forward_hooks)
        0
    """
    hooks, pre_hooks = hooks or {}, pre_hooks or {}
    _check_modules(hooks)
    _check_modules(pre_hooks)
    handles, functions = [], []
    try:
        for module, fn in hooks.items():
            handles.append(module.register_forward_hook(fn))
            functions.append(fn)
        for module, fn in pre_hooks.items():
            handles.append(module.register_forward_pre_hook(fn, with_kwargs=with_kwargs))
            functions.append(fn)
    except BaseException:
        for handle in handles:
            handle.remove()
        raise
    return HookHandle(handles, functions)


@contextmanager
def forward_hooks(
    hooks: Mapping[nn.Module, HookFn] | None = None,
    *,
    params: Any = None,
    pre_hooks: Mapping[nn.Module, PreHookFn] | None = None,
    with_kwargs: bool = False,
) -> Iterator[object]:
    """Register forward (and pre-forward) hooks for the duration of a ``with`` block.

    Args:
        hooks: ``{module: fn(module, args, output, params) -> new_output | None}``. Returning ``None`` keeps the
            output.
        params: any per-call object (tensors with a leading batch dim, floats, dicts …) handed to every hook;
            use :func:`rows` to broadcast per-row values.
        pre_hooks: ``{module: fn(module, args, params) -> new_args | None}``; with ``with_kwargs=True``
            ``fn(module, args, kwargs, params) -> (args, kwargs) | None``.
        with_kwargs: hand the pre-hooks the call's keyword arguments too.

    Yields:
        The group's token (see :func:`current_params`).

    The hooks fire only in the context that entered the block (and contexts copied from it), never in other
    threads running the same model; they are removed on exit, also on exceptions.
    """
    hooks, pre_hooks = hooks or {}, pre_hooks or {}
    _check_modules(hooks)
    _check_modules(pre_hooks)
    token = object()

    def gated(fn):
        def hook(module, *args):
            active = _ACTIVE.get()
            if token not in active:
                return None
            return fn(module, *args, active[token])

        return hook

    handle = register_hooks({m: gated(fn) for m, fn in hooks.items()},
                            pre_hooks={m: gated(fn) for m, fn in pre_hooks.items()}, with_kwargs=with_kwargs)
    try:
        with activate(token, params):
            yield token
    finally:
        handle.remove()


def _resolve(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name) if parent_name else model
        getattr(parent, child)
    except AttributeError as err:
        raise ValueError(f"{type(model).__name__} has no submodule {name!r}") from err
    return parent, child


@contextmanager
def module_swaps(model: nn.Module, swaps: Mapping[str, nn.Module]) -> Iterator[nn.Module]:
    """Replace submodules by name for the duration of a ``with`` block, restoring the originals on exit.

    A swap changes the model for every thread (it is structural, not per-call): wrap the replacement so that
    it reads per-call state from :func:`current_params` if other threads share the model.

    Args:
        model: the root module.
        swaps: ``{"model.layers.3.mlp": new_module}``.

    Example:
        >>> from hf_ext.testing import tiny_causal_lm
        >>> m = tiny_causal_lm("gpt2")
        >>> with module_swaps(m, {"transformer.h.0.mlp": nn.Identity()}):
        ...     pass
    """
    originals: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for name, new in swaps.items():
            if not isinstance(new, nn.Module):
                raise TypeError(f"replacement for {name!r} must be an nn.Module, got {type(new).__name__}")
            parent, child = _resolve(model, name)
            originals.append((parent, child, getattr(parent, child)))
            setattr(parent, child, new)
        yield model
    finally:
        for parent, child, old in reversed(originals):
            setattr(parent, child, old)
