"""Faithfulness of an explanation: deletion curves and their area (AUC) against random order.

Suppress the units cumulatively, most important first (by :meth:`Explanation.importance`), and follow the
target's probability ``p_k = exp(−mean_t CE_t)`` (geometric mean per-token probability) relative to ``p_0``.
The deletion AUC is the trapezoid area under ``p_k / p_0`` over the fraction ``k / U`` of suppressed units:
**lower is more faithful** (the probability falls faster). The same area for random orders is the baseline.

Example:
    >>> from hf_ext.atman import AtManExplainer
    >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
    >>> ex = AtManExplainer(tiny_causal_lm(), tiny_tokenizer(), suppression_factor=0.0, max_batch_size=8, progress=False)
    >>> res = deletion_auc(ex, "a cat", " sat", n_random=2)
    >>> sorted(res)
    ['atman_auc', 'atman_curve', 'faithfulness', 'importance', 'random_auc']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from hf_ext.utils.validation import check_size

if TYPE_CHECKING:
    from tqdm import tqdm

    from .explainer import AtManExplainer
    from .explanation import Explanation
    from .scorer import PreparedSequence
    from .units import Unit


def _auc(curve: torch.Tensor) -> float:
    if curve.numel() < 2:
        return float(curve.mean())
    x = torch.linspace(0, 1, curve.numel())
    return float(torch.trapezoid(curve, x))


@torch.no_grad()
def deletion_curve(explainer: AtManExplainer, prep: PreparedSequence, units: Sequence[Unit], order: Sequence[int], *,
                   factor: float | None = None, bar: tqdm | None = None) -> torch.Tensor:
    """``[U + 1]`` relative target probability after suppressing ``order[:k]`` units, ``k = 0..U``.

    Args:
        explainer: the :class:`~hf_ext.atman.AtManExplainer` (its model, mode, layers, batching and prefix reuse).
        prep: its prepared sequence (``explainer.prepare_strings(...)[0]``).
        units: the units.
        order: a permutation of ``range(len(units))``.
        factor: suppression weight (default: the explainer's ``suppression_factor``); no neighbourhood.
        bar: a progress bar to advance per scored perturbation (default: one of this curve's own).
    """
    order = [int(o) for o in order]
    if sorted(order) != list(range(len(units))):
        raise ValueError(f"order must be a permutation of range({len(units)}), got {order}")
    positions = [sorted({p for j in order[:k] for p in units[j].positions}) for k in range(len(order) + 1)]
    weights = explainer.unit_weights(prep, positions, factor=factor, neighbourhood=False)
    ce = explainer.score_weights(prep, weights, desc="deletion", bar=bar)
    logp = -ce.mean(1)
    return torch.exp(logp - logp[0]).float().cpu()


def deletion_auc(explainer: AtManExplainer, prompt: str, target: str, *, granularity: str = "token",
                 n_random: int = 8, seed: int = 0, factor: float | None = None,
                 explanation: Explanation | None = None) -> dict:
    """Deletion AUC of the AtMan order vs the mean over ``n_random`` seeded random orders.

    Args:
        explainer: the :class:`~hf_ext.atman.AtManExplainer` (with a tokenizer).
        prompt, target, granularity: as in :meth:`~hf_ext.atman.AtManExplainer.explain`.
        n_random: random deletion orders averaged for the baseline.
        seed: seed of the random orders.
        factor: suppression weight (default: the explainer's ``suppression_factor``).
        explanation: an explanation of the same prompt/target/granularity to rank the units by; ``None`` = computed
            here.

    Returns:
        ``{"atman_auc", "random_auc", "faithfulness" (= random − atman; > 0 beats random), "atman_curve",
        "importance"}``.
    """
    from hf_ext.utils.progress import progress_bar

    check_size("n_random", n_random)
    prep, units, _, _ = explainer.prepare_strings(prompt, target, granularity)
    if explanation is None:
        explanation = explainer.explain_prepared(prep, units, False)
    importance = explanation.importance()
    order = torch.argsort(importance, descending=True, stable=True).tolist()
    gen = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(units), generator=gen).tolist() for _ in range(n_random)]
    # one bar over every curve's perturbations (not one bar per curve)
    with progress_bar(total=(n_random + 1) * (len(units) + 1), desc="deletion", unit="perturbation",
                      enabled=explainer.progress, leave=False) as bar:
        curve = deletion_curve(explainer, prep, units, order, factor=factor, bar=bar)
        rand = [_auc(deletion_curve(explainer, prep, units, o, factor=factor, bar=bar)) for o in orders]
    atman = _auc(curve)
    random_auc = sum(rand) / len(rand)
    return {"atman_auc": atman, "random_auc": random_auc, "faithfulness": random_auc - atman,
            "atman_curve": curve.tolist(), "importance": importance.tolist()}
