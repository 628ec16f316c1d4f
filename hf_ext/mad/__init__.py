"""MAD (Poli, Thomas, Nguyen et al., ICML 2024): the six synthetic capability tasks as Hugging Face datasets, the
models for them (striped hybrids incl. Hyena and Mamba), ``mad_accuracy`` and the benchmark runner.

- :mod:`~hf_ext.mad.generators` (pure numpy): ``madlab`` mode byte-identical to ``athms/mad-lab``, ``fast`` mode
  vectorised with counter-based seeds.
- :mod:`~hf_ext.mad.config`: :class:`MADTaskConfig`, :func:`baseline`, :func:`benchmark_grid` (66 settings).
- :mod:`~hf_ext.mad.builder` / :mod:`~hf_ext.mad.api`: :class:`MADBuilder` (a ``datasets`` builder), :func:`load_mad`,
  :func:`export_parquet` / :func:`push_mad_to_hub` with a dataset card, :func:`from_madlab_npy`.
- :class:`MADCollator` (no silent double shift), :func:`mad_accuracy` (macro = mad-lab, micro).
- :mod:`~hf_ext.mad.models`: :class:`MADStackConfig`, :class:`MADStackForCausalLM`, :class:`MADAutoEncoder`,
  :class:`CausalLMAutoEncoder`; :mod:`~hf_ext.mad.bench`: :func:`run_benchmark`; :mod:`~hf_ext.mad.report`.

Names are resolved lazily: ``import hf_ext.mad`` imports neither numpy-heavy code nor torch.

Example:
    >>> from hf_ext.mad import benchmark_grid, baseline
    >>> len(benchmark_grid()), baseline("CR").name
    (66, 'CR_vs-16_sl-128_ntr-12800')
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MADTaskConfig": "hf_ext.mad.config",
    "baseline": "hf_ext.mad.config",
    "benchmark_grid": "hf_ext.mad.config",
    "config_from_name": "hf_ext.mad.config",
    "TASKS": "hf_ext.mad.config",
    "SHORTHANDS": "hf_ext.mad.config",
    "GENERATOR_VERSION": "hf_ext.mad.config",
    "generate": "hf_ext.mad.generators",
    "generate_splits": "hf_ext.mad.generators",
    "arrays_sha256": "hf_ext.mad.generators",
    "vocab_layout": "hf_ext.mad.generators",
    "MADBuilder": "hf_ext.mad.builder",
    "MADBuilderConfig": "hf_ext.mad.builder",
    "load_mad": "hf_ext.mad.api",
    "export_parquet": "hf_ext.mad.api",
    "push_mad_to_hub": "hf_ext.mad.api",
    "from_madlab_npy": "hf_ext.mad.api",
    "render_dataset_card": "hf_ext.mad.api",
    "MADCollator": "hf_ext.mad.collator",
    "mad_accuracy": "hf_ext.mad.metrics",
    "mad_accuracy_from_logits": "hf_ext.mad.metrics",
    "MADStackConfig": "hf_ext.mad.models",
    "MADStackModel": "hf_ext.mad.models",
    "MADStackForCausalLM": "hf_ext.mad.models",
    "MADAutoEncoder": "hf_ext.mad.models",
    "CausalLMAutoEncoder": "hf_ext.mad.models",
    "parse_layers": "hf_ext.mad.models",
    "run_benchmark": "hf_ext.mad.bench",
    "make_model": "hf_ext.mad.bench",
    "train_run": "hf_ext.mad.bench",
    "mad_report": "hf_ext.mad.report",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_ext.mad' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
