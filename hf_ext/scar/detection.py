"""SCAR concept detection: per-token and per-sequence concept probabilities ``σ(z_c)`` of an attached adapter.

Example:
    >>> from hf_ext.scar import ScarAdapter
    >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
    >>> model = tiny_causal_lm("gpt2")
    >>> scar = ScarAdapter.for_model(model, layer=0, concepts=["toxicity"]).attach(model)
    >>> det = detect_concepts(scar, ["you are awful", "hi"], tiny_tokenizer())
    >>> det.token_probs.shape, det.sequence_probs.shape
    (torch.Size([2, 14, 1]), torch.Size([2, 1]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..core.inputs import prepare_batch, tokenize_left_padded

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hf_ext.scar import ScarAdapter  # via the package: modeling_scar imports this module

__all__ = ["ScarDetection", "detect_concepts"]


@dataclass
class ScarDetection:
    """Concept probabilities ``σ(z_c)`` from :meth:`ScarAdapter.detect`.

    Attributes:
        token_probs: ``[B, T, C]`` float32 per-token probabilities (0 on padding).
        mask: ``[B, T]`` bool, True on real tokens (prompts are left-padded).
        sequence_probs: ``[B, C]`` mean of ``token_probs`` over real tokens.
        input_ids: ``[B, T]`` the token ids.
        concepts: the concept names (``C``).
    """

    token_probs: torch.Tensor
    mask: torch.Tensor
    sequence_probs: torch.Tensor
    input_ids: torch.Tensor
    concepts: list[str]

    def for_concept(self, concept: int | str = 0) -> torch.Tensor:
        """``[B]`` sequence probabilities of one concept (name or index)."""
        index = concept if isinstance(concept, int) else self.concepts.index(concept)
        return self.sequence_probs[:, index]


def detect_concepts(adapter: ScarAdapter, texts: str | Sequence[str] | torch.Tensor,
                    tokenizer: PreTrainedTokenizerBase | None = None, *,
                    model: nn.Module | None = None, attention_mask: torch.Tensor | None = None, batch_size: int = 16,
                    max_length: int | None = None, progress: bool = False) -> ScarDetection:
    """Per-token and per-sequence concept probabilities ``σ(z_c)`` (the conditioned pre-activations).

    Works whether or not ``h_c`` survives TopK (``z_c`` is read before TopK). Runs the base model only up to the
    hooked layer.

    Args:
        adapter: an attached :class:`~hf_ext.scar.modeling_scar.ScarAdapter`.
        texts: a string, a list of strings (needs ``tokenizer``), or ``[B, T]`` input ids (left-padded with
            ``attention_mask``).
        tokenizer: the base model's tokenizer (padding on the left is forced).
        model: the base model (default: the one the adapter is attached to).
        attention_mask: ``[B, T]`` for id input.
        batch_size: rows per forward.
        max_length: truncate texts to this many tokens.
        progress: tqdm bar over batches.

    Returns:
        :class:`ScarDetection` (``token_probs [B, T, C]``, ``mask``, ``sequence_probs [B, C]``).

    Example:
        >>> from hf_ext.scar import ScarAdapter
        >>> model, tok = tiny_causal_lm("llama", seed=0), tiny_tokenizer()
        >>> scar = ScarAdapter.for_model(model, layer=1, concepts=["toxicity"]).attach(model)
        >>> det = detect_concepts(scar, ["you are awful", "have a nice day"], tok, progress=False)
        >>> det.for_concept("toxicity").shape  # one probability per text (a trained adapter: high for the first)
        torch.Size([2])
    """
    from hf_ext.utils.progress import progress_bar

    model = adapter.require_attached(model)
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, torch.Tensor):
        ids = texts if texts.dim() == 2 else texts.view(1, -1)
        mask = attention_mask if attention_mask is not None else torch.ones_like(ids)
    else:
        if tokenizer is None:
            raise ValueError("detect() on strings needs the base model's tokenizer; pass tokenizer=...")
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a string, a non-empty list of strings or a [B, T] id tensor")
        ids, mask = tokenize_left_padded(tokenizer, texts, max_length)
    probs = []
    starts = range(0, ids.shape[0], batch_size)
    for start in progress_bar(starts, desc="scar detect", enabled=progress):
        inputs = prepare_batch(model, ids[start:start + batch_size], mask[start:start + batch_size])
        probs.append(adapter.run_capture(model, inputs).sigmoid().cpu())
    token_probs = torch.cat(probs)
    mask = mask.bool().cpu()
    token_probs = token_probs * mask[..., None]
    seq = token_probs.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
    return ScarDetection(token_probs=token_probs, mask=mask, sequence_probs=seq, input_ids=ids.cpu(),
                         concepts=list(adapter.config.concepts))
