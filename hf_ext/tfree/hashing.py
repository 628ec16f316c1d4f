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
:class:`TrigramHasher.word_pattern` is cached per word by the tokenizer. :meth:`TrigramHasher.word_patterns` computes
many words at once (trigrams, rows and sorting in numpy; md5 only for trigrams never seen before, first draws batched):
what a first pass over new text costs.

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

from hf_ext.utils.validation import check_int, check_size

from .wordsplit import is_special_word

__all__ = ["HASH_SCHEMES", "TRIGRAM_UNITS", "TrigramHasher", "validate_hash_params"]

HASH_SCHEMES = ("aa_md5", "fast")
TRIGRAM_UNITS = ("byte", "char")
_ASCII_CASE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ")
_CASE_BYTE = np.zeros(256, dtype=bool)
_CASE_BYTE[list(_ASCII_CASE)] = True
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def validate_hash_params(vocab_size: int, num_activations: int, num_lowercase_activations: int, hash_scheme: str,
                         trigram_unit: str) -> None:
    """Raise ``TypeError``/``ValueError`` naming the bad value (v, m, k, scheme, unit).

    Args:
        vocab_size: ``v``, the hash vocabulary (rows of the embedding), in ``[1, 2**31 - 1]``.
        num_activations: ``m``, rows activated per trigram, in ``[1, v]``.
        num_lowercase_activations: ``k`` of the ``m`` rows taken from the lowercased trigram, in ``[0, m]``.
        hash_scheme: one of :data:`HASH_SCHEMES`.
        trigram_unit: ``"byte"`` (UTF-8 byte trigrams) or ``"char"`` (code points); :data:`TRIGRAM_UNITS`.
    """
    for name, value in (("hash_vocab_size", vocab_size), ("num_activations", num_activations),
                        ("num_lowercase_activations", num_lowercase_activations)):
        check_int(name, value)
    check_size("hash_vocab_size", vocab_size, max=2**31 - 1)  # hashes are taken modulo v in int64 arithmetic
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


try:  # CPython's own MD5 (HACL*): ~1.7x OpenSSL 3's on the short messages hashed here (its per-call setup dominates)
    from _md5 import md5 as _md5
