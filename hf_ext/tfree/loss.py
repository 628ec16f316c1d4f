"""T-FREE's training loss: binary cross-entropy over the ``v`` multi-label outputs with sparse positive targets.

Each position's target row has a handful of positives (the activations of the next word's trigrams) among ``v``
columns, so the loss is computed from the dense softplus sum and a correction at the positive coordinates only,
without materialising the ``[N, v]`` target matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sparse_bce_loss"]


def sparse_bce_loss(logits: torch.Tensor, pos_rows: torch.Tensor, pos_cols: torch.Tensor, weights: torch.Tensor,
                    pos_weight: float, loss_scale: float = 1.0) -> torch.Tensor:
    """``loss_scale × Σ_{p,j} w_p·BCE(x_pj, y_pj; pos_weight) / (#{w_p > 0}·v)`` with sparse positives.

    Args:
        logits: ``[N, v]`` multi-label logits.
        pos_rows, pos_cols: ``[P]`` coordinates of the positive targets (unique per row).
        weights: ``[N]`` per-position weights (0 = ignored position).
        pos_weight: weight of the positive term.
        loss_scale: multiplier of the mean.

    Example:
        >>> x = torch.zeros(2, 5)
        >>> float(sparse_bce_loss(x, torch.tensor([0]), torch.tensor([1]), torch.ones(2), pos_weight=1.0))  # log 2
        0.6931471824645996
    """
    x = logits.float()
    w = weights.to(x.dtype)
    total = (F.softplus(x).sum(-1) * w).sum()
    if pos_rows.numel():
        xp = x[pos_rows, pos_cols]
        total = total + (w[pos_rows] * (pos_weight * F.softplus(-xp) - F.softplus(xp))).sum()
    denom = (w > 0).sum().clamp(min=1) * x.shape[-1]
    return loss_scale * total / denom
