"""Trigram hashing of T-FREE (numpy only): word → trigram ids → ``m`` of ``v`` activation rows.

Two hash families:

* ``"aa_md5"`` — checkpoint-compatible with the Aleph Alpha release (spec ``tfree.md`` §4): the little-endian
  byte-trigram id ``i``; for ``k in range(m)`` draw ``md5(f"{i}_{k}_{j}") mod v`` for ``j = 0, 1, …`` until the
  value is new in the row; sort. With ``k_lower = num_lowercase_activations > 0``, trigrams made only of
  ``[a-zA-Z ]`` that differ from their lowercase form get the last ``k_lower`` entries of the lowercase row.
  Special words are hashed whole: ``md5(f"{word}_{i}")`` for ``i < m - k_lower`` and
  ``md5(f"{word.lower()}_lower_{i}")`` for ``i < k_lower``.
* ``"fast"`` — a new (not checkpoint-compatible) family: splitmix64 of the trigram id, vectorised in numpy, with
  the same rejection, sort and lowercase-sharing rules.

The 2^24-row table is never materialised: rows are computed lazily and cached per trigram, and
:class:`TrigramHasher.word_pattern` is cached per word by the tokenizer.

Example:
    >>> h = TrigramHasher(vocab_size=8000, num_activations=10)
    >>> h.trigram_ids("Hello").tolist()
    [2125676, 6637600, 7103816, 7105637, 7302252]
    >>> h.rows(np.array([6637600]))[0].tolist()
    [764, 1701, 2238, 3605, 5910, 5911, 6000, 6257, 6940, 7616]
"""

from __future__ import annotations

import hashlib

import numpy as np

from .wordsplit import is_special_word

__all__ = ["HASH_SCHEMES", "TRIGRAM_UNITS", "TrigramHasher", "validate_hash_params"]

