"""T-FREE: tokenizer-free sparse trigram embeddings (Deiseroth et al., EMNLP 2024) for transformers.

``TFreeTokenizer`` (words → hashed trigram activation ids; exact text round trip), ``TFreeConfig`` and
``TFreeForCausalLM`` (any decoder backbone, sparse embedding/head/loss, dictionary decoding with ``generate()``),
``convert_to_tfree`` for existing causal LMs. Names are imported lazily (torch-free package import).

Example:
    >>> from hf_ext.tfree import TFreeTokenizer
    >>> TFreeTokenizer().tokenize("Hello world!")
    ['Hello', 'world', '!']
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "TFreeConfig": "configuration_tfree",
    "TFreeTokenizer": "tokenization_tfree",
    "TFreeForCausalLM": "modeling_tfree",
    "TFreeCausalLMOutput": "modeling_tfree",
    "sparse_bce_loss": "modeling_tfree",
    "TrigramHasher": "hashing",
    "text_to_words": "wordsplit",
    "words_to_text": "wordsplit",
    "convert_to_tfree": "conversion",
    "convert_reference_checkpoint": "conversion",
    "TFreeDataCollator": "training",
    "tiny_tfree": "training",
    "train_tfree": "training",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_ext.tfree' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
