"""Teacher-forced scoring, shared by AtMan (ΔCE), DTM (FDT/SDT) and SCAR evaluation.

**The offset.** For a prompt ``p`` of ``P`` real tokens and a continuation ``y`` of ``T`` tokens, one forward over
``p ⊕ y`` gives every continuation log-prob at once: the logit at sequence index ``P - 1 + t`` predicts ``y[t]``
(0-based ``t``), i.e. ``log p(y_t | p, y_<t)``.

**Padding.** Batches use *left*-padded prompts and *right*-padded continuations, so every row's last prompt token sits
in the same column ``P - 1`` of the padded prompt block. Position ids are always computed from the combined attention
mask (:func:`~hf_ext.core.inputs.position_ids_from_mask`) and passed explicitly: OPT derives positions from the mask,
and GPT-2 (absolute positions) mis-positions left-padded rows without them. Rotary families (Llama, Qwen2, GPT-NeoX)
are shift invariant, so for them it makes no difference. Padded continuation positions hold ``NaN`` log-probs and the
ignore index ``-100`` in the id tensors; :attr:`TeacherForcedScores.mask` says which positions are real.

**Per-token cross-entropy.** :func:`token_cross_entropy` turns logits and target ids into ``-log p`` per token; the
teacher-forced scores and AtMan's perturbed forwards both go through it.

The greedy reference cache (:func:`greedy_reference`, :func:`weights_fingerprint`) lives in
:mod:`hf_ext.core.reference` and is re-exported here.

Example:
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("gpt2")
    >>> ref = greedy_reference(model, [[1, 5, 6], [1, 7]], max_new_tokens=4, eos_token_id=[], progress=False)
    >>> scores = teacher_forced_logprobs(model, ref["prompt_ids"], ref["continuation_ids"])
    >>> scores.logprobs.shape
    torch.Size([2, 4])
    >>> bool((scores.predicted_ids == scores.token_ids).all())  # the model reproduces its own greedy path
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from hf_ext.utils.logging import get_logger
from hf_ext.utils.validation import check_size

from .inputs import (
    check_in_vocabulary,
    forward_accepts,
    model_device,
    pad_token_rows,
    prepare_batch,
    vocab_size,
)
from .model_checks import check_causal, padding_exact, record_padding_exact
from .reference import greedy_reference, weights_fingerprint

logger = get_logger(__name__)

__all__ = [
    "IGNORE_INDEX", "TeacherForcedScores", "cross_entropy_per_token", "greedy_reference", "sequence_logprob",
    "teacher_forced_logprobs", "token_cross_entropy", "weights_fingerprint",
]

#: Value of :attr:`TeacherForcedScores.token_ids` / ``predicted_ids`` at padded positions (HF's ``ignore_index``).
IGNORE_INDEX = -100

# --------------------------------------------------------------------------------------------------------------------
# Teacher forcing
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class TeacherForcedScores:
    """Per-continuation-token scores from one teacher-forced forward (``B`` rows, ``T`` = longest continuation).

    Attributes:
        logprobs: ``[B, T]`` float32, ``log p(y_t | prompt, y_<t)``; ``NaN`` where ``mask`` is False (padding).
        mask: ``[B, T]`` bool, True on real continuation tokens (each row is a prefix of True values).
        token_ids: ``[B, T]`` long, the scored continuation ids; :data:`IGNORE_INDEX` (-100) on padding, so
            ``F.cross_entropy(logits.transpose(1, 2), token_ids)`` ignores it.
        predicted_ids: ``[B, T]`` long, the argmax of the logits that predict each position (DTM's teacher-forced
            prediction ``ŷ_t``); :data:`IGNORE_INDEX` on padding, so ``predicted_ids != token_ids`` counts only real
            divergences.
        logits: ``[B, T, V]`` in the model's dtype, the logits at indices ``prompt_len - 1 + t`` (only with
            ``return_logits=True``, else None); ``NaN`` on padding.

    Example:
        >>> scores = teacher_forced_logprobs(model, [[1, 5, 6]], [[7, 8]])  # doctest: +SKIP
        >>> scores.sequence_logprob()  # [1]: log p(7, 8 | 1 5 6)  # doctest: +SKIP
    """

    logprobs: torch.Tensor
    mask: torch.Tensor
    token_ids: torch.Tensor
    predicted_ids: torch.Tensor
    logits: torch.Tensor | None = None

    @property
    def num_tokens(self) -> torch.Tensor:
        """``[B]`` long: real continuation tokens per row."""
        return self.mask.sum(-1)

    def sequence_logprob(self) -> torch.Tensor:
        """``[B]`` float32: ``log p(continuation | prompt)``, the sum of ``logprobs`` over real tokens (0 for an empty row)."""
        return torch.where(self.mask, self.logprobs, torch.zeros_like(self.logprobs)).sum(-1)

    def cross_entropy(self) -> torch.Tensor:
        """``[B, T]`` float32: per-token cross-entropy ``-logprobs`` (AtMan's ``CE_t``); ``NaN`` on padding."""
        return -self.logprobs

    def vocab_logprobs(self) -> torch.Tensor:
        """``[B, T, V]`` float32: the full-vocabulary log-softmax at each scored position (needs ``return_logits=True``).

        Raises:
            ValueError: if the scores were computed without ``return_logits=True``.
        """
        if self.logits is None:
            raise ValueError("vocab_logprobs() needs the logits: call teacher_forced_logprobs(..., return_logits=True)")
        return self.logits.float().log_softmax(-1)


def teacher_forced_logprobs(
    model: nn.Module,
    prompt_ids: torch.Tensor | Sequence[Sequence[int]],
    continuation_ids: torch.Tensor | Sequence[Sequence[int]],
    *,
    prompt_mask: torch.Tensor | None = None,
    continuation_mask: torch.Tensor | None = None,
    return_logits: bool = False,
    batch_size: int | None = None,
    use_position_ids: bool = True,
    grad: bool = False,
) -> TeacherForcedScores:
    """Score continuations under teacher forcing: one forward over ``prompt ⊕ continuation`` per batch.

    The logit at index ``prompt_len - 1 + t`` predicts continuation token ``t``; the result holds
    ``log p(cont_t | prompt, cont_<t)`` for every real continuation token.

    Args:
        model: any transformers causal LM (called as ``model(input_ids=, attention_mask=, position_ids=)``).
            Put it in ``eval()`` mode yourself if it has dropout.
        prompt_ids: ``[B, P]`` integer tensor of **left**-padded prompts (a 1-D tensor is one row), or a ragged list of
            ``B`` id lists (padded on the left internally). Every prompt needs at least one real token (e.g. BOS).
        continuation_ids: ``[B, T]`` integer tensor of **right**-padded continuations, or a ragged list of ``B`` id
            lists (padded on the right internally). Rows may be empty.
        prompt_mask: ``[B, P]`` 1/0 (or bool) mask for a tensor ``prompt_ids``: zeros then ones per row (left
            padding). Default: all ones. Not allowed with ragged lists.
        continuation_mask: ``[B, T]`` mask for a tensor ``continuation_ids``: ones then zeros per row (right padding).
            Default: all ones. The ids at masked positions are never looked up, so any filler (e.g. -100) is fine.
        return_logits: also return the logits ``[B, T, V]`` at the scored positions (see
            :meth:`TeacherForcedScores.vocab_logprobs` for the full log-softmax).
        batch_size: rows per forward (``None``: all at once). Columns that are padding in every row of a batch are
            dropped before the forward, so sorting rows by length saves work.
        use_position_ids: pass ``position_ids_from_mask`` (recommended; set False only to reproduce a model's
            mask-less positions). Ignored, with a warning, for a model whose ``forward`` takes no ``position_ids``.
        grad: run with autograd on (default: under ``torch.no_grad()``).

    Returns:
        :class:`TeacherForcedScores` with ``logprobs``/``mask``/``token_ids``/``predicted_ids`` ``[B, T]`` on the
        model's device (``logprobs`` float32, padded positions ``NaN``) and optionally ``logits`` ``[B, T, V]``.

    Raises:
        TypeError: non-integer ids or masks of the wrong type.
        ValueError: mismatched batch sizes or shapes, an empty prompt, a mask that is not left-padded (prompts) or
            right-padded (continuations), ids outside ``[0, vocab_size)``, or ``batch_size < 1``.

    Example:
        >>> from hf_ext.testing import tiny_causal_lm
        >>> model = tiny_causal_lm("llama")
        >>> s = teacher_forced_logprobs(model, [[1, 5, 6, 7], [1, 9]], [[10, 11], [12, 13, 14]])
        >>> s.logprobs.shape, s.mask.tolist()
        (torch.Size([2, 3]), [[True, True, False], [True, True, True]])
        >>> bool(s.logprobs[0, 2].isnan())
        True
    """
    check_size("batch_size", batch_size, allow_none=True)
    check_causal(model)
    kwargs = dict(prompt_mask=prompt_mask, continuation_mask=continuation_mask, return_logits=return_logits,
                  use_position_ids=use_position_ids, grad=grad)
    if batch_size != 1 and padding_exact(model) is False:
        return teacher_forced_logprobs(model, prompt_ids, continuation_ids, batch_size=1, **kwargs)
    scores = _teacher_forced(model, prompt_ids, continuation_ids, batch_size=batch_size, **kwargs)
    if batch_size == 1 or padding_exact(model) is not None:
        return scores
    p_mask = pad_token_rows(prompt_ids, prompt_mask, side="left", name="prompt_ids", mask_name="prompt_mask")[1]
    padded = (~p_mask).sum(-1) + (~scores.mask).sum(-1)
    if int(padded.max()) == 0:
        return scores
    # One-off check per model: the most padded row scored alone (no padding at all) must match its batched
    # scores. Models that ignore the padding mask (recurrent stacks, prefix-LM VLMs …) fail it and are scored one
    # row at a time from then on: exact, slower.
    row = int(padded.argmax())
    alone = _teacher_forced(model, _row_slice(prompt_ids, row), _row_slice(continuation_ids, row), batch_size=1,
                            **{**kwargs, "prompt_mask": _row_slice(prompt_mask, row),
                               "continuation_mask": _row_slice(continuation_mask, row)})
    n = int(scores.mask[row].sum())
    exact = bool(torch.allclose(scores.logprobs[row, :n].float().cpu(), alone.logprobs[0, :n].float().cpu(),
                                atol=1e-4, rtol=1e-4))
    record_padding_exact(model, exact)
    if exact:
        return scores
    logger.info("%s gives different scores for a left-padded row than for the same row unpadded; scoring one row "
                "at a time", type(model).__name__)
    return teacher_forced_logprobs(model, prompt_ids, continuation_ids, batch_size=1, **kwargs)


def _row_slice(value: Any, row: int) -> Any:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value[row:row + 1] if value.dim() > 1 else value
    return [value[row]]


def _teacher_forced(model: nn.Module, prompt_ids: Any, continuation_ids: Any, *, prompt_mask, continuation_mask,
                    return_logits: bool, batch_size: int | None, use_position_ids: bool, grad: bool) -> TeacherForcedScores:
    p_ids, p_mask = pad_token_rows(prompt_ids, prompt_mask, side="left", name="prompt_ids", mask_name="prompt_mask")
    c_ids, c_mask = pad_token_rows(continuation_ids, continuation_mask, side="right", name="continuation_ids",
                                   mask_name="continuation_mask")
    if p_ids.shape[0] == 0:
        raise ValueError("prompt_ids has no rows; pass at least one prompt")
    if p_ids.shape[0] != c_ids.shape[0]:
        raise ValueError(f"batch size mismatch: prompt_ids has {p_ids.shape[0]} rows but continuation_ids has "
                         f"{c_ids.shape[0]}; pass one continuation per prompt (repeat a prompt to score several)")
    _check_layout(p_mask, c_mask)
    # prompts are only read; continuation ids are read and scored, so they must exist on both sides (a wrapper that
    # exposes only its input embeddings is checked on that side)
    read = vocab_size(model, "input")
    try:
        scored = min(read, vocab_size(model, "output"))
    except TypeError:
        scored = read
    check_in_vocabulary(p_ids, p_mask, read, "prompt_ids")
    check_in_vocabulary(c_ids, c_mask, scored, "continuation_ids")

    device = model_device(model)
    p_ids, p_mask, c_ids, c_mask = (x.to(device) for x in (p_ids, p_mask, c_ids, c_mask))
    n_rows, prompt_width = p_ids.shape
    width = c_ids.shape[1]
    pass_positions = use_position_ids and forward_accepts(model, "position_ids")
    if use_position_ids and not pass_positions:
        logger.warning_once(f"{type(model).__name__}.forward takes no position_ids; scoring left-padded prompts relies "
                            "on the model deriving positions from the attention mask")
    keep_logits = forward_accepts(model, "logits_to_keep")
    no_cache = forward_accepts(model, "use_cache")

    step = batch_size or n_rows
    parts: dict[str, list[torch.Tensor]] = {"logprobs": [], "predicted": [], "logits": []}
    with torch.enable_grad() if grad else torch.no_grad():
        for start in range(0, n_rows, step):
            rows = slice(start, start + step)
            pm, cm = p_mask[rows], c_mask[rows]
            first = int(pm.any(0).nonzero()[0])  # first prompt column that is real in some row of this batch
            used = int(cm.any(0).nonzero()[-1]) + 1 if bool(cm.any()) else 0  # continuation columns in use
            kwargs: dict[str, Any] = prepare_batch(model, p_ids[rows, first:], pm[:, first:],
                                                   continuations=c_ids[rows, :used], continuation_mask=cm[:, :used],
                                                   pad_token_id=0, position_ids=pass_positions)
            if no_cache:
                kwargs["use_cache"] = False
            if keep_logits:
                kwargs["logits_to_keep"] = used + 1  # indices P-1 .. P-1+used; the last one predicts past the end
            out = model(**kwargs)
            logits = out.logits if hasattr(out, "logits") else out[0]
            # the logit at index (P - 1 + t) of this batch's P = prompt_width - first prompt columns predicts token t
            logits = logits[:, -(used + 1):-1] if keep_logits else logits[:, prompt_width - first - 1:][:, :used]
            valid = cm[:, :used]
            targets = c_ids[rows, :used].masked_fill(~valid, 0)
            lp = -token_cross_entropy(logits, targets)
            pad = width - used
            parts["logprobs"].append(F.pad(lp.masked_fill(~valid, float("nan")), (0, pad), value=float("nan")))
            parts["predicted"].append(F.pad(logits.argmax(-1).masked_fill(~valid, IGNORE_INDEX), (0, pad),
                                            value=IGNORE_INDEX))
            if return_logits:
                parts["logits"].append(F.pad(logits.masked_fill(~valid[..., None], float("nan")), (0, 0, 0, pad),
                                             value=float("nan")))
    logits_out = torch.cat(parts["logits"]) if return_logits else None
    token_ids = c_ids.masked_fill(~c_mask, IGNORE_INDEX)
    return TeacherForcedScores(logprobs=torch.cat(parts["logprobs"]), mask=c_mask, token_ids=token_ids,
                               predicted_ids=torch.cat(parts["predicted"]), logits=logits_out)


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy ``-log softmax(logits)[target]`` in float32.

    The one place where hf_ext turns logits into token losses: teacher-forced log-probs are its negation and
    AtMan's ``CE_t`` is it, so both agree to the bit on the same logits.

    Args:
        logits: ``[..., V]`` in any float dtype (computed in float32).
        targets: ``[...]`` ids in ``[0, V)`` (no ignore index: mask padded positions yourself).

    Returns:
        ``[...]`` float32.

    Example:
        >>> token_cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3]))  # uniform over 4 ids: log 4
        tensor([1.3863, 1.3863])
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} need targets of shape {tuple(logits.shape[:-1])}, got "
                         f"{tuple(targets.shape)}")
    flat = logits.float().reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat, targets.reshape(-1), reduction="none").view(targets.shape)


