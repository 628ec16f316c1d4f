"""Which encoder parameters train: bias-only (BitFit, S-MAGMA's semantic stage) or LoRA (peft) as the alternative.

MultiFusion's stage A and M-VADER's S-MAGMA tuning share these; :mod:`hf_ext.diffusion.mvader` re-exports them.

Example:
    >>> from hf_ext.testing import tiny_causal_lm
    >>> lm = tiny_causal_lm("gpt2")
    >>> names = enable_bitfit(lm)
    >>> all(n.endswith(".bias") for n in names) and len(names) > 0
    True
"""

from __future__ import annotations

from torch import nn

__all__ = ["enable_bitfit", "enable_lora", "language_model_of", "trainable_parameter_names"]


def language_model_of(model: nn.Module) -> nn.Module:
    """The language model inside an encoder: ``MagmaEncoder.language_model``, a VLM's decoder, or the model itself."""
    from hf_ext.core.anatomy import get_anatomy

    from .modeling_multifusion import MagmaEncoder

    if isinstance(model, MagmaEncoder):
        return model.language_model
    return get_anatomy(model).decoder


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters with ``requires_grad=True``."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def enable_bitfit(model: nn.Module, *, language_model_only: bool = True) -> list[str]:
    """Freeze ``model`` except the bias terms of its language model (BitFit; S-MAGMA's "semantic" stage).

    peft has no bias-only method, so this sets ``requires_grad`` directly.

    Args:
        model: a :class:`MagmaEncoder`, a VLM or a causal LM.
        language_model_only: only the LM's biases (not the vision tower, image prefix or adapters).

    Returns:
        Names (relative to ``model``) of the trainable bias parameters.

    Raises:
        ValueError: the language model has no bias parameters (e.g. Llama): use :func:`enable_lora` instead.
    """
    target = language_model_of(model) if language_model_only else model
    target_ids = {id(p) for p in target.parameters()}
    names = []
    for name, param in model.named_parameters():
        train = name.endswith(".bias") and id(param) in target_ids
        param.requires_grad_(train)
        if train:
            names.append(name)
    if not names:
        raise ValueError(f"{type(target).__name__} has no bias parameters to tune (Llama-style models use bias=False); "
                         "use enable_lora(model) for the parameter-efficient alternative")
    return names


def enable_lora(model: nn.Module, *, r: int = 8, alpha: int = 16, dropout: float = 0.0,
                target_modules: list[str] | None = None) -> list[str]:
    """Inject LoRA adapters (peft) into the encoder's language model and freeze everything else.

    Args:
        model: a :class:`MagmaEncoder`, a VLM or a causal LM (modified in place; no ``PeftModel`` wrapper).
        r, alpha, dropout: LoRA rank, scaling numerator and dropout.
        target_modules: module names to adapt (default: peft's mapping for the LM's ``model_type``).

    Returns:
        Names of the trainable LoRA parameters. LoRA's ``B`` starts at zero, so outputs are unchanged at first.
    """
    from hf_ext.utils.imports import require

    peft = require("peft")  # ImportError naming the package if it is missing
    LoraConfig, inject_adapter_in_model = peft.LoraConfig, peft.inject_adapter_in_model
    DEFAULTS = require("peft.utils").TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    lm = language_model_of(model)
    if target_modules is None:
        model_type = lm.config.model_type
        target_modules = DEFAULTS.get(model_type)
        if target_modules is None:
            raise ValueError(f"no default LoRA target modules for model_type {model_type!r}; pass target_modules=[...]")
    for param in model.parameters():
        param.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules)), lm)
    names = []
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.requires_grad_(True)
            names.append(name)
    return names
