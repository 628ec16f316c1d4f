"""Word splitting, whitespace rules and the exact text round trip (spec tfree.md §2, §10 oracles)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_ext.tfree.tokenization_tfree import TFreeTokenizer
from hf_ext.tfree.wordsplit import text_to_words, words_to_text

ORACLES = [
    ("Hello World!", ["Hello", "World", "!"]),
    ("Hello<|startoftext|> World!", ["Hello", "<|startoftext|>", "<|ws|>", "World", "!"]),
    ("Hello\nWorld!", ["Hello", "<|\n|>", "World", "!"]),
    ("This is a <|test with some numbers 1234.",
     ["This", "is", "a", "<", "|", "<|no_ws|>", "test", "with", "some", "numbers", "<|ws|>", "1", "2", "3", "4", "."]),
    ("  two  spaces", ["<|2<-ws->|>", "two", "<|2<-ws->|>", "spaces"]),
    ("a\n\n\nb", ["a", "<|2<-\n->|>", "<|\n|>", "b"]),
    ("don't stop", ["don", "'", "t", "stop"]),
    ("x=1+2", ["x", "=", "1", "+", "2"]),
    ("Straße über", ["Straße", "über"]),
]


@pytest.mark.parametrize("text, words", ORACLES)
def test_reference_word_split_table(text, words):
    assert text_to_words(text, parse_special=True) == words
    assert words_to_text(words) == text


def test_factorial_whitespace_tokens():
    assert text_to_words(" " * 7) == ["<|4<-ws->|>", "<|2<-ws->|>", "<|ws|>"]
    assert text_to_words("a" + " " * 17 + "b") == ["a"] + ["<|4<-ws->|>"] * 4 + ["<|ws|>", "b"]
    assert text_to_words("\n" * 6) == ["<|4<-\n->|>", "<|2<-\n->|>"]


def test_tokenizer_word_counts_and_training_positions():
    tok = TFreeTokenizer(grow_dictionary=True)
    assert len(tok("Hello world!").input_ids) == 3
    acts = tok.encode_activations("Hello world!")["activation_ids"]
    assert acts.shape[1] - 1 == 2  # positions that predict a next word (the shift)


TEXTS = [
    "", " ", "\n", "\r\n", "a\r\nb", "tab\tseparated\tvalues", "non\u00a0breaking\u2009thin\u3000ideographic",
    "line\u2028separator\u2029paragraph", "The quick brown fox jumps over the lazy dog.",
    "Größere Übungen für Straßenbahnfahrer: 3,5 km!", "Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "مرحبا بالعالم، كيف حالك؟", "这是一个测试。我们喜欢机器学习！", "emoji 👍🏽 and 👨‍👩‍👧 family 🇩🇪",
    "control\x00chars\x07\x1b[0m\x7f", "a" * 5000, "x" + " " * 33 + "y\n\n\n\n\n\nz   ", "<|endoftext|>",
    "fake <|ws|> and <|no_ws|> and <|\n|> tokens", "e\u0301 combining", "snake_case_name = value_1",
    "  leading and trailing  ", "((nested)) [brackets] {braces} <angle>", "1234567890", "'quoted' \"double\"",
]


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_examples(text):
    tok = TFreeTokenizer(grow_dictionary=True)
    ids = tok(text).input_ids
    assert tok.decode(ids) == text
    assert words_to_text(text_to_words(text, parse_special=False)) == text
    assert tok.fast_tokenize([text])[0] == tok.tokenize(text)


def test_special_looking_text_is_escaped_by_default():
    tok = TFreeTokenizer()
    assert "<|endoftext|>" not in tok.tokenize("a <|endoftext|> b")
    assert "<|endoftext|>" in TFreeTokenizer(parse_special=True).tokenize("a <|endoftext|> b")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_round_trip_property_any_unicode(text):
    assert words_to_text(text_to_words(text, parse_special=False)) == text


_TOK = TFreeTokenizer(hash_vocab_size=512, num_activations=4, grow_dictionary=True)
_ALPHABET = st.sampled_from(list(" \n\t\r\u00a0\u3000.,;:!?'\"()[]<>|_-=+*/\\#@%&~^$0123456789aZéßжع中👍"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=_ALPHABET, max_size=40), min_size=1, max_size=4))
def test_vectorised_split_equals_reference_split(texts):
    assert _TOK.fast_tokenize(texts) == [text_to_words(t, parse_special=False) for t in texts]
    for t in texts:
        assert _TOK.decode(_TOK(t).input_ids) == t


_TOK_SPECIAL = TFreeTokenizer(hash_vocab_size=512, num_activations=4, parse_special=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(list(" \n<|>ab Zéж1.") + ["<|ws|>", "<|endoftext|>", "<|a b|>"]),
                         max_size=20).map("".join), min_size=1, max_size=4))
def test_vectorised_split_equals_reference_split_with_special_words(texts):
    assert _TOK_SPECIAL.fast_tokenize(texts) == [text_to_words(t, parse_special=True) for t in texts]
