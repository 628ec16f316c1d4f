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
    >>> md = MoralDirection.bundled()  # doctest: +SKIP
    >>> md.score(["kill people", "help old people"], use_templates=True)  # doctest: +SKIP
"""

import importlib
from typing import Any

_EXPORTS = {
    "MoralDirection": "direction", "cached_direction": "direction", "default_cache_dir": "direction",
    "BUNDLED_DIRECTION": "direction",
    "as_encoder": "encoders", "bundled_encoder": "encoders", "bundled_model_path": "encoders",
    "MeanPoolingEncoder": "encoders", "SentenceTransformerEncoder": "encoders", "CallableEncoder": "encoders",
    "SentenceEncoder": "encoders",
    "correlate": "evaluation", "user_study_correlation": "evaluation", "plot_pc1": "evaluation",
    "plot_user_study": "evaluation", "plot_mfq": "evaluation",
    "score_mfq": "mfq", "foundation_scores": "mfq",
    "measure_scorings": "measurement",
}
_SUBMODULES = ("direction", "encoders", "evaluation", "measurement", "mfq", "resources", "cli")

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
