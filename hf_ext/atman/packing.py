"""Packed suffix recomputation: several perturbations' suffixes in one sequence row (log-additive AtMan).

With prefix reuse a perturbation whose first changed position is ``s`` recomputes only the ``L - s`` positions
``s..L-1``. Batching such suffixes row by row pads every row to the longest; recomputing them one per forward
(``max_batch_size=1``) pays the per-forward cost (kernel launches, reading every weight once) for a few tokens.
Packing puts several suffixes end to end in one row of at most ``L`` tokens (a plain forward's length, so the
activations stay those of one plain forward) and separates them with a 4D additive attention mask:

- a query of segment ``c`` at position ``p`` sees the base pass's cached keys ``k < s_c`` and its own segment's
  keys at positions ``<= p``, nothing else (so every segment computes exactly what its own forward would);
- the log-additive suppression ``log w_c[k]`` of its perturbation is added to the keys it sees.

The cache holds the base pass's ``L`` positions followed by the packed row's keys, so nothing of the base is
overwritten (see :class:`~hf_ext.core.cache.SuffixRecomputeCache`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
    positions, seg, pert, start = (t.to(device) for t in (positions, seg, pert, start))
    valid = seg >= 0
    min_value = torch.finfo(dtype).min
    logw = torch.log(weights.float()).clamp_min(min_value)[pert]           # [B, Q, L]
    keys = torch.arange(L, device=device)
    base_vis = (keys.view(1, 1, L) < start.unsqueeze(-1)) & real.to(device).view(1, 1, L)
    new_vis = ((seg.unsqueeze(-1) == seg.unsqueeze(1)) & (positions.unsqueeze(1) <= positions.unsqueeze(-1))
               & valid.unsqueeze(1) & valid.unsqueeze(-1))                       # [B, Q, Q]
    new_logw = torch.gather(logw, 2, positions.unsqueeze(1).expand(B, Q, Q))   # weight of key j's position
    vis = torch.cat([base_vis, new_vis], dim=-1)
    lw = torch.cat([logw, new_logw], dim=-1)
    # As in hf_ext.core.attention: a query with no visible key of positive weight keeps the plain mask.
    usable = (vis & (lw > min_value)).any(-1, keepdim=True)
    mask = torch.where(vis & usable, lw, torch.where(vis, 0.0, min_value))
    pad_rows = ~valid
    if pad_rows.any():  # padding queries see one real key: defined softmax, outputs ignored
        mask[pad_rows] = min_value
        mask[..., first_real] = torch.where(pad_rows, 0.0, mask[..., first_real])
    return {"positions": positions, "position_ids": position_ids.to(device)[positions], "mask": mask.unsqueeze(1).to(dtype),
            "valid": valid}
