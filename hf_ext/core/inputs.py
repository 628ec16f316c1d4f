"""Model inputs shared by every component: batching of left-padded rows, position ids, and model facts.

**Batching.** Decoder-only models are fed *left*-padded batches (every row's last token in the last column, where
``generate()`` appends) with explicit ``position_ids`` counted over real tokens only: OPT derives positions from
the mask, and GPT-2 (absolute positions) mis-positions left-padded rows without them, while rotary families
(Llama, Qwen2, GPT-NeoX) are shift invariant. :func:`prepare_batch` builds such a batch, optionally followed by
*right*-padded continuations (the teacher-forcing layout, where the last prompt token of every row sits in one
column), and :func:`tokenize_left_padded` does the same from text.

**Model facts.** :func:`model_device`, :func:`vocab_size` (input or output embeddings: see there which one a caller
needs), :func:`max_positions` and :func:`forward_accepts` read what every caller needs to know about a model, also
through a peft wrapper.

Example:
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("gpt2")
    >>> batch = prepare_batch(model, [[1, 5, 6], [1, 7]])
    >>> batch["input_ids"].tolist(), batch["position_ids"].tolist()
    ([[1, 5, 6], [0, 1, 7]], [[0, 1, 2], [0, 0, 1]])
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "check_in_vocabulary", "forward_accepts", "is_token_id", "max_positions", "model_device", "pad_token_rows",
    "position_ids_from_mask", "prepare_batch", "takes_mask_positions", "text_config", "token_id_list",
    "tokenize_left_padded", "vocab_size",
]

# model -> whether its forward takes position_ids counted from 0 (see takes_mask_positions)
_MASK_POSITIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.LongTensor:
    """Position ids that count only real tokens, so left-padded rows get the positions of their unpadded twin.

    Args:
        attention_mask: ``[B, T]`` with 1 for real tokens and 0 for padding.

    Returns:
        ``[B, T]`` long tensor: ``cumsum(mask) - 1``, clamped at 0 on padding (whose value is never attended).

    Example:
        >>> position_ids_from_mask(torch.tensor([[0, 0, 1, 1, 1]])).tolist()
        [[0, 0, 0, 1, 2]]
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be 2D [batch, seq], got shape {tuple(attention_mask.shape)}")
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).clamp_min(0).masked_fill(mask == 0, 0)


