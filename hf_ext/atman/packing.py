"""Packed suffix recomputation: several perturbations' suffixes in one sequence row (log-additive AtMan).

With prefix reuse a perturbation whose first changed position is ``s`` recomputes only the ``L - s`` positions
``s..L-1``. Batching such suffixes row by row pads every row to the longest; recomputing them one per forward
(``max_batch_size=1``) pays the per-forward cost (kernel launches, reading every weight once) for a few tokens.
Packing puts several suffixes end to end in one row of at most ``L`` tokens (a plain forward's length, so the
activations stay those of one plain forward). Each segment must compute exactly what its own forward would: a query
of segment ``c`` at position ``p`` sees the base pass's cached keys ``k < s_c`` and its own segment's keys at
positions ``<= p``, with the log-additive suppression ``log w_c[k]`` of its perturbation added. Two ways to express it:

- ``"segments"`` (:func:`segment_inputs`, :mod:`hf_ext.core.segments`): every segment attends to its own ``L``
  positions with its own ``[L - s_c, L]`` bias; the row's new keys are not cached (the cache keeps the base pass's
  ``L`` positions). Fewest attention FLOPs and least memory; one attention call per segment and layer.
- ``"mask"`` (:func:`packed_inputs`): one 4D additive mask ``[Q, L + Q]`` over the base pass's ``L`` cached
  positions followed by the row's keys (the cache holds ``2L``); one attention call per layer, which suits
  accelerators where kernel launches cost more than the masked-out scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hf_ext.core.attention import log_additive_bias
from hf_ext.core.segments import Segment


@dataclass
class PackedBatch:
    """One packed forward: ``rows`` lists, per batch row, the ``(perturbation, start)`` segments in order."""

    rows: list[list[tuple[int, int]]]
    length: int   # Q, the longest row
    seq_len: int  # L

    @property
    def segments(self) -> list[tuple[int, int, int, int]]:
        """``(row, perturbation, start, offset of the segment in its row)`` for every segment."""
        out = []
        for r, row in enumerate(self.rows):
            off = 0
            for c, s in row:
                out.append((r, c, s, off))
                off += self.seq_len - s
        return out


def pack(starts: dict[int, int], seq_len: int, *, capacity: int, rows_per_forward: int) -> list[PackedBatch]:
    """First-fit-decreasing packing of suffixes ``s..seq_len-1`` into rows of ``capacity`` tokens.

    Args:
        starts: ``{perturbation index: first changed position}`` (positions ``< seq_len``).
        seq_len: ``L``.
        capacity: tokens per row (``>= L``, so any single suffix fits).
        rows_per_forward: rows per forward (``max_batch_size``).

    Returns:
        The forwards; every perturbation appears in exactly one segment.
    """
    if capacity < seq_len:
        raise ValueError(f"capacity {capacity} is shorter than the sequence ({seq_len}): a suffix would not fit")
    items = sorted(starts.items(), key=lambda cs: (cs[1], cs[0]))  # longest suffix (earliest start) first
    bins: list[list[tuple[int, int]]] = []
    free: list[int] = []
    for c, s in items:
        n = seq_len - s
        for i, room in enumerate(free):
            if n <= room:
                bins[i].append((c, s))
                free[i] -= n
                break
        else:
            bins.append([(c, s)])
            free.append(capacity - n)
    # Rows of similar fill share a forward, so padding to the longest row wastes little.
    order = sorted(range(len(bins)), key=lambda i: free[i])
    forwards = []
    for i in range(0, len(order), rows_per_forward):
        rows = [bins[j] for j in order[i : i + rows_per_forward]]
        forwards.append(PackedBatch(rows=rows, length=max(capacity - free[j] for j in order[i : i + rows_per_forward]),
                                    seq_len=seq_len))
    return forwards


def _layout(batch: PackedBatch, real: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per query of the packed rows: sequence position (padding: the first real one), segment id, perturbation,
    segment start, and whether it is a real query (all ``[B, Q]``, on CPU)."""
    L = batch.seq_len
    B, Q = len(batch.rows), batch.length
    first_real = int(real.nonzero()[0]) if real.any() else 0
    positions = torch.full((B, Q), first_real, dtype=torch.long)
    seg = torch.full((B, Q), -1, dtype=torch.long)     # segment id (global, unique per batch)
    pert = torch.zeros((B, Q), dtype=torch.long)        # perturbation index
    start = torch.zeros((B, Q), dtype=torch.long)
    for sid, (r, c, s, off) in enumerate(batch.segments):
        n = L - s
        positions[r, off : off + n] = torch.arange(s, L)
        seg[r, off : off + n] = sid
        pert[r, off : off + n] = c
        start[r, off : off + n] = s
    return {"positions": positions, "segment": seg, "perturbation": pert, "start": start, "valid": seg >= 0,
            "first_real": first_real}


