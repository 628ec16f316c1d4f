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
from .wordsplit import NL, NL_RUN_TOKENS, NO_WS, NO_WS_AFTER, NO_WS_BEFORE, WS, WS_RUN_TOKENS

__all__ = ["PatternCache"]

#: Code points after which / before which no space is expected (``NO_WS_AFTER`` / ``NO_WS_BEFORE``).
_NO_WS_AFTER = np.array(sorted(map(ord, NO_WS_AFTER)), dtype=np.uint32)
_NO_WS_BEFORE = np.array(sorted(map(ord, NO_WS_BEFORE)), dtype=np.uint32)
#: Bits of :attr:`PatternCache.code` (the output id sits above them).
OK_AFTER, OK_BEFORE, IS_SPACE, TRAIL, CODE_SHIFT = 1, 2, 4, 8, 4
#: Entries per slice of :meth:`PatternCache.gather`'s positions (8 MiB of int64).
_GATHER_CHUNK = 1 << 20


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
        self.trigrams = self.base_of = self.trail = self.special = self.code = None
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
        self.SPACE_CODE = int(self.code[self.SPACE])

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
        self.special = grown(self.special, bool)
        self.code = grown(self.code, np.int64)
        self._cap = cap

    def __missing__(self, word: str) -> int:
        # kept minimal (it runs once per new piece): the base word of a piece that absorbed a space is registered
        # by settle, for all new pieces at once
        cid = len(self.words)
        self.words.append(word)
        self[word] = cid
        return cid

    def settle(self) -> None:
        """Flags (and queued patterns) of the words added since the last call, computed together."""
        start = self._settled
        if start == len(self.words):
            return
        # a split piece that absorbed the single space after it ("word ") stands for [base word, " "]: register the
        # new pieces' base words first (never trailing-space pieces themselves), so they are settled in this call
        bases = [w[:-1] for w in self.words[start:] if len(w) >= 2 and w[-1] == " "]  # (specials end with "|>")
        new_bases = [b for b in dict.fromkeys(bases) if b not in self]
        self.update(zip(new_bases, range(len(self.words), len(self.words) + len(new_bases))))
        self.words += new_bases
        base_ids = np.fromiter(map(self.__getitem__, bases), dtype=np.int64, count=len(bases))
        end = len(self.words)
        if end > self._cap:
            self._grow(max(end, 2 * self._cap))
        new = self.words[start:end]
        ids = np.arange(start, end, dtype=np.int64)
        # the flags depend on each word's first, second, second-to-last and last characters and its length only:
        # read them off one UTF-32 buffer of the new words in numpy (no Python loop per flag)
        lens = np.fromiter(map(len, new), dtype=np.int64, count=len(new))
        chars = np.frombuffer("".join(new).encode("utf-32-le"), dtype=np.uint32)
        last_at = np.cumsum(lens) - 1
        first_at = last_at - lens + 1
        first, last = chars[first_at], chars[last_at]
        second, second_last = chars[np.minimum(first_at + 1, last_at)], chars[np.maximum(last_at - 1, first_at)]
        special = (lens >= 4) & (first == ord("<")) & (second == ord("|")) & (second_last == ord("|")) & (last == ord(">"))
        trail = (lens >= 2) & (last == ord(" "))  # (special words end with "|>")
        is_ws, is_nl = (lens == 1) & (first == ord(" ")), (lens == 1) & (first == ord("\n"))
        plain = ~special & ~is_ws
        self.trail[start:end] = trail
        self.special[start:end] = special
        base = ids.copy()
        base[trail] = base_ids  # (the trailing-space pieces are in the same order as when they were collected)
        self.base_of[start:end] = base
        self.is_space[start:end] = is_ws
        # a trailing-space piece expands to [base, " "]: its own flags are never read
        self.ok_after[start:end] = plain & ~np.isin(last, _NO_WS_AFTER)
        self.ok_before[start:end] = plain & ~np.isin(first, _NO_WS_BEFORE)
        out = ids.copy()
        if is_ws.any() or is_nl.any():
            out[is_ws] = self[WS]
            out[is_nl] = self[NL]
        self.out_cid[start:end] = out
        # everything the vectorised split reads of a piece, in one int64 (one gather per piece instead of six): the
        # flags and output id of what the piece expands to first (its base word for a trailing-space piece)
        head = self.base_of[start:end]
        self.code[start:end] = ((self.out_cid[head] << CODE_SHIFT) | self.ok_after[head] * OK_AFTER
                                | self.ok_before[head] * OK_BEFORE | self.is_space[head] * IS_SPACE
                                | self.trail[start:end] * TRAIL)
        self._pending += ids[~(trail | is_ws | is_nl)].tolist()
        self._settled = end
        if len(self.words) > end:  # WS / NL registered just now (first cache use)
            self.settle()

    def flush(self) -> None:
        """Compute the patterns of all queued words in one batch."""
        self.settle()
        if not self._pending:
            return
        cids, self._pending = self._pending, []
        words = self.words
        # (pieces are non-empty strings; which are special words is known from settle)
        starts, lens, data, n_tri = self.hasher._word_patterns([words[c] for c in cids],
                                                               whole=np.flatnonzero(self.special[cids]).tolist())
        end = self._pat_fill + len(data)
        if end > len(self._pat_data):
            new = np.empty(max(2 * len(self._pat_data), end, 4096), dtype=np.int32)
            new[: self._pat_fill] = self._pat_data[: self._pat_fill]
            self._pat_data = new
        self._pat_data[self._pat_fill: end] = data
        self.pat_ptr[cids] = self._pat_fill + starts
        self.pat_len[cids] = lens
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
        out = np.empty(int(indptr[-1]), dtype=self._pat_data.dtype)
        # The output-sized positions are built in slices of about _GATHER_CHUNK entries (whole words each): a slice
        # stays in cache and in heap memory malloc reuses, where one output-sized index array would be a fresh
        # mapping page-faulted in on every call.
        cuts = np.unique(np.searchsorted(indptr[:-1], np.arange(0, len(out), _GATHER_CHUNK)))
        for a, b in zip(cuts.tolist(), [*cuts[1:].tolist(), len(cids)]):
            self._gather_into(out[indptr[a]: indptr[b]], self.pat_ptr[cids[a:b]], lens[a:b])
        return indptr, out

    def _gather_into(self, out: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> None:
        """Write the patterns starting at ``starts`` (lengths ``lens``) one after another into ``out``."""
        words = np.flatnonzero(lens)  # an empty pattern would put two jumps on one position
        if len(words) == 0:
            return
        starts, lens = starts[words], lens[words]
        # positions: the running sum of steps that are 1 inside a pattern and jump to the next pattern's start at
        # word boundaries (one fill, one scatter, one cumsum: no arange plus repeat)
        steps = np.ones(len(out), dtype=np.int64)
        first = np.cumsum(lens) - lens
        steps[0] = starts[0]
        steps[first[1:]] = starts[1:] - (starts[:-1] + lens[:-1] - 1)
        np.cumsum(steps, out=steps)
        np.take(self._pat_data, steps, out=out, mode="clip")  # "clip": no buffering ("raise" copies through one)

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
