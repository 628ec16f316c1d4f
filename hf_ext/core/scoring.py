"""Teacher-forced scoring and the greedy reference cache, shared by AtMan (ΔCE), DTM (FDT/SDT) and SCAR evaluation.

**The offset.** For a prompt ``p`` of ``P`` real tokens and a continuation ``y`` of ``T`` tokens, one forward over
``p ⊕ y`` gives every continuation log-prob at once: the logit at sequence index ``P - 1 + t`` predicts ``y[t]``
(0-based ``t``), i.e. ``log p(y_t | p, y_<t)``.

**Padding.** Batches use *left*-padded prompts and *right*-padded continuations, so every row's last prompt token sits
in the same column ``P - 1`` of the padded prompt block. Position ids are always computed from the combined attention
mask (:func:`~hf_ext.core.inputs.position_ids_from_mask`) and passed explicitly: OPT derives positions from the mask,
and GPT-2 (absolute positions) mis-positions left-padded rows without them. Rotary families (Llama, Qwen2, GPT-NeoX)
are shift invariant, so for them it makes no difference. Padded continuation positions hold ``NaN`` log-probs and the
ignore index ``-100`` in the id tensors; :attr:`TeacherForcedScores.mask` says which positions are real.

**Greedy references.** :func:`greedy_reference` runs batched, left-padded ``model.generate(do_sample=False)`` with
every logits processor switched off (pure argmax, as DTM's ``y = greedy_N(F, p)``), cuts each continuation after its
first EOS (inclusive) and returns a ``datasets.Dataset`` of token ids, optionally cached on disk under a key that
hashes the model config, a fingerprint of its weights, the prompt ids, ``max_new_tokens`` and the EOS ids.

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

import hashlib
import inspect
import json
import os
import shutil
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from hf_ext.utils.logging import get_logger

from .inputs import position_ids_from_mask

logger = get_logger(__name__)

#: Value of :attr:`TeacherForcedScores.token_ids` / ``predicted_ids`` at padded positions (HF's ``ignore_index``).
IGNORE_INDEX = -100

# Bumped whenever the cached dataset layout or the key recipe changes.
_CACHE_FORMAT = 1

# generate() settings that make it a *pure* greedy decoder whatever the model's generation_config says (no repetition
# penalty, no n-gram blocking, no forced/suppressed tokens, no minimum length: any of those would move the argmax).
_PURE_GREEDY: dict[str, Any] = dict(
    do_sample=False, num_beams=1, num_return_sequences=1, temperature=None, top_k=None, top_p=None,
    repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0,
    bad_words_ids=None, suppress_tokens=None, begin_suppress_tokens=None, forced_bos_token_id=None,
    forced_eos_token_id=None, sequence_bias=None, exponential_decay_length_penalty=None, min_length=0,
    min_new_tokens=None, stop_strings=None, guidance_scale=None, return_dict_in_generate=False, use_cache=True,
)


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
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    check_causal(model)
    kwargs = dict(prompt_mask=prompt_mask, continuation_mask=continuation_mask, return_logits=return_logits,
                  use_position_ids=use_position_ids, grad=grad)
    if batch_size != 1 and padding_exact(model) is False:
        return teacher_forced_logprobs(model, prompt_ids, continuation_ids, batch_size=1, **kwargs)
    scores = _teacher_forced(model, prompt_ids, continuation_ids, batch_size=batch_size, **kwargs)
    if batch_size == 1 or padding_exact(model) is not None:
        return scores
    p_mask = _to_padded(prompt_ids, prompt_mask, side="left", name="prompt_ids", mask_name="prompt_mask")[1]
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
    _PADDING_EXACT[model] = exact
    if exact:
        return scores
    logger.info("%s gives different scores for a left-padded row than for the same row unpadded; scoring one row "
                "at a time", type(model).__name__)
    return teacher_forced_logprobs(model, prompt_ids, continuation_ids, batch_size=1, **kwargs)


# model -> True once its logits were found causal (checked once per model object)
_CAUSAL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_causal(model: nn.Module) -> None:
    """Raise unless the logits at a position ignore later tokens (checked once per model: one tiny forward pair).

    Teacher forcing reads every position's prediction from one forward; a model that attends to later tokens
    (XLNet's two-stream attention, a bidirectional prefix-LM) would see the token it predicts.

    Raises:
        ValueError: naming the model type, for a non-causal model.
    """
    if _CAUSAL.get(model):
        return
    vocab = _vocab_size(model)
    ids = torch.tensor([[1, 2, 3, 4, 5]]).clamp_max(vocab - 1).to(_model_device(model))
    other = ids.clone()
    other[0, -1] = (int(ids[0, -1]) + 1) % vocab
    kwargs: dict[str, Any] = {"attention_mask": torch.ones_like(ids)}
    if _forward_accepts(model, "use_cache"):
        kwargs["use_cache"] = False
    if _forward_accepts(model, "position_ids"):
        kwargs["position_ids"] = torch.arange(ids.shape[1], device=ids.device)[None]
    with torch.no_grad():
        a, b = (model(input_ids=x, **kwargs).logits[:, :-1].float() for x in (ids, other))
    if not torch.allclose(a, b, atol=1e-5, rtol=1e-4):
        family = getattr(getattr(model, "config", None), "model_type", None)
        raise ValueError(f"{family!r} ({type(model).__name__}) is not a causal LM: its logits at a position change "
                         "with later tokens, so teacher-forced scores would read the token being predicted")
    _CAUSAL[model] = True


# model -> whether a left-padded row scores like the same row unpadded (None: not checked yet)
_PADDING_EXACT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def padding_exact(model: nn.Module) -> bool | None:
    """Whether ``model`` was found to score left-padded rows exactly like unpadded ones (``None``: not yet checked)."""
    return _PADDING_EXACT.get(model)


def _row_slice(value: Any, row: int) -> Any:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value[row:row + 1] if value.dim() > 1 else value
    return [value[row]]


def _teacher_forced(model: nn.Module, prompt_ids: Any, continuation_ids: Any, *, prompt_mask, continuation_mask,
                    return_logits: bool, batch_size: int | None, use_position_ids: bool, grad: bool) -> TeacherForcedScores:
    p_ids, p_mask = _to_padded(prompt_ids, prompt_mask, side="left", name="prompt_ids", mask_name="prompt_mask")
    c_ids, c_mask = _to_padded(continuation_ids, continuation_mask, side="right", name="continuation_ids",
                               mask_name="continuation_mask")
    if p_ids.shape[0] == 0:
        raise ValueError("prompt_ids has no rows; pass at least one prompt")
    if p_ids.shape[0] != c_ids.shape[0]:
        raise ValueError(f"batch size mismatch: prompt_ids has {p_ids.shape[0]} rows but continuation_ids has "
                         f"{c_ids.shape[0]}; pass one continuation per prompt (repeat a prompt to score several)")
    _check_layout(p_mask, c_mask)
    vocab = _vocab_size(model)
    _check_vocab(p_ids, p_mask, vocab, "prompt_ids")
    _check_vocab(c_ids, c_mask, vocab, "continuation_ids")

    device = _model_device(model)
    p_ids, p_mask, c_ids, c_mask = (x.to(device) for x in (p_ids, p_mask, c_ids, c_mask))
    n_rows, prompt_width = p_ids.shape
    width = c_ids.shape[1]
    pass_positions = use_position_ids and _forward_accepts(model, "position_ids")
    if use_position_ids and not pass_positions:
        logger.warning_once(f"{type(model).__name__}.forward takes no position_ids; scoring left-padded prompts relies "
                            "on the model deriving positions from the attention mask")
    keep_logits = _forward_accepts(model, "logits_to_keep")
    no_cache = _forward_accepts(model, "use_cache")

    step = batch_size or n_rows
    parts: dict[str, list[torch.Tensor]] = {"logprobs": [], "predicted": [], "logits": []}
    with torch.enable_grad() if grad else torch.no_grad():
        for start in range(0, n_rows, step):
            rows = slice(start, start + step)
            pm, cm = p_mask[rows], c_mask[rows]
            first = int(pm.any(0).nonzero()[0])  # first prompt column that is real in some row of this batch
            used = int(cm.any(0).nonzero()[-1]) + 1 if bool(cm.any()) else 0  # continuation columns in use
            mask = torch.cat([pm[:, first:], cm[:, :used]], dim=1)
            ids = torch.cat([p_ids[rows, first:], c_ids[rows, :used]], dim=1).masked_fill(~mask, 0)
            kwargs: dict[str, Any] = dict(input_ids=ids, attention_mask=mask.long())
            if no_cache:
                kwargs["use_cache"] = False
            if pass_positions:
                kwargs["position_ids"] = position_ids_from_mask(mask)
            if keep_logits:
                kwargs["logits_to_keep"] = used + 1  # indices P-1 .. P-1+used; the last one predicts past the end
            out = model(**kwargs)
            logits = out.logits if hasattr(out, "logits") else out[0]
            # the logit at index (P - 1 + t) of this batch's P = prompt_width - first prompt columns predicts token t
            logits = logits[:, -(used + 1):-1] if keep_logits else logits[:, prompt_width - first - 1:][:, :used]
            valid = cm[:, :used]
            targets = c_ids[rows, :used].masked_fill(~valid, 0)
            lp = logits.float().log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
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
# Greedy reference cache
# --------------------------------------------------------------------------------------------------------------------


def greedy_reference(
    model: nn.Module,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    tokenizer: Any = None,
    batch_size: int = 8,
    eos_token_id: int | Sequence[int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    add_special_tokens: bool = True,
    exact_fingerprint: bool = False,
):
    """The model's greedy continuations of ``prompts`` as a ``datasets.Dataset`` of token ids, optionally cached.

    Prompts are sorted by length, left-padded into batches and decoded with ``model.generate(do_sample=False)``
    with an explicit attention mask and explicit ``position_ids`` (when the model takes them) and every logits
    processor off, so each row equals a plain argmax loop over the unpadded prompt. A continuation stops after its
    first EOS (kept) or after ``max_new_tokens`` tokens.

    Args:
        model: any transformers causal LM with ``generate`` (``eval()`` mode).
        prompts: ``N`` strings (needs ``tokenizer``) or ``N`` id lists (unpadded; each at least one token). A single
            string or a flat list of ints is one prompt.
        max_new_tokens: the most tokens generated per prompt (DTM's ``N``).
        tokenizer: tokenizes string prompts (``tokenizer(texts, add_special_tokens=...)``); its pad id pads batches.
        batch_size: prompts per ``generate`` call.
        eos_token_id: stop ids. ``None`` uses ``model.generation_config.eos_token_id`` (the model's default); ``[]``
            never stops early (always ``max_new_tokens`` tokens).
        cache_dir: if given, the dataset is saved (``save_to_disk``) under
            ``cache_dir/greedy_reference-<key>`` and later calls with the same key load it (``load_from_disk``) instead
            of generating. The key hashes the model class and config, a fingerprint of the weights
            (:func:`weights_fingerprint`), the device type, the prompt ids, ``max_new_tokens`` and the EOS ids; not
            ``batch_size`` or ``progress``.
        progress: show a tqdm bar over batches.
        add_special_tokens: forwarded to the tokenizer for string prompts.
        exact_fingerprint: key on a blake2b hash of every weight byte instead of the cheaper on-device checksum.

    Returns:
        ``datasets.Dataset`` with one row per prompt, in input order, and columns
        ``prompt_index`` (int), ``prompt_ids`` (list[int], unpadded), ``continuation_ids`` (list[int], length
        ``1..max_new_tokens``), ``num_new_tokens`` (int), ``stopped_at_eos`` (bool), and ``prompt`` (str) when the
        prompts were strings. ``dataset.info.description`` holds the generation settings as JSON.

    Raises:
        TypeError: mixed or unsupported prompt types, or a model without ``generate``.
        ValueError: no prompts, an empty prompt, string prompts without a tokenizer, ids outside the vocabulary,
            ``max_new_tokens``/``batch_size`` < 1.

    Example:
        >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
        >>> model, tok = tiny_causal_lm("llama"), tiny_tokenizer()
        >>> ref = greedy_reference(model, ["Hello", "Hi there"], max_new_tokens=5, tokenizer=tok, progress=False)
        >>> ref.column_names
        ['prompt_index', 'prompt', 'prompt_ids', 'continuation_ids', 'num_new_tokens', 'stopped_at_eos']
        >>> scores = teacher_forced_logprobs(model, ref["prompt_ids"], ref["continuation_ids"])  # DTM's input
    """
    from datasets import Dataset, DatasetInfo, Features, List, Value, load_from_disk

    from hf_ext.utils.progress import progress_bar

    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not callable(getattr(model, "generate", None)):
        raise TypeError(f"{type(model).__name__} has no generate(); pass a transformers causal LM "
                        "(e.g. AutoModelForCausalLM)")
    texts, prompt_ids = _prompt_ids(prompts, tokenizer, add_special_tokens)
    vocab = _vocab_size(model)
    for i, row in enumerate(prompt_ids):
        bad = [t for t in row if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt {i} has token id {bad[0]} outside the vocabulary [0, {vocab}); "
                             "tokenize with the model's own tokenizer")
    eos = _resolve_eos(model, eos_token_id)
    pad = _resolve_pad(model, tokenizer, eos)
    limit = _max_positions(model)
    longest = max(len(r) for r in prompt_ids)
    if limit is not None and longest + max_new_tokens > limit:
        logger.warning(f"the longest prompt ({longest} tokens) + max_new_tokens={max_new_tokens} exceeds the model's "
                       f"{limit} positions; generation may fail or degrade")

    description = {"max_new_tokens": max_new_tokens, "eos_token_id": eos, "model_class": type(model).__name__}
    path = None
    if cache_dir is not None:
        key_fields = _cache_key_fields(model, prompt_ids, max_new_tokens, eos, exact_fingerprint)
        key = hashlib.sha256(json.dumps(key_fields, sort_keys=True, default=str).encode()).hexdigest()[:32]
        description["cache_key"] = key
        path = Path(cache_dir) / f"greedy_reference-{key}"
        if path.exists():
            logger.info(f"greedy reference: loading cached dataset from {path}")
            return load_from_disk(str(path))

    device = _model_device(model)
    pass_positions = _forward_accepts(model, "position_ids")
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    continuations: list[list[int] | None] = [None] * len(prompt_ids)
    stopped: list[bool] = [False] * len(prompt_ids)

    def generate(rows: list[list[int]]) -> list[list[int]]:
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long, device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
        kwargs = dict(_PURE_GREEDY, max_new_tokens=max_new_tokens, eos_token_id=list(eos) or None, pad_token_id=pad)
        if pass_positions:
            kwargs["position_ids"] = position_ids_from_mask(mask)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        return sequences[:, width:].tolist()

    if padding_exact(model) is False:
        batch_size = 1
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in progress_bar(batches, desc="greedy reference", unit="batch", enabled=progress):
        rows = [prompt_ids[i] for i in batch]
        new_rows = generate(rows)
        if padding_exact(model) is None and len({len(r) for r in rows}) > 1:
            # one-off check per model (as in teacher_forced_logprobs): each prompt of the first padded batch decoded
            # alone must give the same continuation (left padding or batch-dependent numerics, e.g. per-batch
            # activation quantization, would change it), else every prompt is decoded on its own
            exact = all(generate([r])[0] == new for r, new in zip(rows, new_rows))
            _PADDING_EXACT[model] = exact
            if not exact:
                logger.info("%s decodes a left-padded prompt differently from the same prompt alone; decoding one "
                            "prompt at a time", type(model).__name__)
                return greedy_reference(model, prompts, max_new_tokens=max_new_tokens, tokenizer=tokenizer,
                                        eos_token_id=eos_token_id, cache_dir=cache_dir, batch_size=1,
                                        progress=progress, add_special_tokens=add_special_tokens,
                                        exact_fingerprint=exact_fingerprint)
        for i, new in zip(batch, new_rows):
            cut = next((k for k, t in enumerate(new) if t in eos), None)
            continuations[i] = new[: cut + 1] if cut is not None else new
            stopped[i] = cut is not None

    data: dict[str, list] = {"prompt_index": list(range(len(prompt_ids)))}
    features: dict[str, Any] = {"prompt_index": Value("int64")}
    if texts is not None:
        data["prompt"], features["prompt"] = texts, Value("string")
    data.update(prompt_ids=prompt_ids, continuation_ids=continuations,
                num_new_tokens=[len(c) for c in continuations], stopped_at_eos=stopped)
    features.update(prompt_ids=List(Value("int32")), continuation_ids=List(Value("int32")),
                    num_new_tokens=Value("int32"), stopped_at_eos=Value("bool"))
    features = Features(features)
    info = DatasetInfo(description=json.dumps(description, sort_keys=True), features=features)
    ds = Dataset.from_dict(data, features=features, info=info)
    if path is None:
        return ds
    return _save_atomically(ds, path, key_fields, load_from_disk)


def weights_fingerprint(model: nn.Module, *, exact: bool = False) -> str:
    """A hex digest of every tensor in ``model.state_dict()`` (names, dtypes, shapes and values).

    The default is a cheap on-device checksum: each tensor's bit pattern is read as 16-bit integers and reduced to
    an exact integer sum and an index-weighted sum. Integer sums do not depend on reduction order or thread count,
    and any single changed element (any bit) changes the digest; swapped elements do as well unless their indices
    differ by a multiple of 999 983. ``exact=True`` hashes every byte with blake2b instead (copies to CPU).

    Args:
        model: any ``nn.Module``.
        exact: cryptographic byte hash instead of the checksum.

    Returns:
        A 64-character hex string.

    Example:
        >>> import copy
        >>> from hf_ext.testing import tiny_causal_lm
        >>> m = tiny_causal_lm("llama")
        >>> weights_fingerprint(m) == weights_fingerprint(copy.deepcopy(m))
        True
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.is_meta or tensor.numel() == 0:
            continue
        words = _as_words(tensor)
        if exact:
            digest.update(hashlib.blake2b(words.cpu().numpy().tobytes()).digest())
            continue
        total = weighted = 0
        chunk = 1 << 22
        for offset in range(0, words.numel(), chunk):
            part = words[offset:offset + chunk].long()
            index = torch.arange(offset, offset + part.numel(), device=part.device) % 999_983 + 1
            total += int(part.sum())
            weighted += int((part * index).sum())
        digest.update(f"{total % (1 << 64)}:{weighted % (1 << 64)};".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def _to_padded(ids: Any, mask: Any, *, side: str, name: str, mask_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [B, L] long, mask [B, L] bool)`` from a tensor (+ optional mask) or a ragged list (padded on ``side``)."""
    if hasattr(ids, "__array__") and not isinstance(ids, torch.Tensor) and getattr(ids, "ndim", 0) in (1, 2) \
            and getattr(getattr(ids, "dtype", None), "kind", "O") in "iu":
        ids = torch.as_tensor(ids)
    if isinstance(ids, torch.Tensor):
        if ids.dtype in (torch.bool,) or ids.is_floating_point() or ids.is_complex():
            raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}; use .long()")
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
            mask = mask.unsqueeze(0) if isinstance(mask, torch.Tensor) and mask.dim() == 1 else mask
        if ids.dim() != 2:
            raise ValueError(f"{name} must be [batch, seq] (or 1-D for one row), got shape {tuple(ids.shape)}")
        if mask is None:
            return ids.long(), torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"{mask_name} must be a tensor like {name}, got {type(mask).__name__}")
        if mask.shape != ids.shape:
            raise ValueError(f"{mask_name} has shape {tuple(mask.shape)} but {name} has {tuple(ids.shape)}; "
                             "they must match")
        if mask.is_floating_point() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{mask_name} must hold only 0/1 (or bool) values, got dtype {mask.dtype} with values "
                             f"{torch.unique(mask).tolist()[:8]}")
        return ids.long(), mask.to(device=ids.device, dtype=torch.bool)
    if mask is not None:
        raise ValueError(f"{mask_name} is only accepted with a tensor {name}; ragged lists are padded internally")
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) and not hasattr(ids, "__iter__"):
        raise TypeError(f"{name} must be a [batch, seq] integer tensor or a list of id lists, got {type(ids).__name__}")
    rows = list(ids)
    if rows and all(_is_int(t) for t in rows):  # a flat list of ints is one row
        rows = [rows]
    lists = [_row_to_list(r, name, i) for i, r in enumerate(rows)]
    width = max((len(r) for r in lists), default=0)
    padded = torch.zeros((len(lists), width), dtype=torch.long)
    out_mask = torch.zeros((len(lists), width), dtype=torch.bool)
    for i, r in enumerate(lists):
        if not r:
            continue
        cols = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        padded[i, cols] = torch.tensor(r, dtype=torch.long)
        out_mask[i, cols] = True
    return padded, out_mask


def _is_int(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return True
    if isinstance(x, torch.Tensor):
        return x.dim() == 0 and not x.is_floating_point() and x.dtype != torch.bool
    return getattr(getattr(x, "dtype", None), "kind", "") in ("i", "u") and getattr(x, "ndim", 1) == 0


def _row_to_list(row: Any, name: str, index: int) -> list[int]:
    if isinstance(row, torch.Tensor):
        if row.dim() != 1 or row.is_floating_point() or row.dtype == torch.bool:
            raise TypeError(f"{name}[{index}] must be a 1-D integer tensor, got shape {tuple(row.shape)} "
                            f"dtype {row.dtype}")
        return row.tolist()
    if isinstance(row, (str, bytes)) or not hasattr(row, "__iter__"):
        raise TypeError(f"{name}[{index}] must be a list of token ids, got {type(row).__name__} {row!r:.60}")
    values = list(row)
    for t in values:
        if not _is_int(t):
            raise TypeError(f"{name}[{index}] must hold integer token ids, got {t!r} ({type(t).__name__})")
    return [int(t) for t in values]


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


def _check_vocab(ids: torch.Tensor, mask: torch.Tensor, vocab: int, name: str) -> None:
    bad = mask & ((ids < 0) | (ids >= vocab))
    if bool(bad.any()):
        row, col = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"{name}[{row}, {col}] = {int(ids[row, col])} is outside the model's vocabulary "
                         f"[0, {vocab}); use the model's own tokenizer (mark padding with the mask instead of an id)")


def _vocab_size(model: nn.Module) -> int:
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if emb is not None and hasattr(emb, "num_embeddings"):
        return int(emb.num_embeddings)
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "vocab_size", None) is None:
        raise TypeError(f"cannot find the vocabulary size of {type(model).__name__}: it has neither input "
                        "embeddings nor config.vocab_size")
    return int(text.vocab_size)


def _max_positions(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(text, attr, None)
        if isinstance(value, int):
            return value
    return None


def _model_device(model: nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _forward_accepts(model: nn.Module, name: str) -> bool:
    """Whether ``model.forward`` (or a peft wrapper's base model) takes the keyword ``name`` explicitly."""
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    try:
        return name in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def _prompt_ids(prompts: Any, tokenizer: Any, add_special_tokens: bool) -> tuple[list[str] | None, list[list[int]]]:
    if isinstance(prompts, str):
        prompts = [prompts]
    elif isinstance(prompts, torch.Tensor):
        raise TypeError("prompts must be unpadded id lists or strings, not a padded tensor; pass "
                        "[row[mask.bool()].tolist() for row, mask in zip(ids, attention_mask)]")
    if not hasattr(prompts, "__iter__"):
        raise TypeError(f"prompts must be a list of strings or of id lists, got {type(prompts).__name__}")
    items = list(prompts)
    if not items:
        raise ValueError("prompts is empty; pass at least one prompt")
    if all(_is_int(t) for t in items):
        items = [items]
    if all(isinstance(p, str) for p in items):
        if tokenizer is None:
            raise ValueError("string prompts need a tokenizer: greedy_reference(..., tokenizer=tokenizer), or pass "
                             "lists of token ids")
        ids = [list(map(int, r)) for r in tokenizer(items, add_special_tokens=add_special_tokens)["input_ids"]]
        texts = items
    elif any(isinstance(p, str) for p in items):
        raise TypeError("prompts mixes strings and id lists; pass all strings or all id lists")
    else:
        ids, texts = [_row_to_list(p, "prompts", i) for i, p in enumerate(items)], None
    for i, row in enumerate(ids):
        if not row:
            raise ValueError(f"prompt {i} is empty; every prompt needs at least one token (e.g. BOS)")
    return texts, ids


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    if _is_int(value):
        return [int(value)]
    return [int(v) for v in value]


def _resolve_eos(model: nn.Module, eos_token_id: Any) -> list[int]:
    if eos_token_id is not None:
        if not (_is_int(eos_token_id) or (hasattr(eos_token_id, "__iter__") and all(_is_int(t) for t in eos_token_id))):
            raise TypeError(f"eos_token_id must be an int, a list of ints, [] (never stop) or None (the model's "
                            f"default), got {eos_token_id!r}")
        return _as_list(eos_token_id)
    gen = getattr(model, "generation_config", None)
    if gen is not None and getattr(gen, "eos_token_id", None) is not None:
        return _as_list(gen.eos_token_id)
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return _as_list(getattr(text, "eos_token_id", None))


def _resolve_pad(model: nn.Module, tokenizer: Any, eos: list[int]) -> int:
    candidates = [getattr(tokenizer, "pad_token_id", None), getattr(getattr(model, "generation_config", None),
                                                                    "pad_token_id", None)]
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    candidates.append(getattr(text, "pad_token_id", None))
    for value in candidates:
        ids = _as_list(value) if value is not None else []
        if ids:
            return ids[0]
    return eos[0] if eos else 0  # the pad id only fills masked positions, so any valid id works


def _cache_key_fields(model: nn.Module, prompt_ids: list[list[int]], max_new_tokens: int, eos: list[int],
                      exact: bool) -> dict[str, Any]:
    config = getattr(model, "config", None)
    config_dict = config.to_dict() if hasattr(config, "to_dict") else {}
    for volatile in ("transformers_version", "_name_or_path", "name_or_path", "_commit_hash"):
        config_dict.pop(volatile, None)
    prompts_hash = hashlib.sha256(json.dumps(prompt_ids).encode()).hexdigest()
    return {"format": _CACHE_FORMAT, "model_class": type(model).__name__, "config": config_dict,
            "weights": weights_fingerprint(model, exact=exact), "fingerprint": "exact" if exact else "checksum",
            "device": _model_device(model).type, "prompts": prompts_hash, "num_prompts": len(prompt_ids),
            "max_new_tokens": max_new_tokens, "eos_token_id": eos}


def _save_atomically(ds: Any, path: Path, key_fields: dict[str, Any], load_from_disk: Any) -> Any:
    """Save to a temporary sibling then rename, so a reader never sees a half-written cache entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        ds.save_to_disk(str(tmp))
        (tmp / "hf_ext_cache_key.json").write_text(json.dumps(key_fields, sort_keys=True, default=str, indent=1))
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.exists():
                raise
            logger.info(f"greedy reference: {path} was written concurrently; using that copy")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info(f"greedy reference: saved to {path}")
    return load_from_disk(str(path))


def _as_words(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as a flat int16 (or uint8 for odd byte counts) tensor on its device."""
    flat = tensor.contiguous().reshape(-1)
    raw = flat if flat.dtype == torch.uint8 else flat.view(torch.uint8)
    if raw.storage_offset() % 2:
        raw = raw.clone()  # int16 views need an even byte offset
    return raw.view(torch.int16) if raw.numel() % 2 == 0 else raw
