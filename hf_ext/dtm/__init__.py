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

import importlib
from typing import Any

_LAZY = {
    "ALIGNED": "divergence", "TEACHER_FORCED": "divergence", "DivergenceResult": "divergence",
    "aligned_divergence": "divergence", "check_compatible": "divergence", "divergence_from_ids": "divergence",
    "free_running_divergence": "divergence", "greedy_generate": "divergence", "reference": "divergence",
    "score": "divergence", "score_aligned": "divergence",
    "CompressionPlan": "plan", "PruningMaskCallback": "deployment", "ScanResult": "compression",
    "apply_plan": "deployment", "build_plan": "compression", "compressed": "compression",
    "coverage_curve": "compression", "curve_auc": "compression", "fake_quant": "perturbation",
    "list_components": "perturbation", "load_compressed": "deployment", "magnitude_prune": "perturbation",
    "magnitude_prune_weight": "perturbation", "random_order": "compression", "save_compressed": "deployment",
    "sensitivity_scan": "compression", "weight_perturbation": "perturbation",
    "Int8WeightOnlyLinear": "int8", "fake_quantize_absmax": "int8", "quantize_absmax": "int8",
    "dequantize_absmax": "int8", "has_int8pack_mm": "int8",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'hf_ext.dtm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
