"""A key/value cache that recomputes a suffix in place: prefix reuse without copying the prefix.

AtMan (and any "perturb from position s onwards" workload) runs one base pass over a sequence of length ``L`` and
then many forwards that recompute positions ``s..L-1`` under a perturbation, re-using the base pass's keys/values
for ``0..s-1`` (exact by causality). transformers' ``DynamicCache`` would concatenate the prefix with the new
states on every layer of every forward, a copy of the whole cache per forward. :class:`SuffixRecomputeCache`
instead holds one preallocated ``[B, H, L, d]`` buffer per layer and writes the recomputed states into it.

Processing perturbations in **descending** start order keeps this exact: a forward from ``s`` overwrites positions
``>= s`` only, and every later forward starts at ``s' <= s`` and reads only positions ``< s'`` from the buffer
(positions ``>= s'`` are rewritten by that forward, layer by layer, before its attention reads them).

Example:
    >>> import torch
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("llama")
    >>> ids, pos = torch.arange(4, 14).view(1, 10), torch.arange(10).view(1, 10)
    >>> cache = SuffixRecomputeCache(length=10)
    >>> _ = model(input_ids=ids, position_ids=pos, use_cache=True, **{cache_argument(model): cache})  # base pass
    >>> edited = ids.clone()
    >>> edited[:, 6:] = 7                                          # recompute positions 6..9 under a change
    >>> suffix = model(input_ids=edited[:, 6:], position_ids=pos[:, 6:], use_cache=True,
    ...                **{cache_argument(model): cache.resume_from(6)}).logits
    >>> torch.allclose(suffix, model(input_ids=edited, position_ids=pos).logits[:, 6:], atol=1e-5)
    True
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from hf_ext.utils.validation import check_size

from ..compat import cache_argument  # re-exported: hf_ext.core.cache_argument

__all__ = ["SuffixRecomputeCache", "cache_argument"]


class _SuffixLayer(DynamicLayer):
    """One layer's ``[B, H, L, d]`` key and value buffers; ``update`` writes at the current fill position."""

    def __init__(self, length: int):
        super().__init__()
        self.length = length
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None
        self.batch = 0
        self.filled = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        self.device = key_states.device
        self.key_buffer = key_states.new_empty(b, h, self.length, d)
        self.value_buffer = value_states.new_empty(b, value_states.shape[1], self.length, value_states.shape[-1])
        self.batch = b
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        b, n = key_states.shape[0], key_states.shape[-2]
        end = self.filled + n
        if end > self.length or b > self.key_buffer.shape[0]:
            raise ValueError(f"SuffixRecomputeCache holds {self.key_buffer.shape[0]} rows × {self.length} positions; "
                             f"got {b} rows at positions {self.filled}..{end - 1}")
        self.key_buffer[:b, :, self.filled:end] = key_states
        self.value_buffer[:b, :, self.filled:end] = value_states
        self.batch, self.filled = b, end
        self.keys = self.key_buffer[:b, :, :end]
        self.values = self.value_buffer[:b, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.filled if self.is_initialized else 0

    def resume_from(self, start: int, batch_size: int) -> None:
        if self.key_buffer.shape[0] < batch_size:
            # Every row must hold the base pass's prefix: replicate row 0 (done once, at the first batched resume).
            rows = batch_size - self.key_buffer.shape[0]
            self.key_buffer = torch.cat([self.key_buffer, self.key_buffer[:1].expand(rows, -1, -1, -1)])
            self.value_buffer = torch.cat([self.value_buffer, self.value_buffer[:1].expand(rows, -1, -1, -1)])
        self.filled, self.batch = start, batch_size
        self.keys = self.key_buffer[:batch_size, :, :start]
        self.values = self.value_buffer[:batch_size, :, :start]


class SuffixRecomputeCache(DynamicCache):
    """A ``DynamicCache`` whose layers write into preallocated ``[B, H, length, d]`` buffers (see the module doc).

    Args:
        length: total sequence length ``L`` (base pass length; no forward may go past it).

    Fill it with a base pass over all ``L`` positions (batch 1), then call :meth:`resume_from` before each forward
    that recomputes positions ``start..L-1``; forwards must come in non-increasing ``start`` order for the
    reused prefix to be the base pass's (checked).
    """

    def __init__(self, length: int):
        super().__init__()
        self.length = check_size("length", length)  # positions
        self.layers = []
        self.layer_class_to_replicate = self._new_layer  # the Cache appends one per layer index it meets
        self._last_start: int | None = None

    def _new_layer(self) -> _SuffixLayer:
        return _SuffixLayer(self.length)

    def resume_from(self, start: int, batch_size: int = 1, *, rewrite: bool = False) -> SuffixRecomputeCache:
        """Prepare a forward over positions ``start..L-1`` for ``batch_size`` rows sharing the base prefix.

        Args:
            start: first position the next forward computes.
            batch_size: rows of the next forward (the buffers grow to it once, replicating row 0).
            rewrite: the next forward recomputes the base pass from ``start`` (restoring overwritten positions):
                skip the start-order check; follow it with :meth:`broadcast_base`.

        Raises:
            ValueError: ``start`` outside ``[0, L)`` or larger than a previous start (the prefix was overwritten).
        """
        if not 0 <= start < self.length:
            raise ValueError(f"start {start} is outside the cached sequence of {self.length} positions")
        if not rewrite and self._last_start is not None and start > self._last_start:
            raise ValueError(f"start {start} comes after a forward from {self._last_start}, which overwrote positions "
                             f">= {self._last_start}: resume in non-increasing start order")
        if not self.layers or not self.layers[0].is_initialized:
            raise ValueError("run the base pass through this cache before resume_from")
        for layer in self.layers:
            layer.resume_from(start, batch_size)
        self._last_start = start
        return self

    def broadcast_base(self, start: int) -> None:
        """After a base-pass forward from ``start`` on row 0 (``resume_from(start, 1, rewrite=True)``), copy row 0's
        positions ``start..L-1`` to the other rows and allow any start again."""
        for layer in self.layers:
            if layer.key_buffer.shape[0] > 1:
                layer.key_buffer[1:, :, start:] = layer.key_buffer[:1, :, start:]
                layer.value_buffer[1:, :, start:] = layer.value_buffer[:1, :, start:]
            layer.filled = self.length
        self._last_start = None