def suffix_bias(weights: torch.Tensor, real: torch.Tensor, start: int, dtype: torch.dtype) -> torch.Tensor:
    """``[1, 1, L - start, L]`` log-additive bias of the queries at positions ``start..L-1`` of one perturbation.

    Args:
        weights: ``[L]`` suppression weights of the perturbation (1 = untouched).
        real: ``[L]`` bool, the non-padding positions.
        start: first recomputed position.
        dtype: the model's dtype.
    """
    L = weights.shape[-1]
    keys = torch.arange(L, device=weights.device)
    visible = (keys.view(1, L) <= keys[start:].view(-1, 1)) & real.view(1, L)
    return log_additive_bias(visible, torch.log(weights.float()).view(1, L), dtype).view(1, 1, L - start, L)


def segment_inputs(batch: PackedBatch, *, weights: torch.Tensor, real: torch.Tensor, position_ids: torch.Tensor,
                   dtype: torch.dtype) -> dict:
    """Token positions, position ids and the :class:`~hf_ext.core.segments.Segment` s of one packed forward run with
    segment attention (each segment attends to its own sequence; no 4D mask over the packed row).

    Args: as :func:`packed_inputs`.

    Returns:
        ``{"positions": [B, Q], "position_ids": [B, Q], "segments": list[Segment], "valid": [B, Q] bool}``.
    """
    lay = _layout(batch, real)
    device = weights.device
    real = real.to(device)
    segments = [Segment(row=r, offset=off, start=s, bias=suffix_bias(weights[c], real, s, dtype))
                for r, c, s, off in batch.segments]
    positions = lay["positions"].to(device)
    return {"positions": positions, "position_ids": position_ids.to(device)[positions], "segments": segments,
            "valid": lay["valid"].to(device)}


def packed_inputs(batch: PackedBatch, *, weights: torch.Tensor, real: torch.Tensor, position_ids: torch.Tensor,
                  dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Token positions, position ids and the 4D additive mask of one packed forward.

    Args:
        batch: the packed forward.
        weights: ``[C, L]`` suppression weights (1 = untouched) of all perturbations.
        real: ``[L]`` bool, the non-padding positions.
        position_ids: ``[L]`` position ids of the sequence.
        dtype: the model's dtype (of the mask).

    Returns:
        ``{"positions": [B, Q] absolute positions to feed (padding: the first real position),
        "position_ids": [B, Q], "mask": [B, 1, Q, L + Q] additive, "valid": [B, Q] bool}``.
    """
    L = weights.shape[1]
    B, Q = len(batch.rows), batch.length
    device = weights.device
    lay = _layout(batch, real)
    first_real = lay["first_real"]
    positions, seg, pert, start, valid = (lay[k].to(device) for k in ("positions", "segment", "perturbation", "start", "valid"))
    min_value = torch.finfo(dtype).min
    logw = torch.log(weights.float()).clamp_min(min_value)[pert]           # [B, Q, L]
    keys = torch.arange(L, device=device)
    base_vis = (keys.view(1, 1, L) < start.unsqueeze(-1)) & real.to(device).view(1, 1, L)
    new_vis = ((seg.unsqueeze(-1) == seg.unsqueeze(1)) & (positions.unsqueeze(1) <= positions.unsqueeze(-1))
               & valid.unsqueeze(1) & valid.unsqueeze(-1))                       # [B, Q, Q]
    new_logw = torch.gather(logw, 2, positions.unsqueeze(1).expand(B, Q, Q))   # weight of key j's position
    mask = log_additive_bias(torch.cat([base_vis, new_vis], dim=-1), torch.cat([logw, new_logw], dim=-1), dtype)
    pad_rows = ~valid
    if pad_rows.any():  # padding queries see one real key: defined softmax, outputs ignored
        mask[pad_rows] = min_value
        mask[..., first_real] = torch.where(pad_rows, torch.zeros((), dtype=dtype, device=device), mask[..., first_real])
    return {"positions": positions, "position_ids": position_ids.to(device)[positions], "mask": mask.unsqueeze(1),
            "valid": valid}
