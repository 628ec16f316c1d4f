"""u-μP: unit-scaled maximal update parametrization (Blake et al., ICLR 2025, arXiv 2407.17465) for transformers.

- :class:`UMupConfig` / :class:`UMupLlamaForCausalLM`: a Llama-style causal LM with unit-initialised weights and
  unit-scaled ops, registered with ``AutoConfig`` / ``AutoModelForCausalLM`` (model type ``"umup_llama"``).
- :func:`umup_param_groups` / :func:`umup_optimizer` / :class:`UMupTrainer` / :func:`umup_optimizers`: per-tensor
  Adam LRs from module roles and independent weight decay.
- :func:`convert_llama_to_umup`: a u-μP config from a Llama config.
- :mod:`hf_ext.umup.functional`: the unit-scaled ops (re-implemented; ``unit_scaling`` is the test oracle only).
- :mod:`hf_ext.umup.fp8`, :mod:`hf_ext.umup.coord_check`, :mod:`hf_ext.umup.sweep`: FP8, coordinate checks, LR
  transfer sweeps.

Example:
    >>> from transformers import AutoModelForCausalLM
    >>> from hf_ext.umup import UMupConfig, umup_param_groups
    >>> model = AutoModelForCausalLM.from_config(UMupConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
    ...                                                     num_hidden_layers=2, num_attention_heads=4))
    >>> import torch
    >>> optimizer = torch.optim.AdamW(umup_param_groups(model, lr=0.5, weight_decay=1e-4))
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "UMupConfig": "hf_ext.umup.configuration_umup",
    "UMupLlamaForCausalLM": "hf_ext.umup.modeling_umup",
    "UMupLlamaModel": "hf_ext.umup.modeling_umup",
    "UMupPreTrainedModel": "hf_ext.umup.modeling_umup",
    "UMupLinear": "hf_ext.umup.modeling_umup",
    "UMupEmbedding": "hf_ext.umup.modeling_umup",
    "convert_llama_to_umup": "hf_ext.umup.modeling_umup",
    "umup_causal_lm_loss": "hf_ext.umup.modeling_umup",
    "umup_param_groups": "hf_ext.umup.optimization_umup",
    "umup_optimizer": "hf_ext.umup.optimization_umup",
    "umup_optimizers": "hf_ext.umup.optimization_umup",
    "group_learning_rates": "hf_ext.umup.optimization_umup",
    "UMupTrainer": "hf_ext.umup.optimization_umup",
    "coord_check": "hf_ext.umup.coord_check",
    "lr_sweep": "hf_ext.umup.sweep",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_ext.umup' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
