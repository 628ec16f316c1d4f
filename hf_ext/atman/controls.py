"""Steering with AtMan controls: suppress or amplify prompt spans inside attention while ``generate()`` runs.

A control gives a character span of the prompt (or a token position) and a factor: ``< 1`` suppresses, ``> 1``
amplifies, ``0`` removes (log-additive mode). The weights are applied in every layer (or ``layers``) through
:func:`hf_ext.core.attention.attention_controls`, with the KV cache **on** (keys appended by generation get weight 1;
the reference code recomputed the whole sequence each step).

Token overlap follows the production API: with ``overlap="partial"`` a control covering a fraction ``r`` of a token's
characters gives that token ``1 + (f − 1)·r`` (``f = 2`` on 2 of 4 characters → 1.5); ``"complete"`` gives ``f`` to any
overlapped token. Several controls multiply.

Example:
    >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
    >>> out = generate_steered(tiny_causal_lm(), tiny_tokenizer(), "the worst movie", [AtManControl(4, 5, 0.0)],
    ...                        max_new_tokens=3, do_sample=False)
    >>> out.shape[0]
    1
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hf_ext.core.attention import AttentionControl, attention_controls
from hf_ext.core.inputs import position_ids_from_mask
from hf_ext.utils.validation import check_choice, check_float, check_int, check_size

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

OVERLAP = ("partial", "complete")


@dataclass(frozen=True)
class AtManControl:
    """Suppress (``factor < 1``) or amplify (``factor > 1``) part of the prompt.

    Attributes:
        start: first character (``unit="char"``) or token position in the unpadded prompt (``unit="token"``).
        length: number of characters / tokens.
        factor: attention weight, finite and ``>= 0``.
        unit: ``"char"`` or ``"token"``.

    Example:
        >>> AtManControl(0, 3, 0.1)
        AtManControl(start=0, length=3, factor=0.1, unit='char')
    """

    start: int
    length: int
    factor: float
    unit: str = "char"

    def __post_init__(self):
        check_int("AtManControl.start", self.start, min=0)
        check_size("AtManControl.length", self.length)
        # 0 removes, < 1 suppresses, > 1 amplifies
        object.__setattr__(self, "factor", check_float("AtManControl.factor", self.factor, min=0))
        check_choice("AtManControl.unit", self.unit, ("char", "token"))


def controls_to_weights(offset_mapping: torch.Tensor | Sequence[Sequence[int]] | Sequence[Sequence[Sequence[int]]],
                        controls: Sequence[AtManControl], *, attention_mask: torch.Tensor | None = None,
                        overlap: str = "partial") -> torch.Tensor:
    """``[B, T]`` key weights of a (left-padded) prompt batch from controls applied to every row.

    Args:
        offset_mapping: ``[T, 2]`` or ``[B, T, 2]`` tokenizer offsets (special / padding tokens have empty offsets).
        controls: the controls.
        attention_mask: ``[B, T]`` (needed for token-unit controls under left padding).
        overlap: ``"partial"`` or ``"complete"`` (see the module docstring).

    Example:
        >>> controls_to_weights(torch.tensor([[0, 0], [0, 4], [4, 8]]), [AtManControl(0, 2, 2.0)]).tolist()
        [[1.0, 1.5, 1.0]]
    """
    if overlap not in OVERLAP:
        raise ValueError(f"overlap={overlap!r} is not one of {OVERLAP}")
    offsets = torch.as_tensor(offset_mapping)
    offsets = offsets.unsqueeze(0) if offsets.dim() == 2 else offsets
    if offsets.dim() != 3 or offsets.shape[-1] != 2:
        raise ValueError(f"offset_mapping must be [T, 2] or [B, T, 2], got shape {tuple(offsets.shape)}")
    B, T, _ = offsets.shape
    mask = torch.ones(B, T, dtype=torch.long) if attention_mask is None else torch.as_tensor(attention_mask).view(B, T)
    weights = torch.ones(B, T)
    ts, te = offsets[..., 0].float(), offsets[..., 1].float()
    width = (te - ts).clamp_min(1)
    for c in controls:
        if c.unit == "token":
            pad = (mask == 0).sum(1)
            for b in range(B):
                lo, hi = int(pad[b]) + c.start, int(pad[b]) + c.start + c.length
                if hi > T:
                    raise ValueError(f"controls: {c!r} reaches past the prompt of row {b}, which has {T - int(pad[b])} "
                                     "tokens; a control must lie inside the prompt")
                weights[b, lo:hi] *= c.factor
            continue
        text_end = te.amax(dim=1)  # characters of each row's prompt
        short = (text_end < c.start + c.length).nonzero()
        if len(short):
            b = int(short[0])
            raise ValueError(f"controls: {c!r} reaches character {c.start + c.length} but prompt row {b} has "
                             f"{int(text_end[b])} characters; a control must lie inside the prompt")
        covered = (torch.minimum(te, torch.tensor(float(c.start + c.length))) - torch.maximum(ts, torch.tensor(float(c.start)))).clamp_min(0)
        covered = torch.where(te > ts, covered, torch.zeros_like(covered))
        r = covered / width
        if overlap == "complete":
            r = (r > 0).float()
        weights *= 1 + (c.factor - 1) * r
    return weights


@contextmanager
def steering(model: nn.Module, weights: torch.Tensor | Sequence[float] | Sequence[Sequence[float]], *,
             mode: str = "log_additive", layers: int | Sequence[int] | None = None) -> Iterator[AttentionControl]:
    """Context manager: generation / forwards inside it see ``weights`` (``[B, K]``) in attention.

    A thin, named wrapper of :func:`hf_ext.core.attention.attention_controls` (``mode="multiplicative"`` or
    ``"log_additive"``); keys beyond ``K`` (generated tokens) keep weight 1, so it works with the KV cache.

    Args:
        model: a transformers causal LM (or VLM) with ``sdpa`` or ``eager`` attention.
        weights: ``[B, K]`` (or ``[K]``) non-negative key weights, e.g. from :func:`controls_to_weights`.
        mode: ``"log_additive"``, ``"multiplicative"`` or ``"multiplicative_reference"``.
        layers: decoder layers to steer (negative allowed); ``None`` = every layer with attention.

    Yields:
        The active :class:`~hf_ext.core.attention.AttentionControl`.
    """
    with attention_controls(model, weights, mode=mode, layers=layers) as control:
        yield control


def generate_steered(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: str | Sequence[str],
                     controls: Sequence[AtManControl], *, mode: str = "log_additive",
                     layers: int | Sequence[int] | None = None, overlap: str = "partial",
                     **generate_kwargs: Any) -> torch.Tensor:
    """``model.generate`` on ``prompt`` (one string or a batch, left-padded) under AtMan controls, KV cache on.

    Args:
        model: a transformers causal LM with ``generate`` (``sdpa`` or ``eager`` attention).
        tokenizer: a fast tokenizer (offsets are needed) that pads on the left.
        prompt: one prompt or a batch of them (non-empty strings).
        controls: the character-span controls, applied to every row.
        mode: how the weights enter attention (as :func:`steering`).
        layers: decoder layers to steer; ``None`` = all with attention.
        overlap: ``"partial"`` or ``"complete"`` (see the module docstring).
        **generate_kwargs: passed to ``model.generate`` (``max_new_tokens``, ``do_sample`` …); ``pad_token_id``
            defaults to the tokenizer's.

    Returns:
        ``[B, P + new]`` generated ids (prompt included), as ``generate`` returns them.
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or any(not isinstance(p, str) or not p for p in prompts):
        raise ValueError(f"prompt must be a non-empty string or list of them, got {prompt!r}")
    enc = tokenizer(prompts, padding=True, return_offsets_mapping=True, return_tensors="pt")
    weights = controls_to_weights(enc["offset_mapping"], controls, attention_mask=enc["attention_mask"], overlap=overlap)
    device = next(model.parameters()).device
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    generate_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    with steering(model, weights, mode=mode, layers=layers), torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, **generate_kwargs)


__all__ = ["AtManControl", "controls_to_weights", "generate_steered", "position_ids_from_mask", "steering"]
