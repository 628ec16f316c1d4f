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

from hf_ext.registry import AutoClasses, register_component
from hf_ext.utils.imports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "configuration_tfree": ["TFreeConfig"],
    "tokenization_tfree": ["TFreeTokenizer"],
    "modeling_tfree": ["TFreeForCausalLM", "TFreeCausalLMOutput"],
    "loss": ["sparse_bce_loss"],
    "hashing": ["TrigramHasher"],
    "wordsplit": ["text_to_words", "words_to_text"],
    "conversion": ["convert_to_tfree", "convert_reference_checkpoint"],
    "training": ["TFreeDataCollator", "tiny_tfree", "train_tfree"],
})

register_component(
    name="tfree", title="T-FREE", order=20, package=__name__,
    summary="T-FREE: tokenizer-free sparse trigram embeddings",
    auto=[AutoClasses("tfree", config=".configuration_tfree:TFreeConfig",  # backbone: TFreeConfig.get_text_config()
                      models={"AutoModelForCausalLM": ".modeling_tfree:TFreeForCausalLM"},
                      tokenizer=".tokenization_tfree:TFreeTokenizer")],
    cli=".cli", tour=".tour", reproduction="hf_ext.reproduce.tfree", cards=["tfree"], extras=["tfree", "plots"], notebook="03_tfree.ipynb",
)
