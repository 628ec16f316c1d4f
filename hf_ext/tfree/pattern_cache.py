"""The per-word pattern cache of :class:`~hf_ext.tfree.tokenization_tfree.TFreeTokenizer` (numpy, no torch).

Each distinct split piece gets a cache id; per id, numpy arrays hold the whitespace-rule flags the vectorised word
split reads and the word's activation pattern (its trigrams' rows, sorted, with multiplicity). New words are
processed in batches: :meth:`PatternCache.settle` sets the flags of all words registered since its last call,
:meth:`PatternCache.flush` computes their patterns with :meth:`~hf_ext.tfree.hashing.TrigramHasher.word_patterns`.

Example:
    >>> from hf_ext.tfree.hashing import TrigramHasher
    >>> cache = PatternCache(TrigramHasher(8000, 10))
    >>> indptr, ids, n_trigrams = cache.csr(["Hello", " "])  # " " is the <|ws|> word
    >>> indptr.tolist(), n_trigrams.tolist()
    ([0, 50, 60], [5, 1])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .hashing import TrigramHasher
from .wordsplit import NL, NL_RUN_TOKENS, NO_WS, NO_WS_AFTER, NO_WS_BEFORE, WS, WS_RUN_TOKENS, is_special_word

__all__ = ["PatternCache"]


class PatternCache(dict):
    """word -> cache id, with per-id whitespace-rule flags and activation patterns in numpy arrays.

    A miss only registers the word; :meth:`settle` computes the flags of all new words at once (before any flag is
    read) and :meth:`flush` their patterns (:meth:`TrigramHasher.word_patterns`, before any pattern is read): a first
    pass over new text hashes all its new words in one batch.
    """

    def __init__(self, hasher: TrigramHasher):
        super().__init__()
        self.hasher = hasher
        self.words: list[str] = []
        self._cap = 0
        self.ok_after = self.ok_before = self.is_space = self.out_cid = self.pat_len = self.pat_ptr = None
        self.trigrams = self.base_of = self.trail = None
        self._pat_data = np.empty(0, dtype=np.int32)
        self._pat_fill = 0
        self._settled = 0  # ids below have their flags
        self._pending: list[int] = []  # ids whose pattern is not computed yet
        self._grow(1024)
        for special in (WS, NL, NO_WS, " ", "\n", *WS_RUN_TOKENS.values(), *NL_RUN_TOKENS.values()):
            self[special]
        self.settle()
        self.WS, self.NL, self.NO_WS, self.SPACE = self[WS], self[NL], self[NO_WS], self[" "]
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
        self.words.append(word)
        self[word] = cid
        if len(word) >= 2 and word[-1] == " " and not is_special_word(word):
            self[word[:-1]]  # a split piece that absorbed the single space after it: its base word too
        return cid

    def settle(self) -> None:
        """Flags (and queued patterns) of the words added since the last call, computed together."""
        start, end = self._settled, len(self.words)
        if start == end:
            return
        if end > self._cap:
            self._grow(max(end, 2 * self._cap))
        new = self.words[start:end]
        ids = np.arange(start, end, dtype=np.int64)
        special = [is_special_word(w) for w in new]
        trail = np.array([len(w) >= 2 and w[-1] == " " and not sp for w, sp in zip(new, special)], dtype=bool)
        plain = [not sp and w != " " for w, sp in zip(new, special)]
        self.trail[start:end] = trail
        self.base_of[start:end] = [self[w[:-1]] if t else i for w, t, i in zip(new, trail.tolist(), ids.tolist())]
        self.is_space[start:end] = [w == " " for w in new]
        # a trailing-space piece expands to [base, " "]: its own flags are never read
        self.ok_after[start:end] = [p and w[-1] not in NO_WS_AFTER for w, p in zip(new, plain)]
        self.ok_before[start:end] = [p and w[0] not in NO_WS_BEFORE for w, p in zip(new, plain)]
        out = ids.copy()
        is_ws, is_nl = [w == " " for w in new], [w == "\n" for w in new]
        if any(is_ws) or any(is_nl):
            out[is_ws] = self[WS]
            out[is_nl] = self[NL]
        self.out_cid[start:end] = out
        self._pending += [i for i, t, a, b in zip(ids.tolist(), trail.tolist(), is_ws, is_nl) if not (t or a or b)]
        self._settled = end
        if len(self.words) > end:  # WS / NL registered just now (first cache use)
            self.settle()

    def flush(self) -> None:
        """Compute the patterns of all queued words in one batch."""
        self.settle()
        if not self._pending:
            return
        cids, self._pending = self._pending, []
        indptr, data, n_tri = self.hasher.word_patterns([self.words[c] for c in cids])
        end = self._pat_fill + len(data)
        if end > len(self._pat_data):
            new = np.empty(max(2 * len(self._pat_data), end, 4096), dtype=np.int32)
            new[: self._pat_fill] = self._pat_data[: self._pat_fill]
            self._pat_data = new
        self._pat_data[self._pat_fill: end] = data
        self.pat_ptr[cids] = self._pat_fill + indptr[:-1]
        self.pat_len[cids] = np.diff(indptr)
        self.trigrams[cids] = n_tri
        self._pat_fill = end

    def ids(self, words: Sequence[str]) -> np.ndarray:
        """Cache ids of ``words`` (registering new ones), flags settled."""
        out = np.fromiter(map(self.__getitem__, words), dtype=np.int64, count=len(words))
        self.settle()
        return out

    def gather(self, cids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CSR ``(indptr, ids)`` of the patterns of cache ids ``cids`` (with multiplicity)."""
        self.flush()
        lens = self.pat_len[cids]
        indptr = np.zeros(len(cids) + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        # int32 positions halve the memory traffic of this (output-sized) gather when they fit
        pos_type = np.int32 if max(int(indptr[-1]), self._pat_fill) < 2**31 else np.int64
        idx = np.arange(indptr[-1], dtype=pos_type)
        idx += np.repeat((self.pat_ptr[cids] - indptr[:-1]).astype(pos_type), lens)  # own offset + pattern start
        return indptr, self._pat_data[idx]

    def csr(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(indptr [n+1], ids [nnz], trigram_counts [n])`` of ``words`` (" " and "\\n" as their special words)."""
        registered = self.ids(words)  # may grow the flag arrays: read them only afterwards
        cids = self.out_cid[registered]
        indptr, data = self.gather(cids)
        return indptr, data, self.trigrams[cids].copy()

    def pattern(self, word: str) -> np.ndarray:
        """The trigram-hash pattern of ``word`` (its activated hash ids, an ``int32`` array); registers the word if new."""
        registered = int(self.ids([word])[0])  # may grow the flag arrays: read them only afterwards
        cid = int(self.out_cid[registered])
        self.flush()
        p = int(self.pat_ptr[cid])
        return self._pat_data[p: p + int(self.pat_len[cid])]
