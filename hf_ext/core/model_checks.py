"""Facts about a model that teacher forcing and batched decoding rely on, checked once per model object.

* :func:`check_causal`: the logits at a position must ignore later tokens (teacher forcing reads every position's
  prediction from one forward). Checked with one tiny forward pair on first use.
* :func:`padding_exact`: whether a left-padded row scores (or decodes) like the same row unpadded. Recurrent stacks,
  prefix-LM VLMs or per-batch activation quantization break it; :func:`hf_ext.core.scoring.teacher_forced_logprobs`
  and :func:`hf_ext.core.reference.greedy_reference` check it on their first padded batch, record it with
  :func:`record_padding_exact` and then work one row at a time for such models.

Both answers live in weak dictionaries keyed by the model object: a deleted model leaves nothing behind.

Example:
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("llama")
    >>> check_causal(model)                 # passes silently (and is not re-run for this model)
    >>> padding_exact(model) is None        # not known until a padded batch was scored
    True
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from .inputs import forward_accepts, prepare_batch, vocab_size

__all__ = ["check_causal", "padding_exact", "record_padding_exact"]

# model -> True once its logits were found causal
_CAUSAL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# model -> {kind: whether a left-padded row is treated like the same row unpadded} (absent: not checked yet)
_PADDING_EXACT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_causal(model: nn.Module) -> None:
    """Raise unless the logits at a position ignore later tokens (checked once per model: one tiny forward pair).

    Teacher forcing reads every position's prediction from one forward; a model that attends to later tokens
    (XLNet's two-stream attention, a bidirectional prefix-LM) would see the token it predicts.

    Args:
        model: a transformers causal LM (or VLM) whose forward takes ``input_ids`` and returns ``.logits``.

    Raises:
        ValueError: naming the model type, for a non-causal model.
    """
    if _CAUSAL.get(model):
        return
    vocab = vocab_size(model, "input")
    ids = [min(t, vocab - 1) for t in (1, 2, 3, 4, 5)]
    other = ids[:-1] + [(ids[-1] + 1) % vocab]
    extra = {"use_cache": False} if forward_accepts(model, "use_cache") else {}
    with torch.no_grad():
        a, b = (model(**prepare_batch(model, [row]), **extra).logits[:, :-1].float() for row in (ids, other))
    if not torch.allclose(a, b, atol=1e-5, rtol=1e-4):
        family = getattr(getattr(model, "config", None), "model_type", None)
        raise ValueError(f"{family!r} ({type(model).__name__}) is not a causal LM: its logits at a position change "
                         "with later tokens, so teacher-forced scores would read the token being predicted")
    _CAUSAL[model] = True


def padding_exact(model: nn.Module, kind: str = "score") -> bool | None:
    """Whether ``model`` was found to treat left-padded rows exactly like unpadded ones (``None``: not yet checked).

    ``kind``: ``"score"`` (one teacher-forced forward) or ``"decode"`` (cached greedy decoding). They are recorded
    apart: a family can score a padded row exactly and still decode it differently (Kosmos-2.5 derives decoding
    positions from the cache length, not from the row's padding).
    """
    return _PADDING_EXACT.get(model, {}).get(_kind(kind))


def record_padding_exact(model: nn.Module, exact: bool, kind: str = "score") -> None:
    """Record the outcome of a padded-versus-unpadded comparison on ``model`` (see :func:`padding_exact`)."""
    _PADDING_EXACT[model] = {**_PADDING_EXACT.get(model, {}), _kind(kind): bool(exact)}


def _kind(kind: str) -> str:
    if kind not in ("score", "decode"):
        raise ValueError(f"kind must be 'score' or 'decode', got {kind!r}")
    return kind