except ImportError:  # a Python built without its builtin hashes
    _md5 = hashlib.md5


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` of an integer array by one sort (numpy 2's hash-based ``unique`` is ~30x slower at ~50k ints)."""
    a = np.sort(a)
    if len(a) < 2:
        return a
    first = np.empty(len(a), dtype=bool)
    first[0] = True
    np.not_equal(a[1:], a[:-1], out=first[1:])
    return a[first]


def _md5_int(s: str) -> int:
    return int.from_bytes(_md5(s.encode("utf-8")).digest(), "big")


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
        self._row_cache: dict[int, int] = {}  # trigram id -> slot of its row in self._row_store
        self._row_store = np.empty((1024, num_activations), dtype=np.int32)  # values < v <= 2**31 - 1

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
    def _md5_row(self, i: int) -> list[int]:
        """The aa_md5 row of trigram id ``i`` drawn one value at a time (rejection of repeats), unsorted."""
        row: list[int] = []
        for k in range(self.m):
            j = 0
            while True:
                x = _md5_int(f"{i}_{k}_{j}") % self.v
                if x not in row:
                    row.append(x)
                    break
                j += 1
        return row

    def _base_rows(self, ids: np.ndarray) -> np.ndarray:
        """Sorted rows without case sharing, ``[n, m]``."""
        ids = np.asarray(ids, dtype=np.int64)
        n, m, v = len(ids), self.m, self.v
        out = np.empty((n, m), dtype=np.int64)
        if n == 0:
            return out
        if self.scheme == "aa_md5":
            if v < 2**32:
                # first draws (j = 0) of every (trigram, k) in one pass; the 128-bit digest mod v in 32-bit limbs
                md5, tails = _md5, [f"_{k}_0".encode() for k in range(m)]
                heads = [str(i).encode() for i in ids.tolist()]
                digests = b"".join([md5(head + tail).digest() for head in heads for tail in tails])
                limbs = np.frombuffer(digests, dtype=">u4").reshape(n, m, 4).astype(np.uint64)
                r = np.zeros((n, m), dtype=np.uint64)
                for limb in range(4):
                    r = ((r << np.uint64(32)) + limbs[..., limb]) % np.uint64(v)
                out[:] = r.astype(np.int64)
                ordered = np.sort(out, axis=1)
                redo = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(1)) if m > 1 else []
            else:
                redo = range(n)
            for r_i in redo:  # a repeat among the first draws: the sequential rejection decides (rare for m ≪ v)
                out[r_i] = self._md5_row(int(ids[r_i]))
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

    def _lower_ids(self, ids: list[int]) -> list[int | None]:
        """:meth:`_lower_id` of many ids (vectorised for the byte unit)."""
        if self.unit != "byte":
            return [self._lower_id(i) for i in ids]
        a = np.asarray(ids, dtype=np.int64)
        b = np.stack([a & 255, (a >> 8) & 255, a >> 16])
        low = np.where((b >= 65) & (b <= 90), b + 32, b)
        shared = _CASE_BYTE[b].all(0) & (low != b).any(0)
        low_ids = low[0] + (low[1] << 8) + (low[2] << 16)
        return [int(x) if ok else None for x, ok in zip(low_ids.tolist(), shared.tolist())]

    def _store(self, ids: list[int], rows: np.ndarray) -> None:
        start = len(self._row_cache)
        need = start + len(ids)
        if need > len(self._row_store):
            grown = np.empty((max(need, 2 * len(self._row_store)), self.m), dtype=np.int32)
            grown[:start] = self._row_store[:start]
            self._row_store = grown
        self._row_store[start:need] = rows
        self._row_cache.update(zip(ids, range(start, need)))

    def _ensure(self, ids: list[int]) -> None:
        """Compute and cache the rows of the (unique) trigram ids that are not cached yet."""
        cache = self._row_cache
        missing = [i for i in ids if i not in cache]
        if not missing:
            return
        lowers = dict(zip(missing, self._lower_ids(missing))) if self.k else {}
        lowers = {i: low for i, low in lowers.items() if low is not None}
        need = list(dict.fromkeys(missing + [low for low in lowers.values() if low not in cache]))
        base = self._base_rows(np.array(need, dtype=np.int64))
        slot = dict(zip(need, range(len(need))))
        rows = base[[slot[i] for i in missing]]
        if lowers:  # the last k entries come from the lowercase trigram's row (which has no case sharing itself)
            shared = [r for r, i in enumerate(missing) if i in lowers]
            low_rows = np.stack([base[slot[lowers[i]]] if lowers[i] in slot else self._row_store[cache[lowers[i]]]
                                 for i in (missing[r] for r in shared)])
            rows[shared, self.m - self.k:] = low_rows[:, self.m - self.k:]
        asked = set(missing)
        extra = [i for i in need if i not in asked]  # lowercase rows computed on the way
        self._store(missing, rows)
        if extra:
            self._store(extra, base[[slot[i] for i in extra]])

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Activation rows ``[n, m]`` (int64) of trigram ids (with lowercase sharing; cached per trigram id)."""
        return self._rows(ids).astype(np.int64)

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """:meth:`rows` as stored (int32)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return np.empty((0, self.m), dtype=self._row_store.dtype)
        unique, inverse = np.unique(ids, return_inverse=True)
        keys = unique.tolist()
        self._ensure(keys)
        cache = self._row_cache
        slots = np.fromiter((cache[i] for i in keys), dtype=np.int64, count=len(keys))
        return self._row_store[slots[inverse.reshape(-1)]]

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

    def word_patterns(self, words: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`word_pattern` of many words at once, as CSR: ``(indptr [n+1], ids [nnz], trigram counts [n])``.

        Equal to calling :meth:`word_pattern` per word; the trigrams of all words are extracted, de-duplicated, hashed
        (new ones only) and sorted per word in numpy.

        Example:
            >>> h = TrigramHasher(8000, 10)
            >>> indptr, ids, n_tri = h.word_patterns(["Hello", "<|ws|>", "ab"])
            >>> np.diff(indptr).tolist(), n_tri.tolist()
            ([50, 10, 20], [5, 1, 2])
        """
        for w in words:
            if not isinstance(w, str) or not w:
                raise ValueError(f"word must be a non-empty str, got {w!r}")
        starts, lens, data, n_tri = self._word_patterns(words)
        indptr = np.zeros(len(words) + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        positions = np.repeat(starts - indptr[:-1], lens) + np.arange(int(indptr[-1]), dtype=np.int64)
        return indptr, data[positions].astype(np.int64), n_tri

    def _word_patterns(self, words: list[str], whole: list[int] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`word_patterns` of words known to be non-empty strings (the tokenizer's own split pieces), laid out
        for speed: ``(starts [n], lens [n], data [nnz] int32, trigram counts [n])``, word ``i``'s sorted pattern
        being ``data[starts[i]: starts[i] + lens[i]]``. The words are laid out grouped by trigram count, so that
        each group is sorted in place as one ``[words, t·m]`` block (no output-sized gathers). ``whole``: the
        indices of the special words, where the caller knows them."""
        n, m = len(words), self.m
        if self.entire_words:
            whole = list(range(n))
        elif whole is None:  # (the first-character test spares a call per word)
            whole = [i for i, w in enumerate(words) if w[0] == "<" and is_special_word(w)]
        split = None  # every word
        split_words = words
        if whole:
            keep = np.ones(n, dtype=bool)
            keep[whole] = False
            split = np.flatnonzero(keep).tolist()
            split_words = [words[i] for i in split]
        starts = np.zeros(n, dtype=np.int64)
        lens = np.full(n, m, dtype=np.int64)
        n_tri = np.ones(n, dtype=np.int64)
        flat = np.empty(0, dtype=self._row_store.dtype)
        if split_words:
            owner, tids = self._word_trigrams(split_words)
            counts = np.bincount(owner, minlength=len(split_words))
            order = np.argsort(counts, kind="stable")  # words grouped by trigram count
            grouped = counts[order]
            group_first = np.cumsum(grouped) - grouped  # each word's first trigram in the grouped layout
            first = np.cumsum(counts) - counts  # ... in the owner-major list of _word_trigrams
            perm = np.arange(len(tids), dtype=np.int64) + np.repeat(first[order] - group_first, grouped)
            flat = self._rows(tids[perm]).reshape(-1)  # [P·m], word after word in the grouped order
            edges = [0, *(np.flatnonzero(np.diff(grouped)) + 1).tolist(), len(grouped)]
            for a, b in zip(edges[:-1], edges[1:]):  # words a..b-1 all have t trigrams: one block, sorted in place
                t = int(grouped[a])
                lo = int(group_first[a]) * m
                flat[lo: lo + (b - a) * t * m].reshape(b - a, t * m).sort(axis=1)
            where = np.empty(len(split_words), dtype=np.int64)
            where[order] = group_first * m
            idx = slice(None) if split is None else split
            starts[idx], lens[idx], n_tri[idx] = where, counts * m, counts
        if not whole:
            return starts, lens, flat, n_tri
        rows = np.sort(np.stack([self.whole_word_row(words[i]) for i in whole]), axis=1).astype(flat.dtype)
        starts[whole] = len(flat) + m * np.arange(len(whole), dtype=np.int64)
        return starts, lens, np.concatenate([flat, rows.reshape(-1)]), n_tri

    def _word_trigrams(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(owner, trigram id)`` pairs of the padded words, unique per word, sorted by word then id."""
        padded = " " + "  ".join(words) + " "  # = the concatenation of " " + w + " "
        if self.unit == "byte":
            buf = np.frombuffer(padded.encode("utf-8"), dtype=np.uint8).astype(np.int64)
            blen = np.fromiter(map(len, map(str.encode, words)), dtype=np.int64, count=len(words)) + 2
        else:
            buf = np.frombuffer(padded.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
            blen = np.fromiter(map(len, words), dtype=np.int64, count=len(words)) + 2
        per_word = blen - 2  # trigram positions per word (≥ 1: a padded word has ≥ 3 units)
        owner = np.repeat(np.arange(len(words), dtype=np.int64), per_word)
        pos = np.arange(len(owner), dtype=np.int64) + np.repeat(np.cumsum(blen) - blen - (np.cumsum(per_word)
                                                                                          - per_word), per_word)
        if self.unit == "byte":
            key = _sorted_unique((owner << 24) | buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16))
            return key >> 24, key & 0xFFFFFF
        tids = buf[pos] | (buf[pos + 1] << 21) | (buf[pos + 2] << 42)
        order = np.lexsort((tids, owner))
        owner, tids = owner[order], tids[order]
        first = np.ones(len(tids), dtype=bool)
        first[1:] = (owner[1:] != owner[:-1]) | (tids[1:] != tids[:-1])
        return owner[first], tids[first]
