"""What decoder layers take and hand on: the layout of their hidden states (where batch and sequence sit) and how to
find the hidden states in a layer's call or output. Shared by :mod:`hf_ext.core.layers`' probe and its resume.

Example:
    >>> import torch
    >>> layout_of(torch.zeros(1, 3, 8), 3).describe()
    '[batch, seq, 8]'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Layout:
    """Where batch and sequence sit in a hidden-state tensor, and its other sizes: ``[B, T, D]`` for most
    decoders; ``[B, T, streams, D]`` for hyper-connection stacks (DeepSeek-V4's mHC), ``[streams, B, T, D]`` for
    Gemma-3n's AltUp."""

    shape: tuple[int, ...]  # of the probe's tensor (batch 1, a few tokens)
    batch_axis: int
    seq_axis: int

    def describe(self) -> str:
        """The shape with ``batch`` and ``seq`` named, e.g. ``[batch, seq, 64]``."""
        names = [str(n) for n in self.shape]
        names[self.batch_axis], names[self.seq_axis] = "batch", "seq"
        return "[" + ", ".join(names) + "]"

    def matches(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` has this layout (any batch and length, the other sizes equal)."""
        return tensor.dim() == len(self.shape) and all(
            a in (self.batch_axis, self.seq_axis) or tensor.shape[a] == n for a, n in enumerate(self.shape))


def layout_of(tensor: torch.Tensor, length: int) -> Layout | None:
    """The layout of a probe tensor (batch 1, length ``length``): the sequence axis is the one axis of size
    ``length`` right after an axis of size 1 (the batch); ``None`` where that is not unique."""
    shape = tuple(tensor.shape)
    axes = [a for a in range(1, len(shape)) if shape[a] == length and shape[a - 1] == 1]
    if tensor.dim() < 3 or len(axes) != 1:
        return None
    return Layout(shape, axes[0] - 1, axes[0])


def first_hidden(out: Any) -> torch.Tensor | None:
    """The hidden states a decoder returned (``None`` if it returned something else)."""
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out if isinstance(out, torch.Tensor) else None


def hidden_arg(args: tuple, kwargs: dict) -> Any:
    """The hidden states a decoder layer is called with (its first positional argument or ``hidden_states=``)."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    return kwargs.get("hidden_states")


def same_tensor(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are tensors of one shape with equal values."""
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
