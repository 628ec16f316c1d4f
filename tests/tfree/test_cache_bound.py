"""Issue 19 item 6: the T-FREE tokenizer's pattern cache is bounded (configurable, saved), eviction changes no
output, and a decode dictionary of more than 1,024 new words works (the stale-array IndexError)."""

from __future__ import annotations

import string

import numpy as np
import pytest

from hf_ext.tfree import TFreeTokenizer
from hf_ext.tfree.tokenization_tfree import DEFAULT_MAX_CACHE_WORDS


def _word(i: int) -> str:
    out = []
    while True:
        i, r = divmod(i, 26)
        out.append(string.ascii_lowercase[r])
        if i == 0:
            return "q" + "".join(out)


def _texts(start: int, stop: int, per_text: int = 50) -> list[str]:
    return [" ".join(_word(j) for j in range(i, min(i + per_text, stop))) for i in range(start, stop, per_text)]


def test_50k_new_words_keep_the_cache_within_its_bound():
    bound, per_call = 5_000, 2_000  # words per encode call: the cache may pass the bound by one call's new words
    tok = TFreeTokenizer(hash_vocab_size=2048, num_activations=4, max_cache_words=bound)
    seen = 0
    for start in range(0, 50_000, per_call):
        tok.encode_activations(_texts(start, start + per_call))
        seen = max(seen, tok.cache_size)
        # a word and its split piece with the following space are two entries; + the special words of a fresh cache
        assert tok.cache_size <= bound + 2 * per_call + 64
    assert seen > bound  # the bound was reached (so eviction really happened)
    assert len(tok) == len(TFreeTokenizer(hash_vocab_size=2048, num_activations=4))  # dictionary untouched


def test_eviction_changes_no_output():
    small = TFreeTokenizer(hash_vocab_size=2048, num_activations=4, max_cache_words=300)
    large = TFreeTokenizer(hash_vocab_size=2048, num_activations=4)
    for start in range(0, 3_000, 500):
        texts = _texts(start, start + 500) + ["the cat sat on the mat", "Hello,  world!\n\nagain"]
        a = small.encode_activations(texts, return_tensors="np")
        b = large.encode_activations(texts, return_tensors="np")
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(small.word_pattern("qzz"), large.word_pattern("qzz"))


def test_bound_is_validated_saved_and_reloaded(tmp_path):
    assert TFreeTokenizer().max_cache_words == DEFAULT_MAX_CACHE_WORDS
    for bad in (0, -1, 2.5, True, "10"):
        with pytest.raises(ValueError, match="max_cache_words must be a positive int"):
            TFreeTokenizer(max_cache_words=bad)
    TFreeTokenizer(max_cache_words=1234).save_pretrained(tmp_path)
    assert TFreeTokenizer.from_pretrained(tmp_path).max_cache_words == 1234


def test_decode_dictionary_of_more_than_1024_new_words():
    from hf_ext.tfree.training import tiny_tfree

    model, tok = tiny_tfree("llama", hidden_size=32, hash_vocab_size=1024, num_activations=4, words=["the"])
    words = [_word(i) for i in range(3_000)]
    model.set_decode_dictionary(words)
    tok.add_words(words)
    ids = tok(" ".join(words[-5:])).input_ids
    assert tok.decode(ids) == " ".join(words[-5:])
