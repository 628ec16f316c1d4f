"""``TFreeTokenizer``: the T-FREE word tokenizer (transformers ``PythonBackend``, registered with ``AutoTokenizer``).

Two outputs, for two jobs:

* ``tokenizer(text)`` → ``input_ids`` are ids of *words* in the tokenizer's **word dictionary** (a list saved as
  ``words.json``). It grows only when asked: :meth:`add_words`, or ``grow_dictionary=True`` (out-of-dictionary words
  met while encoding are appended); by default an out-of-dictionary word raises a ``ValueError``. These are the ids
  :class:`~hf_ext.tfree.modeling_tfree.TFreeForCausalLM` generates, and :meth:`decode` maps them back to text.
* :meth:`TFreeTokenizer.encode_activations` → per-word **activation ids** (padded ``[B, W, A]`` with ``-1``, or
  flat + offsets) and a word attention mask. This needs no dictionary at all: the same text always encodes the
  same way (safe under ``datasets.map(num_proc=...)``). It is the fast, vectorised training path (regex split in
  C, whitespace rules in numpy, one cached pattern per distinct word).

``decode(encode(s)) == s`` for every string: by default the tokenizer *escapes* user text that looks like a special
token (``parse_special=False``), which is the one place where it differs from the reference pre-tokenizer
(``parse_special=True`` restores the reference behaviour, at the price of that round trip).

Example:
    >>> tok = TFreeTokenizer(hash_vocab_size=8000, num_activations=10, grow_dictionary=True)
    >>> ids = tok("Hello world!").input_ids
    >>> tok.convert_ids_to_tokens(ids)
    ['Hello', 'world', '!']
    >>> tok.decode(ids)
    'Hello world!'
    >>> enc = tok.encode_activations(["Hello world!"], return_tensors="np")
    >>> enc["activation_ids"].shape  # [batch, words, max activations per word]
    (1, 3, 50)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
from transformers import PreTrainedTokenizer

from hf_ext.utils.loading import read_json, require_file
from hf_ext.utils.logging import get_logger
from hf_ext.utils.saving import AtomicSaveMixin
from hf_ext.utils.validation import check_size

from .hashing import TrigramHasher, validate_hash_params
from .pattern_cache import CODE_SHIFT, IS_SPACE, OK_AFTER, OK_BEFORE, TRAIL, PatternCache
from .wordsplit import SPECIAL_WORDS, text_to_words, words_to_text

logger = get_logger(__name__)

__all__ = ["TFreeTokenizer"]

VOCAB_FILES_NAMES = {"vocab_file": "words.json"}
#: Default bound of the pattern cache (``max_cache_words``), in distinct words; see :class:`TFreeTokenizer`.
DEFAULT_MAX_CACHE_WORDS = 200_000
#: Keys a saved ``tokenizer_config.json`` must have (they decide how every word is hashed).
REQUIRED_CONFIG_KEYS = ("hash_vocab_size", "num_activations", "num_lowercase_activations", "hash_scheme",
                        "trigram_unit", "entire_words")
#: The split of :data:`SPLIT_PATTERN` with each piece absorbing one following space (half the Python objects).
#: An ASCII letter run that no other letter follows is tried first: ``re`` matches ``[a-zA-Z]`` much faster than the
#: Unicode class ``[^\W\d_]``, and the possessive run plus the look-ahead make it the same maximal run (a run that
#: goes on with a non-ASCII letter falls through to the Unicode alternative, without backtracking).
_LETTERS = r"[a-zA-Z]++(?![^\W\d_])|[^\W\d_]+"
_FAST_SPLIT = re.compile(rf"(?:<\|.*?\|>|{_LETTERS}|(?s:.)) ?")
_FAST_SPLIT_ESCAPED = re.compile(rf"(?:{_LETTERS}|(?s:.)) ?")


class TFreeTokenizer(AtomicSaveMixin, PreTrainedTokenizer):
    """T-FREE tokenizer: words in, per-word dictionary ids or hashed trigram activation ids out.

    Args:
        vocab_file: ``words.json`` (a JSON list of words) — the word dictionary; set by ``from_pretrained``.
        words: initial dictionary words (after the special words), e.g. a ``wordfreq`` list.
        hash_vocab_size: ``v``; num_activations: ``m``; num_lowercase_activations: ``k`` (see :class:`TrigramHasher`).
        hash_scheme: ``"aa_md5"`` (checkpoint-compatible) or ``"fast"``.
        trigram_unit: ``"byte"`` or ``"char"``.
        entire_words: hash whole words instead of trigrams.
        parse_special: treat ``<|…|>`` in text as special words (reference behaviour; breaks the exact round trip
            for text that contains such strings). Default ``False``: escaped.
        grow_dictionary: append out-of-dictionary words met while encoding to the dictionary. Default ``False``:
            such a word raises a ``ValueError`` (a dictionary that grows silently changes ``len(tokenizer)``, the
            saved ``words.json`` and the ids of later words with whatever text passed through); add words with
            :meth:`add_words`, or use :meth:`encode_activations`, which needs no dictionary.
        add_eos_token: append ``<|endoftext|>`` to every encoded text (training documents).
        max_cache_words: bound of the per-word pattern cache (a positive int, saved in ``tokenizer_config.json``):
            before each batch, a cache holding more entries than this is dropped and refilled on demand
            (generation-based eviction: it then grows by at most one batch's new entries past the bound; a word and
            its split piece with the following space are two entries). Default
            :data:`DEFAULT_MAX_CACHE_WORDS` (200,000 words: about 150 MiB at m=10, see
            ``benchmarks/tfree_cache_memory.py``), far above the distinct words of a typical training shard's
            frequent vocabulary, so the hit rate stays high while a stream of new words (URLs, ids, typos) cannot
            grow memory without bound. The word *dictionary* (decode ids) is separate: it grows only with
            ``grow_dictionary=True`` or :meth:`add_words`.

    Example:
        >>> tok = TFreeTokenizer(words=["hello", "world"])
        >>> tok.decode(tok("hello  world").input_ids)
        'hello  world'
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str | None = None, words: Sequence[str] | None = None, hash_vocab_size: int = 8000,
                 num_activations: int = 10, num_lowercase_activations: int = 0, hash_scheme: str = "aa_md5",
                 trigram_unit: str = "byte", entire_words: bool = False, parse_special: bool = False,
                 grow_dictionary: bool = False, add_eos_token: bool = False, max_cache_words: int | None = None,
                 eos_token: str = "<|endoftext|>", pad_token: str = "<|endoftext|>", padding_side: str = "left",
                 **kwargs: Any):
        validate_hash_params(hash_vocab_size, num_activations, num_lowercase_activations, hash_scheme, trigram_unit)
        if max_cache_words is None:
            max_cache_words = DEFAULT_MAX_CACHE_WORDS
        if isinstance(max_cache_words, bool) or not isinstance(max_cache_words, int) or max_cache_words < 1:
            raise ValueError(f"max_cache_words must be a positive int (words kept in the pattern cache), got "
                             f"{max_cache_words!r}")
        if vocab_file is None and kwargs.get("name_or_path"):  # from_pretrained found no words.json
            raise FileNotFoundError(f"{kwargs['name_or_path']!r} has no words.json (the T-FREE word dictionary); "
                                    "save the tokenizer with save_pretrained, which writes it")
        if vocab_file is not None:
            loaded = read_json(vocab_file, what="the T-FREE word dictionary (words.json)")
            if not isinstance(loaded, list) or not all(isinstance(w, str) and w for w in loaded):
                raise ValueError(f"{vocab_file} must hold a JSON list of non-empty strings (the word dictionary)")
            base = loaded
        else:
            base = list(SPECIAL_WORDS)
        if words is not None:
            if isinstance(words, str) or not all(isinstance(w, str) for w in words):
                raise TypeError("words must be a sequence of str (dictionary words), e.g. ['the', 'of']")
            base = base + [w for w in words if w]
        self._words: list[str] = []
        self._word_to_id: dict[str, int] = {}
        for w in base:
            if w not in self._word_to_id:
                self._word_to_id[w] = len(self._words)
                self._words.append(w)
        self.hash_vocab_size, self.num_activations = hash_vocab_size, num_activations
        self.num_lowercase_activations, self.hash_scheme = num_lowercase_activations, hash_scheme
        self.trigram_unit, self.entire_words = trigram_unit, bool(entire_words)
        self.parse_special, self.grow_dictionary = bool(parse_special), bool(grow_dictionary)
        self.add_eos_token, self.max_cache_words = bool(add_eos_token), int(max_cache_words)
        self.hasher = TrigramHasher(hash_vocab_size, num_activations, num_lowercase_activations, hash_scheme,
                                    trigram_unit, entire_words)
        self._cache = PatternCache(self.hasher)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs.setdefault("split_special_tokens", True)
        super().__init__(
            hash_vocab_size=hash_vocab_size, num_activations=num_activations,
            num_lowercase_activations=num_lowercase_activations, hash_scheme=hash_scheme, trigram_unit=trigram_unit,
            entire_words=entire_words, parse_special=parse_special, grow_dictionary=grow_dictionary,
            add_eos_token=add_eos_token, max_cache_words=max_cache_words, eos_token=eos_token, pad_token=pad_token,
            padding_side=padding_side, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Self:
        """``PreTrainedTokenizer.from_pretrained``, strict about a local folder: ``words.json`` and a
        ``tokenizer_config.json`` with every hashing key (:data:`REQUIRED_CONFIG_KEYS`) must be there; without
        them the tokenizer would load with default hashing (v=8000, m=10) and encode differently from the model.

        Raises:
            FileNotFoundError: a missing file (named with its path). ArtifactError: a missing key (a ``ValueError``).
        """
        folder = Path(str(pretrained_model_name_or_path))
        if folder.is_dir():
            require_file(folder / VOCAB_FILES_NAMES["vocab_file"], "the T-FREE word dictionary (words.json)")
            read_json(folder / "tokenizer_config.json", what="the T-FREE tokenizer config (tokenizer_config.json)",
                      required=REQUIRED_CONFIG_KEYS)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    # ------------------------------------------------------------------ dictionary
    @property
    def vocab_size(self) -> int:
        """Number of words in the dictionary (grows as new words are encoded)."""
        return len(self._words)

    def __len__(self) -> int:
        return len(self._words)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._word_to_id)

    @property
    def words(self) -> list[str]:
        """The word dictionary (a copy), in id order."""
        return list(self._words)

    def hash_config(self) -> dict[str, Any]:
        """The hashing fields shared with :class:`TFreeConfig` (to check a tokenizer fits a model)."""
        return {"hash_vocab_size": self.hash_vocab_size, "num_activations": self.num_activations,
                "num_lowercase_activations": self.num_lowercase_activations, "hash_scheme": self.hash_scheme,
                "trigram_unit": self.trigram_unit, "entire_words": self.entire_words}

    def add_words(self, words: Iterable[str]) -> list[int]:
        """Add ``words`` to the dictionary (existing ones keep their id); returns their ids."""
        ids = []
        for w in words:
            if not isinstance(w, str) or not w:
                raise ValueError(f"dictionary words must be non-empty str, got {w!r}")
            if w not in self._word_to_id:
                self._word_to_id[w] = len(self._words)
                self._words.append(w)
            ids.append(self._word_to_id[w])
        return ids

    def truncate_dictionary(self, size: int) -> None:
        """Drop every word with id ≥ ``size`` (undo :meth:`add_words` / growth)."""
        if not 0 <= size <= len(self._words):
            raise ValueError(f"size={size} must be in [0, {len(self._words)}]")
        for w in self._words[size:]:
            del self._word_to_id[w]
        del self._words[size:]

    # ------------------------------------------------------------------ PythonBackend hooks
    def tokenize(self, text: str, **kwargs: Any) -> list[str]:
        """Split ``text`` into T-FREE words (see :func:`hf_ext.tfree.wordsplit.text_to_words`)."""
        parse = kwargs.pop("parse_special", self.parse_special)
        return text_to_words(text, parse_special=parse)

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return self.tokenize(text, **kwargs)

    def _convert_token_to_id(self, token: str) -> int:
        idx = self._word_to_id.get(token)
        if idx is None:
            if not self.grow_dictionary:
                raise ValueError(f"word {token!r} is not in the dictionary and grow_dictionary=False; add it with "
                                 "tokenizer.add_words([...]) or use encode_activations() (needs no dictionary)")
            idx = self.add_words([token])[0]
        return idx

    def _convert_token_to_id_with_added_voc(self, token: str) -> int:
        return self._convert_token_to_id(token)

    def _convert_id_to_token(self, index: int) -> str:
        if not 0 <= index < len(self._words):
            raise ValueError(f"word id {index} is outside the dictionary [0, {len(self._words)})")
        return self._words[index]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return words_to_text(tokens)

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None
                                         ) -> list[int]:
        """The ids with ``eos`` appended after each sequence when ``add_eos_token``."""
        eos = [self.eos_token_id] if self.add_eos_token else []
        out = list(token_ids_0) + eos
        if token_ids_1 is not None:
            out += list(token_ids_1) + eos
        return out

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: list[int] | None = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        """1 at the special (``eos``) positions :meth:`build_inputs_with_special_tokens` adds (or, with
        ``already_has_special_tokens``, already holds), 0 elsewhere."""
        if already_has_special_tokens:
            return [int(i == self.eos_token_id) for i in token_ids_0]
        eos = [1] if self.add_eos_token else []
        out = [0] * len(token_ids_0) + eos
        if token_ids_1 is not None:
            out += [0] * len(token_ids_1) + eos
        return out

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return (2 if pair else 1) if self.add_eos_token else 0

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return words_to_text([self._convert_id_to_token(int(i)) for i in token_ids if int(i) not in skip])

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        if not os.path.isdir(save_directory):
            raise ValueError(f"save_directory={save_directory!r} is not a directory")
        path = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "words.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self._words, f, ensure_ascii=False, indent=0)
        return (path,)

    # ------------------------------------------------------------------ activation ids (dictionary-free)
    def word_pattern(self, word: str) -> np.ndarray:
        """Sorted activation ids of ``word`` with multiplicity (``[T*m]``; cached)."""
        return self._bounded_cache().pattern(word).copy()

    def words_to_patterns(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR of the patterns of ``words``: ``(indptr [n+1], indices [nnz], trigram_counts [n])`` (with multiplicity)."""
        return self._bounded_cache().csr(words)

    @property
    def cache_size(self) -> int:
        """Distinct words now in the pattern cache (at most ``max_cache_words`` plus one batch's new words)."""
        return len(self._cache.words)

    def _bounded_cache(self) -> PatternCache:
        """The pattern cache, replaced by an empty one first when it holds more than ``max_cache_words`` words."""
        if len(self._cache.words) > self.max_cache_words:
            self._cache = PatternCache(self.hasher)
        return self._cache

    def _text_cids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised :func:`text_to_words` over a batch: the cache ids of all words and each word's text index."""
        c = self._bounded_cache()
        findall = (_FAST_SPLIT if self.parse_special else _FAST_SPLIT_ESCAPED).findall
        lens = np.empty(len(texts), dtype=np.int64)
        pieces: list[str] = []
        for b, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{b}] must be a str, got {type(t).__name__}")
            p = findall(t)
            lens[b] = len(p)
            pieces += p
        n = len(pieces)
        cids = c.ids(pieces)
        text_of = np.repeat(np.arange(len(texts), dtype=np.int64), lens)
        if n == 0:
            return cids, text_of
        code = c.code[cids]  # the only per-piece gather: flags and output id packed (PatternCache.code)
        trail = (code & TRAIL).astype(bool)
        if trail.any():  # expand "piece " entries into [piece, " "]
            n_exp = 1 + trail.astype(np.int64)
            ends = np.cumsum(n_exp)
            expanded = np.empty(int(ends[-1]), dtype=np.int64)
            expanded[ends - n_exp] = code  # a trailing-space piece's code describes its base word
            expanded[ends[trail] - 1] = c.SPACE_CODE
            code, text_of = expanded, np.repeat(text_of, n_exp)
            n = len(code)
        flags = code.astype(np.uint8)  # the low bits (the id above them is cut off)
        same_next = text_of[1:] == text_of[:-1]
        ok_a, ok_b = (flags & OK_AFTER).view(bool), ((flags & OK_BEFORE) >> 1).view(bool)
        expected_next = ok_a[:-1] & ok_b[1:] & same_next  # adjacent pieces i, i+1 where a space is expected
        drop = np.zeros(n, dtype=bool)
        if n > 2:
            is_space = ((flags[1:-1] & IS_SPACE) >> 2).view(bool)
            drop[1:-1] = is_space & ok_a[:-2] & ok_b[2:] & same_next[:-1] & same_next[1:]
        no_ws = np.zeros(n, dtype=bool)
        no_ws[1:] = expected_next
        keep = ~drop
        count = no_ws.astype(np.int64) + keep
        ends = np.cumsum(count)
        starts = ends - count
        out = np.empty(int(ends[-1]), dtype=np.int64)
        out[starts[no_ws]] = c.NO_WS
        out[(starts + no_ws)[keep]] = code[keep] >> CODE_SHIFT
        out_text = np.repeat(text_of, count)
        for one, two, four in ((c.WS, c.WS2, c.WS4), (c.NL, c.NL2, c.NL4)):
            is_t = out == one
            cont = np.zeros(len(out), dtype=bool)
            cont[1:] = is_t[1:] & is_t[:-1] & (out_text[1:] == out_text[:-1])
            if not cont.any():
                continue
            idx = np.flatnonzero(is_t)
            first = ~cont[idx]
            rid = np.cumsum(first) - 1
            pos = idx - idx[first][rid]
            run = np.bincount(rid)[rid]
            q, r2 = run // 4, (run % 4) >= 2
            new_len = q + r2 + run % 2
            tok = np.where(pos < q, four, np.where((pos == q) & r2, two, one))
            out[idx] = tok
            dead = idx[pos >= new_len]
            if len(dead):
                alive = np.ones(len(out), dtype=bool)
                alive[dead] = False
                out, out_text = out[alive], out_text[alive]
        return out, out_text

    def fast_tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """Words of each text through the vectorised path (equals :meth:`tokenize` per text)."""
        cids, text_of = self._text_cids(texts)
        words = self._cache.words
        bounds = np.searchsorted(text_of, np.arange(len(texts) + 1))
        flat = [words[i] for i in cids.tolist()]
        return [flat[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]

    def encode_activations(self, texts: str | Sequence[str], *, max_words: int | None = None,
                           format: str = "padded", return_tensors: str | None = "pt",
                           padding_side: str | None = None, add_eos_token: bool | None = None) -> dict[str, Any]:
        """Encode texts to per-word activation ids (no dictionary needed; deterministic).

        Args:
            texts: a string or a list of strings.
            max_words: truncate every text to its first ``max_words`` words.
            format: ``"padded"`` → ``activation_ids`` ``[B, W, A]`` (``-1`` padding, ids sorted per word, duplicates
                kept: the embedding sums them) and ``attention_mask`` ``[B, W]``; ``"flat"`` → per text a list of
                per-word lists (``activation_ids``; ragged, for ``datasets``) and ``num_words``; ``"csr"`` → numpy
                ``activation_ids`` ``[nnz]``, ``word_offsets`` ``[n_words + 1]`` and ``text_offsets`` ``[B + 1]`` (the
                fastest: no padding, no Python lists).
            return_tensors: ``"pt"``, ``"np"`` or ``None`` (lists); padded format only.
            padding_side: ``"left"``/``"right"`` (default: the tokenizer's).
            add_eos_token: append ``<|endoftext|>`` to each text (default: the tokenizer's ``add_eos_token``).

        Example:
            >>> tok = TFreeTokenizer()
            >>> out = tok.encode_activations(["a b", "c"], return_tensors="np")
            >>> out["attention_mask"].tolist()
            [[1, 1], [0, 1]]
        """
        if isinstance(texts, str):
            texts = [texts]
        if format not in ("padded", "flat", "csr"):
            raise ValueError(f"format={format!r} must be 'padded', 'flat' or 'csr'")
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors={return_tensors!r} must be 'pt', 'np' or None")
        side = padding_side or self.padding_side
        if side not in ("left", "right"):
            raise ValueError(f"padding_side={side!r} must be 'left' or 'right'")
        check_size("max_words", max_words, allow_none=True)
        B = len(texts)
        cids, text_of = self._text_cids(texts)
        if add_eos_token if add_eos_token is not None else self.add_eos_token:
            eos = self._cache["<|endoftext|>"]
            cids = np.concatenate([cids, np.full(B, eos)])
            text_of = np.concatenate([text_of, np.arange(B)])
            order = np.argsort(text_of, kind="stable")
            cids, text_of = cids[order], text_of[order]
        n_words = np.bincount(text_of, minlength=B)
        word_start = np.zeros(B + 1, dtype=np.int64)
        np.cumsum(n_words, out=word_start[1:])
        pos = np.arange(len(cids), dtype=np.int64) - word_start[text_of]
        if max_words is not None:
            keep = pos < max_words
            cids, text_of, pos = cids[keep], text_of[keep], pos[keep]
            n_words = np.minimum(n_words, max_words)
        indptr, data = self._cache.gather(cids)
        lens = np.diff(indptr)
        if format == "csr":
            text_offsets = np.zeros(B + 1, dtype=np.int64)
            np.cumsum(n_words, out=text_offsets[1:])
            return {"activation_ids": data, "word_offsets": indptr, "text_offsets": text_offsets}
        if format == "flat":
            per_word = [data[a:b].tolist() for a, b in zip(indptr[:-1].tolist(), indptr[1:].tolist())]
            bounds = np.zeros(B + 1, dtype=np.int64)
            np.cumsum(n_words, out=bounds[1:])
            return {"activation_ids": [per_word[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())],
                    "num_words": n_words.tolist()}
        W = int(n_words.max()) if B else 0
        A = int(lens.max()) if len(lens) else 1
        if side == "left":
            pos = pos + (W - n_words)[text_of]
        act = np.full((B, W, A), -1, dtype=np.int64)
        word_row = np.repeat(np.arange(len(cids)), lens)
        within = np.arange(len(data), dtype=np.int64) - np.repeat(indptr[:-1], lens)
        act[text_of[word_row], pos[word_row], within] = data
        mask = np.zeros((B, W), dtype=np.int64)
        mask[text_of, pos] = 1
        if return_tensors == "pt":
            import torch

            return {"activation_ids": torch.from_numpy(act), "attention_mask": torch.from_numpy(mask)}
        if return_tensors is None:
            return {"activation_ids": act.tolist(), "attention_mask": mask.tolist()}
        return {"activation_ids": act, "attention_mask": mask}
