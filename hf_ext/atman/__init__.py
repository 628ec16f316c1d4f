"""AtMan: explanations and steering by attention manipulation, for any transformers causal LM (and Llava-style VLMs).

Public API:
    * :class:`AtManExplainer` / :class:`Explanation` — relevance of prompt units for a target (Δ cross-entropy or
      probability, optionally contrastive: "why A rather than B"); aggregation, JSON save/load, HTML (notebooks too).
    * :func:`explain_dataset` — a JSONL file of items → ``explanations.jsonl`` + HTML pages and an index.
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

from __future__ import annotations

from hf_ext.registry import register_component
from hf_ext.utils.imports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "batch": ["explain_dataset", "read_items"],
    "controls": ["AtManControl", "controls_to_weights", "generate_steered", "steering"],
    "explainer": ["MODES", "AtManExplainer"],
    "explanation": ["STEPS", "Explanation"],
    "scorer": ["AtManScorer"],
    "faithfulness": ["deletion_auc", "deletion_curve"],
    "units": ["Unit", "char_spans", "text_units", "tile_units"],
})

register_component(
    name="atman", title="AtMan", order=60, package=__name__,
    summary="AtMan: explanations by attention manipulation",
    cli=".cli", tour=".tour", reproduction="hf_ext.reproduce.atman", extras=["plots", "eval"], notebook="07_atman.ipynb",
)