def takes_mask_positions(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes ``position_ids`` counted from 0, as :func:`position_ids_from_mask` gives them.

    Checked once per model: on one unpadded row, passing ``0..T-1`` must give the model's own default logits.
    RoBERTa-style sinusoidal families (Kosmos-2.5) count positions from ``padding_idx + 1`` and derive them from
    the pad tokens themselves: 0-based positions would shift every position embedding. A model whose text-only
    forward cannot run here keeps explicit positions. A forward that takes ``position_ids`` only through
    ``**kwargs`` (Evolla hands them to its inner model) counts when positions with a gap change its logits too,
    so that they are read there, not swallowed.

    Example:
        >>> from hf_ext.testing import tiny_causal_lm
        >>> takes_mask_positions(tiny_causal_lm("llama"))
        True
    """
    known = _MASK_POSITIONS.get(model)
    if known is not None:
        return known
    explicit = forward_accepts(model, "position_ids")
    result = explicit or _takes_kwargs(model)
    if result:
        ids = torch.tensor([[min(t, vocab_size(model, "input") - 1) for t in (1, 2, 3, 4, 5)]], device=model_device(model))
        extra = {"use_cache": False} if forward_accepts(model, "use_cache") else {}
        count = torch.arange(ids.shape[1], device=ids.device)[None]
        trials = (None, count) if explicit else (None, count, count + (count == ids.shape[1] - 1) * 3)
        outs = []
        try:
            with torch.no_grad():
                for pos in trials:
                    with torch.random.fork_rng(devices=[]):  # the same dropout masks in both (training mode)
                        torch.manual_seed(0)
                        kw = {} if pos is None else {"position_ids": pos}
                        outs.append(getattr(model(input_ids=ids, **kw, **extra), "logits", None))
        except Exception:  # noqa: BLE001 - a model that needs other inputs: keep explicit positions
            outs = []
        if len(outs) == len(trials) and all(isinstance(o, torch.Tensor) for o in outs):
            same = [bool(torch.allclose(outs[0].float(), o.float(), atol=1e-5, rtol=1e-4)) for o in outs[1:]]
            result = same[0] and (explicit or not same[1])
        elif not explicit:
            result = False
    _MASK_POSITIONS[model] = result
    return result


# --------------------------------------------------------------------------------------------------------------------
# Model facts
# --------------------------------------------------------------------------------------------------------------------


def model_device(model: nn.Module) -> torch.device:
    """The device inputs of ``model`` go to: ``model.device`` where it exists, else its first parameter's.

    A model without parameters counts as a CPU model.

    Example:
        >>> model_device(nn.Linear(2, 2))
        device(type='cpu')
    """
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def text_config(model: nn.Module) -> Any:
    """The config of ``model``'s language model: ``config.get_text_config()`` for composite (VLM) configs, else
    ``model.config`` (``None`` for a module without config)."""
    config = getattr(model, "config", None)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def vocab_size(model: nn.Module, embeddings: str = "input") -> int:
    """The number of token ids ``model`` reads (``"input"``) or predicts (``"output"``).

    The two differ when embeddings were resized on one side only, or for models whose head covers a padded
    vocabulary. Validate ids fed *into* a model against ``"input"`` (the rows of its input embedding); compare what
    models *predict* against ``"output"`` (the rows of its LM head: DTM compares argmax ids of two models, so their
    heads must agree). Teacher-forced continuation ids are both fed and scored, so they need both.

    Args:
        model: a transformers model (or anything with ``get_input_embeddings`` / ``get_output_embeddings`` or a
            ``config.vocab_size``).
        embeddings: ``"input"`` or ``"output"``. Without the matching embedding module, ``config.vocab_size`` (of
            the text config for composite models) is used.

    Raises:
        ValueError: ``embeddings`` is neither ``"input"`` nor ``"output"``.
        TypeError: the model has neither the embedding nor a ``config.vocab_size``.

    Example:
        >>> from hf_ext.testing import tiny_causal_lm
        >>> vocab_size(tiny_causal_lm("llama")), vocab_size(tiny_causal_lm("llama"), "output")
        (128, 128)
    """
    if embeddings == "input":
        get = getattr(model, "get_input_embeddings", None)
        emb = get() if callable(get) else None
        rows = getattr(emb, "num_embeddings", None)
    elif embeddings == "output":
        get = getattr(model, "get_output_embeddings", None)
        emb = get() if callable(get) else None
        weight = getattr(emb, "weight", None)
        rows = weight.shape[0] if weight is not None else None
    else:
        raise ValueError(f"embeddings must be 'input' or 'output', got {embeddings!r}")
    if rows is not None:
        return int(rows)
    text = text_config(model)
    if getattr(text, "vocab_size", None) is None:
        raise TypeError(f"cannot find the vocabulary size of {type(model).__name__}: it has neither {embeddings} "
                        "embeddings nor config.vocab_size")
    return int(text.vocab_size)


def max_positions(model: nn.Module) -> int | None:
    """The model's context length (``max_position_embeddings`` / ``n_positions`` of its text config), or ``None``
    where the config sets none or a non-positive value (XLNet's ``-1``: relative positions, no limit).

    Example:
        >>> from hf_ext.testing import tiny_causal_lm
        >>> max_positions(tiny_causal_lm("gpt2"))
        128
    """
    text = text_config(model)
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(text, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value if value > 0 else None
    return None


def _takes_kwargs(model: nn.Module) -> bool:
    """Whether ``model.forward`` (or a peft wrapper's base model's) has a ``**kwargs`` parameter."""
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    try:
        params = inspect.signature(base.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def forward_accepts(model: nn.Module, name: str) -> bool:
    """Whether ``model.forward`` (or a peft wrapper's base model's) takes the keyword ``name`` explicitly.

    Example:
        >>> from hf_ext.testing import tiny_causal_lm
        >>> forward_accepts(tiny_causal_lm("llama"), "position_ids"), forward_accepts(nn.Linear(2, 2), "position_ids")
        (True, False)
    """
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    try:
        return name in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------------------------------
# Token ids
# --------------------------------------------------------------------------------------------------------------------


def is_token_id(x: Any) -> bool:
    """Whether ``x`` is one integer token id (a Python/NumPy int or a 0-d integer tensor; never a bool)."""
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return True
    if isinstance(x, torch.Tensor):
        return x.dim() == 0 and not x.is_floating_point() and x.dtype != torch.bool
    return getattr(getattr(x, "dtype", None), "kind", "") in ("i", "u") and getattr(x, "ndim", 1) == 0


def token_id_list(row: Any, name: str, index: int) -> list[int]:
    """One row of token ids (a list or a 1-D integer tensor) as a list of ints.

    Args:
        row: the row.
        name, index: how error messages name it (``name[index]``).

    Raises:
        TypeError: a string, a non-integer value, or a tensor that is not 1-D integer.
    """
    if isinstance(row, torch.Tensor):
        if row.dim() != 1 or row.is_floating_point() or row.dtype == torch.bool:
            raise TypeError(f"{name}[{index}] must be a 1-D integer tensor, got shape {tuple(row.shape)} "
                            f"dtype {row.dtype}")
        return row.tolist()
    if isinstance(row, (str, bytes)) or not hasattr(row, "__iter__"):
        raise TypeError(f"{name}[{index}] must be a list of token ids, got {type(row).__name__} {row!r:.60}")
    values = list(row)
    for t in values:
        if not is_token_id(t):
            raise TypeError(f"{name}[{index}] must hold integer token ids, got {t!r} ({type(t).__name__})")
    return [int(t) for t in values]


def check_in_vocabulary(ids: torch.Tensor, mask: torch.Tensor | None, vocab: int, name: str) -> None:
    """Raise ``ValueError`` naming the first id of ``ids`` (at a ``mask`` position) outside ``[0, vocab)``.

    Run before the embedding, so that an id beyond the vocabulary is reported as such instead of an
    ``IndexError: index out of range in self`` (or a CUDA device assert).

    Args:
        ids: ``[B, T]`` integer tensor.
        mask: ``[B, T]`` bool / 0-1 mask of the positions to check (``None``: all).
        vocab: the number of ids the model reads (:func:`vocab_size`).
        name: how the message names ``ids``.

    Example:
        >>> check_in_vocabulary(torch.tensor([[1, 300]]), None, 128, "input_ids")
        Traceback (most recent call last):
        ...
        ValueError: input_ids[0, 1] = 300 is outside the model's vocabulary [0, 128); use the model's own tokenizer (mark padding with the mask instead of an id)
    """
    bad = (ids < 0) | (ids >= vocab)
    if mask is not None:
        bad &= mask.bool()
    if bool(bad.any()):
        index = tuple(int(v) for v in bad.nonzero()[0])
        raise ValueError(f"{name}[{', '.join(map(str, index))}] = {int(ids[index])} is outside the model's vocabulary "
                         f"[0, {vocab}); use the model's own tokenizer (mark padding with the mask instead of an id)")


def pad_token_rows(ids: Any, mask: Any = None, *, side: str = "left", name: str = "input_ids",
                   mask_name: str = "attention_mask", pad_token_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [B, L] long, mask [B, L] bool)`` from a padded tensor (+ optional mask) or ragged id lists.

    Args:
        ids: a ``[B, L]`` integer tensor (a 1-D tensor or NumPy array is one row), or ``B`` id lists (a flat list of
            ints is one row), padded here on ``side`` with ``pad_token_id``.
        mask: ``[B, L]`` 0/1 (or bool) mask of a tensor ``ids`` (default all ones); not allowed with lists.
        side: ``"left"`` or ``"right"``, where lists are padded.
        name, mask_name: how error messages name the arguments.
        pad_token_id: filler of padded list positions.

    Raises:
        TypeError: non-integer ids, a mask that is not a tensor, strings.
        ValueError: shape mismatches, a mask with values other than 0/1, a mask given with lists.

    Example:
        >>> ids, mask = pad_token_rows([[5, 6], [7]])
        >>> ids.tolist(), mask.tolist()
        ([[5, 6], [0, 7]], [[True, True], [False, True]])
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
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
    if rows and all(is_token_id(t) for t in rows):  # a flat list of ints is one row
        rows = [rows]
    lists = [token_id_list(r, name, i) for i, r in enumerate(rows)]
    width = max((len(r) for r in lists), default=0)
    padded = torch.full((len(lists), width), pad_token_id, dtype=torch.long)
    out_mask = torch.zeros((len(lists), width), dtype=torch.bool)
    for i, r in enumerate(lists):
        if not r:
            continue
        cols = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        padded[i, cols] = torch.tensor(r, dtype=torch.long)
        out_mask[i, cols] = True
    return padded, out_mask


# --------------------------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------------------------


def prepare_batch(model: nn.Module, input_ids: Any, attention_mask: torch.Tensor | None = None, *,
                  continuations: Any = None, continuation_mask: torch.Tensor | None = None,
                  pad_token_id: int | None = None, position_ids: bool | None = None) -> dict[str, torch.Tensor]:
    """Model inputs for a batch of left-padded rows, optionally followed by right-padded continuations.

    Args:
        model: the model the batch is for: the tensors go to :func:`model_device`, and ``position_ids`` are added
            when its forward takes them.
        input_ids: ``B`` ragged id lists (left-padded here), or a ``[B, P]`` integer tensor that is left-padded
            already (then give ``attention_mask``, default all ones).
        attention_mask: ``[B, P]`` 0/1 mask of a tensor ``input_ids``.
        continuations: ``B`` ragged id lists or a ``[B, T]`` tensor (with ``continuation_mask``, default all ones)
            appended after the prompt block and padded on the **right**, so every row's last prompt token sits in
            column ``P - 1`` (the teacher-forcing layout of :mod:`hf_ext.core.scoring`).
        continuation_mask: ``[B, T]`` mask of a tensor ``continuations``.
        pad_token_id: the id written at every padded position (the model never attends to it); ``None``: lists are
            padded with 0 and the ids of tensors are left as they are.
        position_ids: add :func:`position_ids_from_mask` positions: ``None`` when ``model.forward`` takes them
            counted from 0 (:func:`takes_mask_positions`),
            ``True`` always (a caller that slices them itself), ``False`` never.

    Returns:
        ``{"input_ids": [B, P+T] long, "attention_mask": [B, P+T] long, "position_ids": [B, P+T] long}`` (the last
        as chosen by ``position_ids``) on the model's device, ready for ``model(**batch)`` or
        ``model.generate(**batch)``.

    Raises:
        TypeError, ValueError: as :func:`pad_token_rows`; a continuation batch of another size; a (real) id
        outside the model's input vocabulary (:func:`check_in_vocabulary`).

    Example:
        >>> from hf_ext.testing import tiny_causal_lm
        >>> batch = prepare_batch(tiny_causal_lm("opt"), [[1, 5], [1]], continuations=[[7], [8, 9]])
        >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist()
        ([[1, 5, 7, 0], [0, 1, 8, 9]], [[1, 1, 1, 0], [0, 1, 1, 1]])
    """
    filler = 0 if pad_token_id is None else pad_token_id
    ids, mask = pad_token_rows(input_ids, attention_mask, side="left", pad_token_id=filler)
    if continuations is not None:
        cont, cont_mask = pad_token_rows(continuations, continuation_mask, side="right", name="continuations",
                                         mask_name="continuation_mask", pad_token_id=filler)
        if cont.shape[0] != ids.shape[0]:
            raise ValueError(f"got {cont.shape[0]} continuations for {ids.shape[0]} rows; pass one per row")
        ids, mask = torch.cat([ids, cont.to(ids.device)], dim=1), torch.cat([mask, cont_mask.to(mask.device)], dim=1)
    try:
        vocab = vocab_size(model, "input")
    except TypeError:  # a model that does not say: its embedding will tell
        vocab = None
    if vocab is not None:
        check_in_vocabulary(ids, mask, vocab, "input_ids" if continuations is None else "input_ids + continuations")
    device = model_device(model)
    if pad_token_id is not None:
        ids = ids.masked_fill(~mask, pad_token_id)
    batch = {"input_ids": ids.to(device), "attention_mask": mask.long().to(device)}
    if position_ids or (position_ids is None and takes_mask_positions(model)):
        batch["position_ids"] = position_ids_from_mask(batch["attention_mask"])
    return batch


def tokenize_left_padded(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` ``[B, T]`` of ``texts``, padded on the left whatever the tokenizer's default.

    A tokenizer without a pad token gets its EOS token as pad token (the usual decoder-only convention); the
    tokenizer's ``padding_side`` is restored afterwards.

    Args:
        tokenizer: a transformers tokenizer.
        texts: ``B`` strings.
        max_length: truncate to this many tokens (``None``: no truncation).

    Example:
        >>> from hf_ext.testing import tiny_tokenizer
        >>> ids, mask = tokenize_left_padded(tiny_tokenizer(), ["ab", "a"])
        >>> mask.tolist()
        [[1, 1, 1], [0, 1, 1]]
    """
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        enc = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=max_length is not None,
                        max_length=max_length)
    finally:
        tokenizer.padding_side = side
    return enc["input_ids"], enc["attention_mask"]
