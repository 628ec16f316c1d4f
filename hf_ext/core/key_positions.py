"""From prompt spans to key positions and ``[batch, keys]`` weights for :func:`~hf_ext.core.attention.attention_controls`.

A fast tokenizer's character offsets map prompt spans to token (key) positions (:func:`spans_to_key_positions`);
the lengths of a prompt's items (text pieces, images) map item indices to positions
(:func:`items_to_key_positions`); :func:`key_weights` puts a factor on those positions and 1 elsewhere.

Example:
    >>> key_weights(1, 4, [[1]], 0.0).tolist()
    [[1.0, 0.0, 1.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hf_ext.utils.validation import ArgumentTypeError, check_float, check_size, check_token_ids

__all__ = ["items_to_key_positions", "key_weights", "spans_to_key_positions"]


def as_weights(weights: torch.Tensor | Sequence[float] | Sequence[Sequence[float]]) -> torch.Tensor:
    """Validated key weights: a ``[batch, keys]`` float32 copy of ``weights`` (``[keys]`` becomes one row).

    Raises ``TypeError`` for what is not numbers, ``ValueError`` for another shape or a weight that is negative
    or not finite.
    """
    if not isinstance(weights, torch.Tensor):
        try:
            weights = torch.as_tensor(weights, dtype=torch.float32)
        except (TypeError, ValueError) as err:
            raise TypeError(f"weights must be a tensor or nested list of floats [batch, keys], got {type(weights).__name__}") from err
    if weights.dim() == 1:
        weights = weights.unsqueeze(0)
    if weights.dim() != 2 or weights.shape[1] == 0:
        raise ValueError(f"weights must have shape [keys] or [batch, keys], got {tuple(weights.shape)}")
    weights = weights.detach().float().clone()  # ours: later in-place edits by the caller cannot leak in
    if not torch.isfinite(weights).all() or (weights < 0).any():
        bad = weights[~torch.isfinite(weights) | (weights < 0)][0].item()
        raise ValueError(f"attention weights must be finite and >= 0 (0 removes a key, 1 keeps it), got {bad}")
    return weights


def spans_to_key_positions(
    offset_mapping: torch.Tensor | Sequence[Sequence[int]] | Sequence[Sequence[Sequence[int]]],
    char_spans: Sequence[tuple[int, int]] | Sequence[Sequence[tuple[int, int]]],
) -> list[torch.LongTensor]:
    """Key positions of the tokens that overlap character spans of the prompt.

    Args:
        offset_mapping: ``[T, 2]`` or ``[B, T, 2]`` character offsets from a fast tokenizer
            (``return_offsets_mapping=True``), padded like the ``input_ids`` (so left padding is accounted for).
            Special and padding tokens have empty offsets and never match.
        char_spans: ``[(start, end), ...]`` half-open character spans applied to every row, or one such list per row.

    Returns:
        One sorted ``LongTensor`` of key positions per batch row.

    Example:
        >>> offsets = torch.tensor([[0, 0], [0, 5], [5, 6], [6, 11]])  # "<s>" "hello" "," " world"
        >>> spans_to_key_positions(offsets, [(6, 11)])[0].tolist()
        [3]
    """
    offsets = torch.as_tensor(offset_mapping)
    if offsets.dim() == 2:
        offsets = offsets.unsqueeze(0)
    if offsets.dim() != 3 or offsets.shape[-1] != 2:
        raise ValueError(f"offset_mapping must be [T, 2] or [B, T, 2], got shape {tuple(offsets.shape)}")
    batch = offsets.shape[0]
    per_row = char_spans if char_spans and isinstance(char_spans[0], (list, tuple)) and char_spans[0] and isinstance(char_spans[0][0], (list, tuple)) else [char_spans] * batch
    if len(per_row) != batch:
        raise ValueError(f"got spans for {len(per_row)} rows but offset_mapping has {batch}")
    result = []
    for row, spans in zip(offsets, per_row):
        start_tok, end_tok = row[:, 0], row[:, 1]
        hit = torch.zeros(row.shape[0], dtype=torch.bool)
        for span in spans:
            if len(span) != 2 or span[0] > span[1] or span[0] < 0:
                raise ValueError(f"character span {span!r} must be (start, end) with 0 <= start <= end")
            hit |= (end_tok > start_tok) & (end_tok > span[0]) & (start_tok < span[1])
        result.append(hit.nonzero().flatten())
    return result


def items_to_key_positions(item_lengths: Sequence[int], items: Sequence[int], *, offset: int = 0) -> torch.LongTensor:
    """Key positions of whole prompt items (text segments, images) laid out one after another.

    Args:
        item_lengths: number of tokens each item occupies, in prompt order (e.g. ``[1, 144, 7]`` for BOS, an image
            of 144 prefix tokens and a text).
        items: indices of the items to select.
        offset: key position of the first item (left-padding length, or the length of a preceding prefix).

    Example:
        >>> items_to_key_positions([1, 4, 3], [1]).tolist()
        [1, 2, 3, 4]
    """
    starts = [offset]
    for length in item_lengths:
        if length < 0:
            raise ValueError(f"item lengths must be >= 0, got {length}")
        starts.append(starts[-1] + length)
    positions = []
    for item in items:
        if not -len(item_lengths) <= item < len(item_lengths):
            raise ValueError(f"item index {item} is out of range for {len(item_lengths)} items")
        item %= len(item_lengths)
        positions.extend(range(starts[item], starts[item + 1]))
    return torch.tensor(sorted(set(positions)), dtype=torch.long)


def key_weights(
    batch: int,
    keys: int,
    positions: torch.Tensor | Sequence[int] | Sequence[Sequence[int] | torch.Tensor],
    factor: float | Sequence[float],
    *,
    base: torch.Tensor | None = None,
) -> torch.Tensor:
    """Build a ``[batch, keys]`` weight tensor: ``factor`` at the given key positions, 1 elsewhere.

    Args:
        batch: batch rows.
        keys: key length (prompt length including padding).
        positions: one list/tensor of key positions per row (or one for all rows).
        factor: the weight at those positions (one float, or one per row).
        base: start from these weights instead of ones (positions multiply into them).

    Example:
        >>> key_weights(2, 4, [[1], [2, 3]], 0.5).tolist()
        [[1.0, 0.5, 1.0, 1.0], [1.0, 1.0, 0.5, 0.5]]
    """
    check_size("batch", batch)
    check_size("keys", keys)
    if isinstance(positions, (str, bytes)) or not hasattr(positions, "__iter__"):
        raise ArgumentTypeError(f"positions must be key positions (a list or tensor of ints, or one per row), got "
                                f"{positions!r} ({type(positions).__name__})")
    weights = torch.ones(batch, keys) if base is None else as_weights(base).clone()
    if tuple(weights.shape) != (batch, keys):
        raise ValueError(f"base weights have shape {tuple(weights.shape)}, expected {(batch, keys)}")
    rows = list(positions)
    if len(rows) and not isinstance(rows[0], (list, tuple, torch.Tensor)):
        rows = [rows] * batch
    if len(rows) == 1 and batch > 1:
        rows = rows * batch
    if len(rows) != batch:
        raise ValueError(f"got positions for {len(rows)} rows but batch={batch}")
    factors = list(factor) if isinstance(factor, (list, tuple)) else [factor] * batch
    if len(factors) != batch:
        raise ValueError(f"got {len(factors)} factors for batch={batch}")
    for b, (pos, f) in enumerate(zip(rows, factors)):
        if isinstance(pos, torch.Tensor) and (pos.is_floating_point() or pos.dtype == torch.bool):
            raise ArgumentTypeError(f"positions[{b}] must hold integer key positions, got dtype {pos.dtype}")
        check_token_ids(f"positions[{b}]", pos if isinstance(pos, torch.Tensor) else list(pos), None)
        pos = torch.as_tensor(pos, dtype=torch.long).flatten()
        if pos.numel() and pos.max() >= keys:
            raise ValueError(f"positions[{b}] must be key positions in [0, {keys}), got {pos.max().item()} (outside)")
        check_float(f"factor[{b}]" if isinstance(factor, (list, tuple)) else "factor", f, min=0)
        weights[b, pos] *= f
    return weights
