"""The greedy reference cache: a model's pure greedy continuations as a ``datasets.Dataset``, cached on disk.

:func:`greedy_reference` runs batched, left-padded ``model.generate(do_sample=False)`` with every logits processor
switched off (:data:`PURE_GREEDY`: pure argmax, as DTM's ``y = greedy_N(F, p)``), cuts each continuation after its
first EOS (inclusive) and returns a ``datasets.Dataset`` of token ids, optionally cached on disk under a key that
hashes the model config, a fingerprint of its weights (:func:`weights_fingerprint`), the prompt ids,
``max_new_tokens`` and the EOS ids. :func:`greedy_continuations` is its one-batch step, also used by DTM's
free-running baseline.

Example:
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("gpt2")
    >>> ref = greedy_reference(model, [[1, 5, 6], [1, 7]], max_new_tokens=4, eos_token_id=[], progress=False)
    >>> [len(c) for c in ref["continuation_ids"]]
    [4, 4]
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hf_ext.utils.logging import get_logger
from hf_ext.utils.saving import ArtifactIntegrityError, atomic_directory, verify_manifest
from hf_ext.utils.validation import check_size

from .inputs import (
    is_token_id,
    max_positions,
    model_device,
    prepare_batch,
    text_config,
    token_id_list,
    vocab_size,
)
from .model_checks import padding_exact, record_padding_exact

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

logger = get_logger(__name__)

__all__ = ["PURE_GREEDY", "greedy_continuations", "greedy_reference", "weights_fingerprint"]

# Bumped whenever the cached dataset layout or the key recipe changes.
_CACHE_FORMAT = 1

#: ``generate()`` settings that make it a *pure* greedy decoder whatever the model's ``generation_config`` says (no
#: repetition penalty, no n-gram blocking, no forced/suppressed tokens, no minimum length: any of those would move
#: the argmax).
PURE_GREEDY: dict[str, Any] = dict(
    do_sample=False, num_beams=1, num_return_sequences=1, temperature=None, top_k=None, top_p=None,
    repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0,
    bad_words_ids=None, suppress_tokens=None, begin_suppress_tokens=None, forced_bos_token_id=None,
    forced_eos_token_id=None, sequence_bias=None, exponential_decay_length_penalty=None, min_length=0,
    min_new_tokens=None, stop_strings=None, guidance_scale=None, return_dict_in_generate=False, use_cache=True,
)

def greedy_continuations(model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
                         eos_token_id: Sequence[int] | None = None, pad_token_id: int = 0) -> list[list[int]]:
    """Pure greedy continuations of one batch of prompts: a single left-padded ``generate()`` call.

    Args:
        model: a transformers causal LM with ``generate``.
        prompts: ``B`` unpadded id lists (batched by :func:`~hf_ext.core.inputs.prepare_batch`: left padding and
            explicit ``position_ids`` when the model takes them).
        max_new_tokens: tokens generated per row.
        eos_token_id: stop ids (``None`` or empty: never stop early). Rows that stop early are padded by
            ``generate`` up to the batch's longest row; cut them yourself.
        pad_token_id: filler of padded positions.

    Returns:
        ``B`` lists of new ids (at most ``max_new_tokens`` each, one length for the whole batch).

    Example:
        >>> from hf_ext.testing import tiny_causal_lm
        >>> [len(c) for c in greedy_continuations(tiny_causal_lm("llama"), [[1, 5, 6], [1]], 3)]
        [3, 3]
    """
    batch = prepare_batch(model, [list(p) for p in prompts], pad_token_id=pad_token_id)
    kwargs = dict(PURE_GREEDY, max_new_tokens=max_new_tokens, eos_token_id=list(eos_token_id or []) or None,
                  pad_token_id=pad_token_id)
    with torch.no_grad():
        out = model.generate(**batch, **kwargs)
    sequences = out if isinstance(out, torch.Tensor) else out.sequences
    return sequences[:, batch["input_ids"].shape[1]:].tolist()


def greedy_reference(
    model: nn.Module,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    tokenizer: PreTrainedTokenizerBase | None = None,
    batch_size: int = 8,
    eos_token_id: int | Sequence[int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    add_special_tokens: bool = True,
    exact_fingerprint: bool = False,
) -> datasets.Dataset:
    """The model's greedy continuations of ``prompts`` as a ``datasets.Dataset`` of token ids, optionally cached.

    Prompts are sorted by length, left-padded into batches and decoded with ``model.generate(do_sample=False)``
    with an explicit attention mask and explicit ``position_ids`` (when the model takes them) and every logits
    processor off, so each row equals a plain argmax loop over the unpadded prompt. A continuation stops after its
    first EOS (kept) or after ``max_new_tokens`` tokens. The first padded batch is checked once per model against
    its prompts decoded alone (:func:`~hf_ext.core.model_checks.padding_exact`); a model that decodes them
    differently (recurrent stacks, batch-dependent quantization) is then decoded one prompt at a time.

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
        >>> from hf_ext.core.scoring import teacher_forced_logprobs
        >>> scores = teacher_forced_logprobs(model, ref["prompt_ids"], ref["continuation_ids"])  # DTM's input
    """
    from datasets import Dataset, DatasetInfo, Features, List, Value, load_from_disk

    from hf_ext.utils.progress import progress_bar

    check_size("max_new_tokens", max_new_tokens)
    check_size("batch_size", batch_size)
    if not callable(getattr(model, "generate", None)):
        raise TypeError(f"{type(model).__name__} has no generate(); pass a transformers causal LM "
                        "(e.g. AutoModelForCausalLM)")
    texts, prompt_ids = _prompt_ids(prompts, tokenizer, add_special_tokens)
    vocab = vocab_size(model, "input")
    for i, row in enumerate(prompt_ids):
        bad = [t for t in row if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt {i} has token id {bad[0]} outside the vocabulary [0, {vocab}); "
                             "tokenize with the model's own tokenizer")
    eos = _resolve_eos(model, eos_token_id)
    pad = _resolve_pad(model, tokenizer, eos)
    limit = max_positions(model)
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
            try:
                verify_manifest(path)
            except ArtifactIntegrityError as err:  # an interrupted write: a cache is rebuilt, not trusted
                logger.warning(f"greedy reference: ignoring the damaged cache entry ({err}); recomputing")
            else:
                logger.info(f"greedy reference: loading cached dataset from {path}")
                return load_from_disk(str(path))

    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    continuations: list[list[int] | None] = [None] * len(prompt_ids)
    stopped: list[bool] = [False] * len(prompt_ids)
    if padding_exact(model, "decode") is False:
        batch_size = 1
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in progress_bar(batches, desc="greedy reference", unit="batch", enabled=progress):
        rows = [prompt_ids[i] for i in batch]
        new_ids = greedy_continuations(model, rows, max_new_tokens, eos_token_id=eos, pad_token_id=pad)
        if padding_exact(model, "decode") is None and len({len(r) for r in rows}) > 1:
            # one-off check per model (as in teacher_forced_logprobs): each prompt of the first padded batch decoded
            # alone must give the same continuation (left padding or batch-dependent numerics, e.g. per-batch
            # activation quantization, would change it), else every prompt is decoded on its own
            # (compared up to the first EOS: generate pads rows that stopped early up to the batch's longest)
            exact = all(_cut_at_eos(greedy_continuations(model, [r], max_new_tokens, eos_token_id=eos,
                                                         pad_token_id=pad)[0], eos) == _cut_at_eos(new, eos)
                        for r, new in zip(rows, new_ids))
            record_padding_exact(model, exact, "decode")
            if not exact:
                logger.info("%s decodes a left-padded prompt differently from the same prompt alone; decoding one "
                            "prompt at a time", type(model).__name__)
                return greedy_reference(model, prompts, max_new_tokens=max_new_tokens, tokenizer=tokenizer,
                                        eos_token_id=eos_token_id, cache_dir=cache_dir, batch_size=1,
                                        progress=progress, add_special_tokens=add_special_tokens,
                                        exact_fingerprint=exact_fingerprint)
        for i, new in zip(batch, new_ids):
            continuations[i] = _cut_at_eos(new, eos)
            stopped[i] = any(t in eos for t in new)

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


def _cut_at_eos(new: list[int], eos: list[int]) -> list[int]:
    """``new`` up to and including its first EOS id (all of it without one)."""
    cut = next((k for k, t in enumerate(new) if t in eos), None)
    return new[: cut + 1] if cut is not None else new


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
    if all(is_token_id(t) for t in items):
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
        ids, texts = [token_id_list(p, "prompts", i) for i, p in enumerate(items)], None
    for i, row in enumerate(ids):
        if not row:
            raise ValueError(f"prompt {i} is empty; every prompt needs at least one token (e.g. BOS)")
    return texts, ids


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    if is_token_id(value):
        return [int(value)]
    return [int(v) for v in value]


def _resolve_eos(model: nn.Module, eos_token_id: Any) -> list[int]:
    if eos_token_id is not None:
        if not (is_token_id(eos_token_id) or (hasattr(eos_token_id, "__iter__") and all(is_token_id(t) for t in eos_token_id))):
            raise TypeError(f"eos_token_id must be an int, a list of ints, [] (never stop) or None (the model's "
                            f"default), got {eos_token_id!r}")
        return _as_list(eos_token_id)
    gen = getattr(model, "generation_config", None)
    if gen is not None and getattr(gen, "eos_token_id", None) is not None:
        return _as_list(gen.eos_token_id)
    return _as_list(getattr(text_config(model), "eos_token_id", None))


def _resolve_pad(model: nn.Module, tokenizer: Any, eos: list[int]) -> int:
    candidates = [getattr(tokenizer, "pad_token_id", None), getattr(getattr(model, "generation_config", None),
                                                                    "pad_token_id", None)]
    candidates.append(getattr(text_config(model), "pad_token_id", None))
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
            "device": model_device(model).type, "prompts": prompts_hash, "num_prompts": len(prompt_ids),
            "max_new_tokens": max_new_tokens, "eos_token_id": eos}


def _save_atomically(ds: Any, path: Path, key_fields: dict[str, Any], load_from_disk: Any) -> Any:
    """Save through :func:`hf_ext.utils.saving.atomic_directory`, so a reader never sees a half-written cache entry
    (a concurrent writer of the same key writes the same bytes)."""
    with atomic_directory(path) as staging:
        ds.save_to_disk(str(staging))
        (staging / "hf_ext_cache_key.json").write_text(json.dumps(key_fields, sort_keys=True, default=str, indent=1))
    logger.info(f"greedy reference: saved to {path}")
    return load_from_disk(str(path))


def _as_words(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as a flat int16 (or uint8 for odd byte counts) tensor on its device."""
    flat = tensor.contiguous().reshape(-1)
    raw = flat if flat.dtype == torch.uint8 else flat.view(torch.uint8)
    if raw.storage_offset() % 2:
        raw = raw.clone()  # int16 views need an even byte offset
    return raw.view(torch.int16) if raw.numel() % 2 == 0 else raw