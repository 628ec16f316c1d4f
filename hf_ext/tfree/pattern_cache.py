"""The tokenizer's word-pattern cache: each distinct word hashed once, its pattern and whitespace flags kept flat."""

from __future__ import annotations

import numpy as np

from .hashing import TrigramHasher
from .wordsplit import NL, NL_RUN_TOKENS, NO_WS, NO_WS_AFTER, NO_WS_BEFORE, WS, WS_RUN_TOKENS, is_special_word

__all__ = ["PatternCache"]


class PatternCache(dict):
    """word -> cache id; a miss computes the word's pattern and its whitespace-rule flags (vectorised lookups).

    The tokenizer's fast path looks whole texts up through it; the model's decode dictionary uses it for the
    whitespace words. Patterns are stored flat (:attr:`pat_data`, ``pat_ptr``/``pat_len`` per id).

    Args:
        hasher: the :class:`~hf_ext.tfree.hashing.TrigramHasher` whose patterns are cached.

    Example:
        >>> from hf_ext.tfree.hashing import TrigramHasher
        >>> cache = PatternCache(TrigramHasher(1000, 4))
        >>> cache.pattern("hello").shape[0] > 0
        True
    """

    def __init__(self, hasher: TrigramHasher):
        super().__init__()
        self.hasher = hasher
        self.words: list[str] = []
        self._cap = 0
        self.ok_after = self.ok_before = self.is_space = self.out_cid = self.pat_len = self.pat_ptr = None
        self.trigrams = self.base_of = self.trail = None
        self._data: list[np.ndarray] = []
        self._pat_data = np.empty(0, dtype=np.int32)
        self._pat_fill = 0
        self._grow(1024)
        for special in (WS, NL, NO_WS, *WS_RUN_TOKENS.values(), *NL_RUN_TOKENS.values()):
            self[special]
        self.WS, self.NL, self.NO_WS = self[WS], self[NL], self[NO_WS]
        self.WS2, self.WS4, self.NL2, self.NL4 = (self[WS_RUN_TOKENS[2]], self[WS_RUN_TOKENS[4]],
                                                  self[NL_RUN_TOKENS[2]], self[NL_RUN_TOKENS[4]])

    def _grow(self, cap: int) -> None:
        def grown(arr, dtype, fill=0):
            new = np.full(cap, fill, dtype=dtype)
            if arr is not None:
                new[: len(arr)] = arr
            return new

        self.ok_after = grown(self.ok_after, bool)
        self.ok_before = grown(self.ok_before, bool)
        self.is_space = grown(self.is_space, bool)
        self.out_cid = grown(self.out_cid, np.int64)
        self.pat_len = grown(self.pat_len, np.int64)
        self.pat_ptr = grown(self.pat_ptr, np.int64)
        self.trigrams = grown(self.trigrams, np.int64)
        self.base_of = grown(self.base_of, np.int64)
        self.trail = grown(self.trail, bool)
        self._cap = cap

    def __missing__(self, word: str) -> int:
        cid = len(self.words)
        if cid >= self._cap:
            self._grow(2 * self._cap)
        self.words.append(word)
        self[word] = cid
        self.base_of[cid] = cid
        if len(word) >= 2 and word[-1] == " " and not is_special_word(word):
            # a split piece that absorbed the single space after it (fast path): expands to [piece, " "]
            base = self[word[:-1]]
            self.base_of[cid], self.trail[cid] = base, True
            return cid
        special = is_special_word(word)
        self.is_space[cid] = word == " "
        self.ok_after[cid] = word != " " and not special and word[-1] not in NO_WS_AFTER
        self.ok_before[cid] = word != " " and not special and word[0] not in NO_WS_BEFORE
        self.out_cid[cid] = cid
        if word == " ":
            self.out_cid[cid] = self[WS]
        elif word == "\n":
            self.out_cid[cid] = self[NL]
        else:
            pattern, n_tri = self.hasher.word_pattern(word)
            if self._pat_fill + len(pattern) > len(self._pat_data):
                new = np.empty(max(2 * len(self._pat_data), self._pat_fill + len(pattern), 4096), dtype=np.int32)
                new[: self._pat_fill] = self._pat_data[: self._pat_fill]
                self._pat_data = new
            self._pat_data[self._pat_fill: self._pat_fill + len(pattern)] = pattern
            self.pat_ptr[cid] = self._pat_fill
            self.pat_len[cid] = len(pattern)
            self.trigrams[cid] = n_tri
            self._pat_fill += len(pattern)
        return cid

    @property
    def pat_data(self) -> np.ndarray:
        return self._pat_data

    def pattern(self, word: str) -> np.ndarray:
        cid = self[word]
        cid = int(self.out_cid[cid])
        p = int(self.pat_ptr[cid])
        return self._pat_data[p: p + int(self.pat_len[cid])]
