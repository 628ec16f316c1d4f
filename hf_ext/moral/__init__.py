"""MoralDirection: moral scores from any (multilingual) sentence-embedding model, with MFQ evaluation.

Public API (imported lazily: ``hf_ext.moral.cli`` must not import numpy/torch):
    * :class:`MoralDirection` — fit (64 atomic verbs × 10 question templates or translated questions, PCA,
      explicit orientation kill < 0, max-|score| normalisation, no clipping), score, save/load.
    * :func:`cached_direction` — fit-and-cache for any encoder; :meth:`MoralDirection.bundled` — the shipped
      direction of all-MiniLM-L6-v2 (offline).
    * :func:`as_encoder`, :class:`MeanPoolingEncoder`, :class:`SentenceTransformerEncoder` — encoders.
    * :mod:`~hf_ext.moral.resources` — shipped data; :mod:`~hf_ext.moral.mfq` — MFQ;
      :mod:`~hf_ext.moral.evaluation` — user-study correlation and plots.

Example:
    >>> from hf_ext.moral import MoralDirection
    >>> md = MoralDirection.bundled()
    >>> md.score(["kill people", "help old people"], use_templates=True)  # negative: bad, positive: good
    array([-0.86..., 0.20...])
"""

from __future__ import annotations

from hf_ext.registry import register_component
from hf_ext.utils.imports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "direction": ["MoralDirection", "BUNDLED_DIRECTION"],
    "cache": ["cached_direction", "default_cache_dir"],
    "encoders": ["as_encoder", "bundled_encoder", "bundled_model_path", "MeanPoolingEncoder",
                 "SentenceTransformerEncoder", "CallableEncoder", "SentenceEncoder"],
    "evaluation": ["correlate", "user_study_correlation", "plot_pc1", "plot_user_study", "plot_mfq"],
    "mfq": ["score_mfq", "foundation_scores"],
    "measurement": ["measure_scorings"],
}, submodules=("direction", "encoders", "evaluation", "measurement", "mfq", "resources", "cli"))

register_component(
    name="moral", title="MoralDirection", order=90, package=__name__,
    summary="MoralDirection: moral scores from sentence embeddings",
    cli=".cli", tour=".tour", reproduction="hf_ext.reproduce.moral", cards=["moral_direction"], extras=["moral", "eval", "plots"], notebook="11_moral.ipynb",
)
