"""AtMan: explanations and steering by attention manipulation, for any transformers causal LM (and Llava-style VLMs).

Public API:
    * :class:`AtManExplainer` / :class:`Explanation` — relevance of prompt units for a target (Δ cross-entropy).
    * :class:`AtManControl`, :func:`controls_to_weights`, :func:`steering`, :func:`generate_steered` — suppress or
      amplify prompt spans during ``generate()`` (KV cache on).
    * :func:`deletion_curve` / :func:`deletion_auc` — faithfulness (deletion AUC vs random order).

Example:
    >>> from hf_ext.atman import AtManExplainer
    >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
    >>> exp = AtManExplainer(tiny_causal_lm(), tiny_tokenizer(), progress=False).explain("a cat", " sat")
    >>> len(exp.units) == len(exp.tokens)
    True
"""

import importlib
from typing import Any

# Lazy: ``hf_ext.atman.cli`` is imported by ``hf-ext --help``, which must not import torch.
_EXPORTS = {
    "AtManControl": "controls", "controls_to_weights": "controls", "generate_steered": "controls", "steering": "controls",
    "MODES": "explainer", "AtManExplainer": "explainer", "Explanation": "explanation", "AtManScorer": "scorer",
    "deletion_auc": "faithfulness", "deletion_curve": "faithfulness",
    "Unit": "units", "char_spans": "units", "text_units": "units", "tile_units": "units",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MODES", "AtManControl", "AtManExplainer", "AtManScorer", "Explanation", "Unit", "char_spans", "controls_to_weights",
    "deletion_auc", "deletion_curve", "generate_steered", "steering", "text_units", "tile_units",
]
