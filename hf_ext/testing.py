"""Test kit: the seeded tiny models of :mod:`hf_ext.tiny`, under the name tests and notebooks import.

Library code imports :mod:`hf_ext.tiny` itself; this module only re-exports it, so ``from hf_ext.testing import
tiny_causal_lm`` keeps working in tests, notebooks and user scripts.

Example:
    >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
    >>> model = tiny_causal_lm("llama")
    >>> model(tiny_tokenizer()("hi", return_tensors="pt").input_ids).logits.shape[-1]
    128
"""

from __future__ import annotations

from .tiny import *  # noqa: F403 - the test kit is the tiny-model factories
from .tiny import __all__  # noqa: F401
