"""MAD (Poli, Thomas, Nguyen et al., ICML 2024): the six synthetic capability tasks (plus zoology's multi-query
associative recall, ``"MQAR"``, byte-identical to zoology) as Hugging Face datasets, the models for them (striped hybrids incl. Hyena and Mamba), ``mad_accuracy`` and the benchmark runner.

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

from hf_ext.registry import AutoClasses, register_component
from hf_ext.utils.imports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "config": ["MADTaskConfig", "baseline", "benchmark_grid", "config_from_name", "TASKS", "MAD_TASKS", "SHORTHANDS",
               "GENERATOR_VERSION"],
    "generators_mqar": ["mqar_arrays", "mqar_filler_collisions"],
    "generators": ["generate", "generate_splits", "arrays_sha256", "vocab_layout"],
    "builder": ["MADBuilder", "MADBuilderConfig"],
    "api": ["load_mad", "export_parquet", "push_mad_to_hub", "from_madlab_npy", "render_dataset_card"],
    "collator": ["MADCollator"],
    "metrics": ["mad_accuracy", "mad_accuracy_from_logits"],
    "models": ["MADStackConfig", "MADStackModel", "MADStackForCausalLM", "MADAutoEncoder", "CausalLMAutoEncoder",
               "parse_layers"],
    "bench": ["run_benchmark", "make_model", "train_run"],
    "report": ["mad_report"],
})

register_component(
    name="mad", title="MAD", order=40, package=__name__,
    summary="MAD synthetic tasks: datasets, benchmark runner, report",
    auto=[AutoClasses("mad_stack", config=".models:MADStackConfig",  # striped hybrids
                      models={"AutoModelForCausalLM": ".models:MADStackForCausalLM", "AutoModel": ".models:MADStackModel"})],
    cli=".cli", tour=".tour", cards=["mad_dataset"], extras=["plots", "eval"], notebook="05_mad.ipynb",
)
