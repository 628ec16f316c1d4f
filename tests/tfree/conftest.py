"""Tiny seeded T-FREE models shared by the tfree tests (built once per session)."""

from __future__ import annotations

import pytest

from hf_ext.tfree.training import tiny_tfree

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ate", "a", "bone", "aa", "aaa", "Hello", "hello", "world", "."]
_CACHE: dict = {}


def tfree_model(family: str = "llama", **kwargs):
    key = (family, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        kwargs = {"hash_vocab_size": 1024, "num_activations": 4, **kwargs}
        _CACHE[key] = tiny_tfree(family, hidden_size=32, words=WORDS, **kwargs)
    return _CACHE[key]


@pytest.fixture(scope="session")
def llama_tfree():
    return tfree_model("llama")
