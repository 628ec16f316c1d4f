"""u-μP: unit-scaled maximal update parametrization (Blake et al., ICLR 2025, arXiv 2407.17465) for transformers.

- :class:`UMupConfig` / :class:`UMupLlamaForCausalLM`: a Llama-style causal LM with unit-initialised weights and
  unit-scaled ops, registered with ``AutoConfig`` / ``AutoModelForCausalLM`` (model type ``"umup_llama"``).
- :func:`umup_param_groups` / :func:`umup_optimizer` / :class:`UMupTrainer` / :func:`umup_optimizers`: per-tensor
  Adam LRs from module roles and independent weight decay.
- :func:`convert_llama_to_umup`: a u-μP config from a Llama config.
- :func:`umup_lora_config` (:mod:`hf_ext.umup.lora`, extra ``lora``): LoRA through peft on :class:`UMupLinear`
  (the update is a weight delta inside the unit-scaled op, so merging is exact); ``gradient_checkpointing_enable()``
  works on the models.
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

from hf_ext.registry import AutoClasses, register_component
from hf_ext.utils.imports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "configuration_umup": ["UMupConfig"],
    "modeling_umup": ["UMupLlamaForCausalLM", "UMupLlamaModel", "UMupPreTrainedModel", "UMupLinear", "UMupEmbedding",
                      "convert_llama_to_umup", "umup_causal_lm_loss"],
    "optimization_umup": ["umup_param_groups", "umup_optimizer", "umup_optimizers", "group_learning_rates",
                          "UMupTrainer"],
    "coord_check": ["coord_check"],
    "sweep": ["lr_sweep"],
    "lora": ["umup_lora_config", "register_umup_lora", "UMupLoraLinear"],
})

register_component(
    name="umup", title="u-μP", order=30, package=__name__,
    summary="u-μP: LR-transfer sweeps and coordinate checks",
    auto=[AutoClasses("umup_llama", config=".configuration_umup:UMupConfig",
                      models={"AutoModelForCausalLM": ".modeling_umup:UMupLlamaForCausalLM",
                              "AutoModel": ".modeling_umup:UMupLlamaModel"})],
    cli=".cli", tour=".tour", cards=["umup"], extras=["plots", "lora"], notebook="04_umup.ipynb",
)
