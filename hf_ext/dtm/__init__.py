"""Divergent token metrics (FDTM/SDTM, Deiseroth et al. 2024) and FDTM-guided compression.

* :mod:`hf_ext.dtm.divergence`: greedy references, teacher-forced FDT/SDT (``dtm.teacher_forced``, the paper's
  definition) and the alignment-based who-what-benchmark variant (``dtm.aligned``).
* :mod:`hf_ext.dtm.compression`: fake-quant / pruning contexts, the sensitivity scan with depth-prefix caching,
  greedy plans, ``apply_plan`` and the pruning-mask ``TrainerCallback``.
* :mod:`hf_ext.dtm.int8`: int8 absmax per-row quantization and a real int8 weight-only Linear.

Names are imported lazily.

Example:
    >>> from hf_ext.dtm import reference, score
    >>> from hf_ext.testing import tiny_causal_lm
    >>> base = tiny_causal_lm("gpt2")
    >>> ref = reference(base, [[1, 5, 6]], max_new_tokens=4, eos_token_id=[], progress=False)
    >>> score(base, ref).fdt.tolist()
    [4]
"""

from __future__ import annotations

from hf_ext.registry import register_component
from hf_ext.utils.imports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "divergence": ["ALIGNED", "TEACHER_FORCED", "DivergenceResult", "aligned_divergence",
                   "check_compatible", "divergence_from_ids", "free_running_divergence",
                   "greedy_generate", "reference", "score", "score_aligned"],
    "plan": ["CompressionPlan"],
    "deployment": ["PruningMaskCallback", "apply_plan", "load_compressed", "save_compressed"],
    "compression": ["ScanResult", "build_plan", "compressed", "coverage_curve", "curve_auc",
                    "random_order", "sensitivity_scan"],
    "perturbation": ["fake_quant", "list_components", "magnitude_prune", "magnitude_prune_weight",
                     "weight_perturbation"],
    "int8": ["Int8WeightOnlyLinear", "fake_quantize_absmax", "quantize_absmax", "dequantize_absmax",
             "has_int8pack_mm"],
})

register_component(
    name="dtm", title="FDTM/SDTM", order=50, package=__name__,
    summary="divergent token metrics (FDTM/SDTM) and DTM-guided compression",
    cli=".cli", tour=".tour", reproduction="hf_ext.reproduce.dtm", cards=["dtm_compressed"], extras=["plots", "eval"], notebook="06_dtm.ipynb",
)
