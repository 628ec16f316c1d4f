"""Byte trigrams and the md5 hash rows against the spec's oracle values (tfree.md §3, §4, §10)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from hf_ext.tfree.hashing import TrigramHasher

HELLO = {b" He": 6637600, b"Hel": 7103816, b"ell": 7105637, b"llo": 7302252, b"lo ": 2125676}
ROWS_8000 = {
    b" He": [764, 1701, 2238, 3605, 5910, 5911, 6000, 6257, 6940, 7616],
    b"Hel": [454, 612, 1406, 2267, 4027, 4207, 4961, 5719, 6240, 7732],
    b"ell": [642, 3129, 3891, 5031, 5302, 6072, 6198, 6907, 7469, 7915],
    b"llo": [48, 1355, 1385, 1414, 2760, 4034, 5136, 5938, 6410, 7079],
    b"lo ": [89, 752, 1275, 1952, 3025, 4846, 5663, 5839, 7114, 7790],
}
ROWS_32000 = {
    b" He": [3605, 6000, 6940, 8764, 13910, 15616, 17701, 22257, 26238, 29911],
    b"Hel": [2267, 4207, 4961, 6240, 7732, 13719, 16612, 20027, 24454, 25406],
    b"ell": [642, 3891, 6198, 7469, 11129, 13302, 14907, 21031, 22072, 31915],
    b"llo": [48, 1385, 7079, 9355, 10760, 12034, 13136, 14410, 17414, 29938],
    b"lo ": [1952, 3025, 5663, 7790, 9275, 12846, 24089, 24752, 29839, 31114],
}


def _tid(b: bytes) -> int:
    return b[0] + 256 * b[1] + 65536 * b[2]


def test_trigram_ids_of_hello():
    h = TrigramHasher(8000, 10)
    assert {_tid(t) for t in HELLO} == set(HELLO.values())
    assert sorted(h.trigram_ids("Hello").tolist()) == sorted(HELLO.values())


@pytest.mark.parametrize("v, table", [(8000, ROWS_8000), (32000, ROWS_32000)])
def test_md5_rows_k0(v, table):
    h = TrigramHasher(v, 10, 0)
    for tri, row in table.items():
        assert h.rows(np.array([_tid(tri)]))[0].tolist() == row


def test_md5_rows_lowercase_sharing_k2():
    h = TrigramHasher(32000, 10, 2)
    he = h.rows(np.array([_tid(b" He")]))[0].tolist()
    assert he == [3605, 6000, 6940, 8764, 13910, 15616, 17701, 22257, 22896, 29430]
    assert sorted(h.rows(np.array([_tid(b" he")]))[0].tolist()) == [711, 741, 2328, 3032, 3420, 8249, 9441, 21499,
                                                                     22896, 29430]
    # no case sharing for trigrams with digits / punctuation / non-ASCII bytes
    h0 = TrigramHasher(32000, 10, 0)
    for tri in (b" H1", b"H!e", "Hé".encode()[:3]):
        assert h.rows(np.array([_tid(tri)]))[0].tolist() == h0.rows(np.array([_tid(tri)]))[0].tolist()


def test_whole_word_hash_of_special_word():
    h = TrigramHasher(32000, 10, 2)
    assert h.whole_word_row("<|endoftext|>").tolist() == [3660, 30793, 14822, 5862, 541, 29684, 15568, 23924, 5552, 26926]
    pattern, n = h.word_pattern("<|endoftext|>")
    assert n == 1 and sorted(pattern.tolist()) == sorted(h.whole_word_row("<|endoftext|>").tolist())


def test_multibyte_trigram_counts():
    h = TrigramHasher(8000, 10)
    assert len(h.trigram_ids("ü")) == 2 and len(h.trigram_ids("Straße")) == 7
    assert len(TrigramHasher(8000, 10, trigram_unit="char").trigram_ids("Straße")) == 6


def _naive_md5_row(i, m, v):
    row = []
    for k in range(m):
        j = 0
        while True:
            x = int(hashlib.md5(f"{i}_{k}_{j}".encode()).hexdigest(), 16) % v
            if x not in row:
                row.append(x)
                break
            j += 1
    return sorted(row)


@pytest.mark.parametrize("scheme", ["aa_md5", "fast"])
@pytest.mark.parametrize("v, m, k", [(8000, 10, 0), (64, 10, 2), (10, 10, 0), (512, 4, 4)])
def test_structural_rows_distinct_in_range(scheme, v, m, k):
    h = TrigramHasher(v, m, k, hash_scheme=scheme)
    ids = np.random.default_rng(0).integers(0, 2**24, 200)
    rows = h._base_rows(ids)
    assert rows.shape == (200, m) and rows.min() >= 0 and rows.max() < v
    assert all(len(set(r)) == m for r in rows.tolist())
    if scheme == "aa_md5":
        assert rows[:5].tolist() == [_naive_md5_row(int(i), m, v) for i in ids[:5]]
    full = h.rows(ids)
    assert full.min() >= 0 and full.max() < v


def test_word_pattern_is_sum_of_trigram_rows():
    h = TrigramHasher(8000, 10, 2)
    pattern, n = h.word_pattern("Hello")
    rows = [h.rows(np.array([i]))[0] for i in h.trigram_ids("Hello")]
    assert n == 5 and sorted(pattern.tolist()) == sorted(np.concatenate(rows).tolist())
    # Hello and hello share k/m of each letter trigram's rows
    shared = set(h.word_pattern("hello")[0].tolist()) & set(pattern.tolist())
    assert len(shared) >= 2


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(vocab_size=8, num_activations=9), ValueError, "num_activations=9"),
    (dict(vocab_size=8000, num_activations=4, num_lowercase_activations=5), ValueError, "num_lowercase_activations=5"),
    (dict(vocab_size=8000, num_activations=4, hash_scheme="sha1"), ValueError, "unknown hash_scheme 'sha1'"),
    (dict(vocab_size=8000, num_activations=4, trigram_unit="word"), ValueError, "trigram_unit"),
    (dict(vocab_size="8000", num_activations=4), TypeError, "hash_vocab_size must be an int"),
    (dict(vocab_size=8000, num_activations=4.0), TypeError, "num_activations must be an int"),
])
def test_bad_hash_parameters(kwargs, err, match):
    with pytest.raises(err, match=match):
        TrigramHasher(**kwargs)


def _naive_pattern(word: str, v: int, m: int, k: int) -> list[int]:
    """Spec §3-§4 written out: byte trigrams of " w " (a set), md5 rows, lowercase sharing of [a-zA-Z ] trigrams."""
    padded = (" " + word + " ").encode("utf-8")
    out = []
    for tri in {padded[i:i + 3] for i in range(len(padded) - 2)}:
        row = _naive_md5_row(tri[0] + 256 * tri[1] + 65536 * tri[2], m, v)
        low = tri.lower()
        if k and low != tri and all(c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ " for c in tri):
            row = row[: m - k] + _naive_md5_row(low[0] + 256 * low[1] + 65536 * low[2], m, v)[m - k:]
        out += row
    return sorted(out)


_WORD_ALPHABET = "abcXYZ éüß漢1_"


@pytest.mark.parametrize("v, m, k", [(8000, 10, 2), (48, 6, 3), (12, 10, 0)])
def test_batched_word_patterns_equal_the_spec(v, m, k):
    """word_patterns (one batch: trigrams, first md5 draws and sorting vectorised) == the spec per word."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=15, deadline=None)
    @given(st.lists(st.text(alphabet=_WORD_ALPHABET, min_size=1, max_size=7), min_size=1, max_size=12))
    def check(words):
        h = TrigramHasher(v, m, k)
        indptr, data, n_tri = h.word_patterns(words)
        for i, w in enumerate(words):
            assert data[indptr[i]:indptr[i + 1]].tolist() == _naive_pattern(w, v, m, k)
            assert n_tri[i] == len({(" " + w + " ").encode()[j:j + 3] for j in range(len((" " + w + " ").encode()) - 2)})

    check()


def test_batched_word_patterns_special_words_and_char_unit():
    h = TrigramHasher(1000, 4, 1, trigram_unit="char")
    words = ["<|ws|>", "Straße", "ab", "<|endoftext|>", "漢字"]
    indptr, data, n_tri = h.word_patterns(words)
    for i, w in enumerate(words):
        pattern, t = TrigramHasher(1000, 4, 1, trigram_unit="char").word_pattern(w)  # fresh: per-word path
        assert data[indptr[i]:indptr[i + 1]].tolist() == sorted(pattern.tolist()) and n_tri[i] == t
    assert n_tri.tolist() == [1, 6, 2, 1, 2]  # char unit: " Straße " has 6 character trigrams
    with pytest.raises(ValueError, match="non-empty str"):
        h.word_patterns(["ok", ""])
