"""SCAR evaluation helpers: concept-detection AUROC, FDT of steered vs base greedy generations, offline toxicity.

* :func:`auroc`: area under the ROC curve (scikit-learn's ``roc_auc_score``; ties count one half, as the
  Mann-Whitney U statistic; install ``hf-ext[eval]``).
* :func:`detection_auroc`: :meth:`ScarAdapter.detect` on labelled texts → AUROC per concept.
* :func:`steering_fdt`: first divergent token of the steered model vs the base model's greedy continuations
  (teacher forced, :mod:`hf_ext.dtm`), the reference's ``fdt_B_α`` columns — computed against the *base* model
  (the reference's ``fdt_S_1.0`` compares the SAE model with itself and is always N, spec §6.4).
* :func:`toxicity_scores`: offline offensive-text probabilities with ``alt-profanity-check`` (default) or any
  callable ``list[str] -> list[float]`` (e.g. an ``evaluate`` measurement wrapped in a lambda).

Example:
    >>> auroc(torch.tensor([0.9, 0.8, 0.3, 0.1]), torch.tensor([1, 1, 0, 0]))
    1.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..utils.imports import require
from .toy_data import concept_word_rate

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..dtm.divergence import ReferenceData
    from .modeling_scar import ScarAdapter

__all__ = ["auroc", "concept_word_rate", "detection_auroc", "steering_fdt", "toxicity_scores"]


def auroc(scores: torch.Tensor | Sequence[float], labels: torch.Tensor | Sequence[int] | Sequence[bool]) -> float:
    """AUROC of ``scores`` for binary ``labels`` (1 = positive): ``P(s_pos > s_neg) + ½ P(s_pos = s_neg)``.

    Args:
        scores: ``[N]`` real scores.
        labels: ``[N]`` in ``{0, 1}`` (bool allowed).

    Raises:
        ValueError: shape mismatch, labels outside {0, 1}, or only one class present.

    Example:
        >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.75
    """
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    y = torch.as_tensor(labels).flatten()
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.numel()}) and labels ({y.numel()}) must have the same length")
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"labels must be 0/1, got values {sorted(set(y.tolist()))}")
    y = y.bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"labels must hold both classes for an AUROC; got {n_pos} positives and {n_neg} negatives")
    metrics = require("sklearn.metrics")
    return float(metrics.roc_auc_score(y.numpy(), s.numpy()))


def detection_auroc(adapter: ScarAdapter, texts: Sequence[str], labels: torch.Tensor | Sequence[float] | Sequence[Sequence[float]],
                    tokenizer: PreTrainedTokenizerBase, *, model: nn.Module | None = None,
                    concepts: Sequence[int | str] | None = None, batch_size: int = 16) -> dict[str, float]:
    """Per-sequence detection AUROC of each concept (``σ(z_c)`` averaged over tokens vs the text's label).

    Args:
        adapter: an attached :class:`ScarAdapter`.
        texts: ``N`` strings.
        labels: ``[N]`` (concept 0) or ``[N, C]`` binary labels.
        tokenizer: the base model's tokenizer.
        model: the base model (default: the one the adapter is attached to).
        concepts: which concepts to score (default: all labelled ones).

    Returns:
        ``{concept name: AUROC}``.
    """
    y = torch.as_tensor(labels)
    y = y[:, None] if y.dim() == 1 else y
    det = adapter.detect(list(texts), tokenizer, model=model, batch_size=batch_size)
    names = adapter.config.concepts
    wanted = range(y.shape[1]) if concepts is None else [adapter.config.concept_index(c) for c in concepts]
    return {names[c]: auroc(det.sequence_probs[:, c], y[:, c]) for c in wanted}


def steering_fdt(model: nn.Module, adapter: ScarAdapter, prompts: Sequence[Any], steering: Mapping | float | None, *,
                 max_new_tokens: int = 32, tokenizer: PreTrainedTokenizerBase | None = None, op: str = "scale", output: str | None = None,
                 reconstruct: bool = False, ref: ReferenceData | None = None, batch_size: int = 8) -> dict[str, Any]:
    """FDT (and SDT) of the steered model against the base model's greedy continuations.

    The base reference is generated with the adapter off (:func:`hf_ext.dtm.divergence.reference`); the candidate is
    the same model with the adapter steering (``steering``) or reconstructing (``reconstruct=True``), scored teacher
    forced in one batched forward per ``batch_size`` prompts.

    Args:
        model: the base model with ``adapter`` attached.
        adapter: :class:`ScarAdapter`.
        prompts: strings (with ``tokenizer``) or id lists.
        steering: ``{concept: α}`` as :meth:`ScarAdapter.steer` (``None`` with ``reconstruct=True``).
        max_new_tokens: the reference length ``N`` (the paper uses 50).
        op, output: as :meth:`ScarAdapter.steer`.
        ref: a precomputed reference (reuse it across α).

    Returns:
        ``{"fdt": [B] tensor, "sdt": [B] tensor, "aggregate": dict, "ref": the reference dataset}``.
    """
    from ..dtm.divergence import reference, score

    if ref is None:
        ref = reference(model, list(prompts), max_new_tokens=max_new_tokens, tokenizer=tokenizer, eos_token_id=[],
                        progress=False, batch_size=batch_size)
    if reconstruct:
        ctx = adapter.reconstruct()
    elif steering is None:
        raise ValueError("steering_fdt needs steering={concept: alpha} or reconstruct=True")
    else:
        ctx = adapter.steer(steering, op=op, output=output)
    with ctx:
        res = score(model, ref, batch_size=batch_size)
    return {"fdt": res.fdt, "sdt": res.sdt, "aggregate": res.aggregate(), "ref": ref}


def toxicity_scores(texts: Sequence[str], scorer: Callable[[list[str]], Any] | str | None = None) -> list[float]:
    """Offline offensive-language probabilities of ``texts`` (higher = more offensive).

    Args:
        texts: strings.
        scorer: ``None`` / ``"profanity_check"``: ``alt-profanity-check``'s ``predict_prob`` (a linear SVM over
            character n-grams, offline; install ``hf-ext[scar]``). Or any callable ``list[str] -> sequence of floats``.

    Example:
        >>> s = toxicity_scores(["have a nice day", "you stupid idiot"])
        >>> s[1] > s[0]
        True
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if scorer is None or scorer == "profanity_check":
        from hf_ext.utils.imports import require

        predict_prob = require("profanity_check", alternative="pass scorer=<callable>").predict_prob
        return [float(v) for v in predict_prob(texts)] if texts else []
    if isinstance(scorer, str):
        raise ValueError(f"unknown toxicity scorer {scorer!r}; use None/'profanity_check' or pass a callable")
    if not callable(scorer):
        raise TypeError(f"scorer must be callable list[str] -> floats, got {type(scorer).__name__}")
    values = [float(v) for v in scorer(texts)]
    if len(values) != len(texts):
        raise ValueError(f"the scorer returned {len(values)} scores for {len(texts)} texts")
    return values