HASH_SCHEMES = ("aa_md5", "fast")
TRIGRAM_UNITS = ("byte", "char")
_ASCII_CASE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ")
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def validate_hash_params(vocab_size, num_activations, num_lowercase_activations, hash_scheme, trigram_unit) -> None:
    """Raise ``TypeError``/``ValueError`` naming the bad value (v, m, k, scheme, unit)."""
    for name, value in (("hash_vocab_size", vocab_size), ("num_activations", num_activations),
                        ("num_lowercase_activations", num_lowercase_activations)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if vocab_size < 1:
        raise ValueError(f"hash_vocab_size={vocab_size} must be ≥ 1")
    if not 1 <= num_activations <= vocab_size:
        raise ValueError(f"num_activations={num_activations} must be in [1, hash_vocab_size={vocab_size}] "
                         "(m distinct rows per trigram are drawn out of v)")
    if not 0 <= num_lowercase_activations <= num_activations:
        raise ValueError(f"num_lowercase_activations={num_lowercase_activations} must be in "
                         f"[0, num_activations={num_activations}]")
    if hash_scheme not in HASH_SCHEMES:
        raise ValueError(f"unknown hash_scheme {hash_scheme!r}; use one of {HASH_SCHEMES}")
    if trigram_unit not in TRIGRAM_UNITS:
        raise ValueError(f"unknown trigram_unit {trigram_unit!r}; use one of {TRIGRAM_UNITS}")


def _md5_int(s: str) -> int:
    return int.from_bytes(hashlib.md5(s.encode("utf-8")).digest(), "big")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class TrigramHasher:
    """Maps words to their activation rows (lazy, cached per trigram; no 2^24-row table).

    Args:
        vocab_size: ``v``, rows of the embedding and head.
        num_activations: ``m``, rows per trigram (distinct).
        num_lowercase_activations: ``k``, of the ``m`` shared with the lowercased trigram.
        hash_scheme: ``"aa_md5"`` (checkpoint-compatible) or ``"fast"`` (vectorised splitmix64).
        trigram_unit: ``"byte"`` (UTF-8 byte trigrams, as the reference code) or ``"char"`` (code points).
        entire_words: hash every word whole instead of by trigrams.

    Example:
        >>> h = TrigramHasher(32000, 10, 2)
        >>> pattern, n_trigrams = h.word_pattern("Hello")
        >>> pattern.shape, n_trigrams
        ((50,), 5)
    """

    def __init__(self, vocab_size: int, num_activations: int, num_lowercase_activations: int = 0,
                 hash_scheme: str = "aa_md5", trigram_unit: str = "byte", entire_words: bool = False):
        validate_hash_params(vocab_size, num_activations, num_lowercase_activations, hash_scheme, trigram_unit)
        self.v, self.m, self.k = vocab_size, num_activations, num_lowercase_activations
        self.scheme, self.unit, self.entire_words = hash_scheme, trigram_unit, bool(entire_words)
        self._row_cache: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ trigrams
    def trigram_ids(self, word: str) -> np.ndarray:
        """Sorted unique trigram ids of ``" " + word + " "`` (int64, ``[T]``).

        Byte unit: ``b0 + 256*b1 + 65536*b2`` over the UTF-8 bytes; char unit: ``c0 | c1<<21 | c2<<42`` over code points.
        """
        padded = " " + word + " "
        if self.unit == "byte":
            a = np.frombuffer(padded.encode("utf-8"), dtype=np.uint8).astype(np.int64)
            ids = a[:-2] + (a[1:-1] << 8) + (a[2:] << 16)
        else:
            a = np.fromiter(map(ord, padded), dtype=np.int64, count=len(padded))
            ids = a[:-2] | (a[1:-1] << 21) | (a[2:] << 42)
        return np.unique(ids)

    def _lower_id(self, tid: int) -> int | None:
        """The lowercase trigram's id if case sharing applies to ``tid``, else None."""
        if self.unit == "byte":
            b = (tid & 255, (tid >> 8) & 255, tid >> 16)
            if not all(x in _ASCII_CASE for x in b):
                return None
            low = tuple(x + 32 if 65 <= x <= 90 else x for x in b)
            return None if low == b else low[0] + (low[1] << 8) + (low[2] << 16)
        cs = [chr(tid & 0x1FFFFF), chr((tid >> 21) & 0x1FFFFF), chr(tid >> 42)]
        low = [c.lower() for c in cs]
        if any(len(c) != 1 for c in low) or low == cs:
            return None
        return ord(low[0]) | (ord(low[1]) << 21) | (ord(low[2]) << 42)

    # ------------------------------------------------------------------ rows
    def _base_rows(self, ids: np.ndarray) -> np.ndarray:
        """Sorted rows without case sharing, ``[n, m]``."""
        n, m, v = len(ids), self.m, self.v
        out = np.empty((n, m), dtype=np.int64)
        if self.scheme == "aa_md5":
            for r, i in enumerate(ids.tolist()):
                row: list[int] = []
                for k in range(m):
                    j = 0
                    while True:
                        x = _md5_int(f"{i}_{k}_{j}") % v
                        if x not in row:
                            row.append(x)
                            break
                        j += 1
                out[r] = row
        else:
            base = ids.astype(np.uint64)
            for k in range(m):
                j = np.zeros(n, dtype=np.uint64)
                cand = (_splitmix64(base * np.uint64(1315423911) ^ _splitmix64(np.uint64(k) + (j << np.uint64(32))))
                        % np.uint64(v)).astype(np.int64)
                while True:
                    dup = (out[:, :k] == cand[:, None]).any(1) if k else np.zeros(n, dtype=bool)
                    if not dup.any():
                        break
                    j[dup] += np.uint64(1)
                    cand[dup] = (_splitmix64(base[dup] * np.uint64(1315423911)
                                             ^ _splitmix64(np.uint64(k) + (j[dup] << np.uint64(32))))
                                 % np.uint64(v)).astype(np.int64)
                out[:, k] = cand
        out.sort(axis=1)
        return out

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Activation rows ``[n, m]`` of trigram ids (with lowercase sharing; cached per trigram id)."""
        ids = np.asarray(ids, dtype=np.int64)
        cache = self._row_cache
        missing = [i for i in dict.fromkeys(ids.tolist()) if i not in cache]
        if missing:
            need = list(missing)
            lowers = {}
            if self.k:
                for i in missing:
                    low = self._lower_id(i)
                    if low is not None:
                        lowers[i] = low
                        if low not in cache:
                            need.append(low)
            need = list(dict.fromkeys(need))
            base = self._base_rows(np.array(need, dtype=np.int64))
            base_of = dict(zip(need, base))
            for low in lowers.values():  # the lowercase rows themselves have no case sharing
                cache.setdefault(low, base_of[low] if low in base_of else cache[low])
            for i in missing:
                row = base_of[i]
                if i in lowers:
                    low_row = cache[lowers[i]]
                    row = np.concatenate([row[: self.m - self.k], low_row[self.m - self.k:]])
                cache[i] = row
        if len(ids) == 0:
            return np.empty((0, self.m), dtype=np.int64)
        return np.stack([cache[i] for i in ids.tolist()])

    def whole_word_row(self, word: str) -> np.ndarray:
        """The ``m`` rows of a word hashed whole (special words; every word with ``entire_words``); no de-duplication."""
        m, k, v = self.m, self.k, self.v
        if self.scheme == "aa_md5":
            vals = [_md5_int(f"{word}_{i}") % v for i in range(m - k)]
            vals += [_md5_int(f"{word.lower()}_lower_{i}") % v for i in range(k)]
            return np.array(vals, dtype=np.int64)
        seeds = [(word, i) for i in range(m - k)] + [(word.lower() + "\x00lower", i) for i in range(k)]
        h = np.array([int.from_bytes(hashlib.blake2b(f"{w}".encode(), digest_size=8).digest(), "little")
                      for w, _ in seeds], dtype=np.uint64)
        idx = np.array([i for _, i in seeds], dtype=np.uint64)
        return (_splitmix64(h ^ _splitmix64(idx)) % np.uint64(v)).astype(np.int64)

    def word_pattern(self, word: str) -> tuple[np.ndarray, int]:
        """All activation ids of ``word`` with multiplicity, sorted (``[T*m]``), and its trigram count ``T``.

        The embedding sums the rows of these ids (duplicates count twice, as in the reference); the
        multi-label target and the decode pattern are their unique set. Special words count as one trigram.
        """
        if not isinstance(word, str) or not word:
            raise ValueError(f"word must be a non-empty str, got {word!r}")
        if self.entire_words or is_special_word(word):
            return np.sort(self.whole_word_row(word)), 1
        tids = self.trigram_ids(word)
        return np.sort(self.rows(tids).ravel()), len(tids)