def sequence_logprob(model: nn.Module, prompt_ids: Any, continuation_ids: Any, **kwargs: Any) -> torch.Tensor:
    """``[B]`` float32: ``log p(continuation | prompt)`` summed over real continuation tokens.

    Same arguments as :func:`teacher_forced_logprobs`.

    Example:
        >>> sequence_logprob(model, [[1, 5]], [[6, 7]])  # doctest: +SKIP
        tensor([-9.71])
    """
    return teacher_forced_logprobs(model, prompt_ids, continuation_ids, **kwargs).sequence_logprob()


def cross_entropy_per_token(model: nn.Module, prompt_ids: Any, continuation_ids: Any, **kwargs: Any) -> torch.Tensor:
    """``[B, T]`` float32: per-token cross-entropy ``-log p(cont_t | prompt, cont_<t)`` (``NaN`` on padding).

    Same arguments as :func:`teacher_forced_logprobs`; AtMan's ``CE_t``.

    Example:
        >>> cross_entropy_per_token(model, [[1, 5]], [[6, 7]]).shape  # doctest: +SKIP
        torch.Size([1, 2])
    """
    return teacher_forced_logprobs(model, prompt_ids, continuation_ids, **kwargs).cross_entropy()


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def _check_layout(p_mask: torch.Tensor, c_mask: torch.Tensor) -> None:
    if p_mask.shape[1] == 0 or not bool(p_mask.any(1).all()):
        row = 0 if p_mask.shape[1] == 0 else int((~p_mask.any(1)).nonzero()[0])
        raise ValueError(f"prompt row {row} is empty: teacher forcing needs at least one prompt token (the logit at "
                         "prompt_len - 1 predicts the first continuation token); prepend a BOS token")
    bad = (p_mask[:, 1:].int() < p_mask[:, :-1].int()).any(1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(f"prompt_mask row {row} is not left-padded: {p_mask[row].int().tolist()}; pad prompts on the "
                         "left (zeros then ones) or pass ragged lists of ids")
    bad = (c_mask[:, 1:].int() > c_mask[:, :-1].int()).any(1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(f"continuation_mask row {row} is not right-padded: {c_mask[row].int().tolist()}; pad "
                         "continuations on the right (ones then zeros) or pass ragged lists of ids")


