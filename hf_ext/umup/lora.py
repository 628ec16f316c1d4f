"""LoRA on u-μP models through peft: :class:`UMupLoraLinear` is peft's LoRA ``Linear`` for :class:`UMupLinear`,
registered with peft's custom-module mapping (``LoraConfig._register_custom_module``, peft >= 0.21).

**Unit scaling of the adapted layers.** A :class:`UMupLinear` computes ``y = m · s_out · x Wᵀ`` (``s_out =
1/sqrt(fan_in)``, ``m`` the multiplier its caller folds in, e.g. attention's output scale), with ``W ~ N(0, 1)``.
The LoRA update is a *weight* update inside that same op::

    y = m · s_out · x (W + ΔW)ᵀ,    ΔW = (lora_alpha / r) · B A

so the adapter path is ``m · s_out · (lora_alpha / r) · B(A(dropout(x)))`` and merging (``merge_and_unload``) is
exact: the merged ``W + ΔW`` goes through the unchanged unit-scaled op. ``A`` and ``B`` are plain parameters with
peft's init (``A`` Kaiming-uniform, ``B`` zeros, so the adapted model starts equal to the base) and ordinary autograd
gradients: the unit-scaled backward multipliers of the frozen base (``grad_x`` and ``grad_W`` scales) are not applied
to them; Adam is invariant to such per-tensor constants. ``W`` has unit entries, so ``ΔW`` needs entries of order
``1`` (not ``1/sqrt(fan_in)``) to change the layer as much as a full u-μP update does. No u-μP LR rule covers
``A``/``B``: ``umup_param_groups(peft_model, lr, allow_non_unit_scaling_params=True)`` puts them in one
``"non_umup"`` group at ``lr`` (the frozen base is skipped); a plain ``AdamW`` over the trainable parameters works as
well (the tests train with ``lr=1e-2``; we have not tuned a LoRA LR for u-μP). LoRA variants (DoRA, …) and
``fan_in_fan_out`` are not supported on :class:`UMupLinear` (``ValueError``).

Example:
    >>> import peft, torch
    >>> from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM
    >>> from hf_ext.umup.lora import umup_lora_config
    >>> base = UMupLlamaForCausalLM(UMupConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
    ...                                        num_hidden_layers=2, num_attention_heads=4, umup_attn_seq_len=16))
    >>> model = peft.get_peft_model(base, umup_lora_config(r=4, lora_alpha=8))
    >>> type(model.base_model.model.model.layers[0].self_attn.q_proj).__name__
    'UMupLoraLinear'
    >>> model.get_nb_trainable_parameters()[0]
    4352
"""

from __future__ import annotations

from typing import Any

import torch

from hf_ext.utils.imports import require

from .modeling_umup import UMupLinear

LoraConfig = require("peft").LoraConfig  # the "lora" extra
LoraLinear = require("peft.tuners.lora.layer").Linear

__all__ = ["UMUP_LORA_TARGETS", "UMupLoraLinear", "register_umup_lora", "umup_lora_config"]

#: The linears of a u-μP decoder layer (the readout ``lm_head`` is left out by default, as usual for LoRA).
UMUP_LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class UMupLoraLinear(LoraLinear):
    """peft's LoRA ``Linear`` around a :class:`UMupLinear` (see the module docstring for the scaling).

    ``forward(x, fwd_mult=1, bwd_mult=1, gw_mult=1)`` has :class:`UMupLinear`'s signature; shapes
    ``x [..., in_features] -> [..., out_features]``. ``merge``/``unmerge``/``get_delta_weight`` are peft's: the delta
    ``(lora_alpha / r) · B A`` is added to the unit-scale weight.

    Raises:
        ValueError: a LoRA variant (DoRA, …) or ``fan_in_fan_out=True`` is requested.
    """

    def __init__(self, base_layer: UMupLinear, adapter_name: str, config: LoraConfig, **kwargs: Any) -> None:
        if getattr(config, "fan_in_fan_out", False):
            raise ValueError("fan_in_fan_out=True does not apply to UMupLinear (its weight is [out, in]); "
                             "use LoraConfig(fan_in_fan_out=False)")
        super().__init__(base_layer, adapter_name, config=config, **kwargs)
        if self.lora_variant:
            raise ValueError(f"LoRA variants {sorted(self.lora_variant.values(), key=str)} are not supported on "
                             "UMupLinear; use plain LoRA (use_dora=False, default init_lora_weights)")

    def _get_in_out_features(self, module: UMupLinear) -> tuple[int, int]:
        # peft's generic lookup knows nn.Linear-like classes by name and warns about any other layer type
        return module.in_features, module.out_features

    def forward(self, x: torch.Tensor, fwd_mult: float = 1.0, bwd_mult: float = 1.0, gw_mult: float = 1.0,
                *args: Any, **kwargs: Any) -> torch.Tensor:
        """``base(x) + fwd_mult · s_out · Σ_adapters (lora_alpha / r) · B(A(dropout(x)))``; the base alone when the
        adapters are disabled or merged. ``x [..., in_features] -> [..., out_features]``."""
        base = self.get_base_layer()
        if kwargs.get("adapter_names") is not None:
            raise TypeError("UMupLoraLinear does not support mixed adapter batches (adapter_names=)")
        if self.disable_adapters and self.merged:
            self.unmerge()
        result = base(x, fwd_mult=fwd_mult, bwd_mult=bwd_mult, gw_mult=gw_mult)
        if self.disable_adapters or self.merged:
            return result
        scale = base.s_out * fwd_mult  # the unit-scaled op's forward scale, applied to the weight delta too
        for name in self.active_adapters:
            if name not in self.lora_A:
                continue
            lora_a, lora_b = self.lora_A[name], self.lora_B[name]
            h = self._cast_input_dtype(x, lora_a.weight.dtype)
            result = result + lora_b(lora_a(self.lora_dropout[name](h))) * (self.scaling[name] * scale)
        return result


def register_umup_lora(config: LoraConfig) -> LoraConfig:
    """Register :class:`UMupLoraLinear` for :class:`UMupLinear` on ``config`` (peft's custom-module mapping) and
    return it.

    Raises:
        TypeError: ``config`` is not a ``peft.LoraConfig``.

    Example:
        >>> cfg = register_umup_lora(LoraConfig(r=2, target_modules=["q_proj"]))
        >>> cfg._custom_modules[UMupLinear].__name__
        'UMupLoraLinear'
    """
    if not isinstance(config, LoraConfig):
        raise TypeError(f"register_umup_lora expects a peft.LoraConfig, got {type(config).__name__}")
    config._register_custom_module({UMupLinear: UMupLoraLinear})
    return config


def umup_lora_config(**kwargs: Any) -> LoraConfig:
    """A ``peft.LoraConfig`` for u-μP models: ``target_modules`` default :data:`UMUP_LORA_TARGETS`,
    ``task_type="CAUSAL_LM"``, and :class:`UMupLoraLinear` registered (:func:`register_umup_lora`).

    Args:
        **kwargs: any ``LoraConfig`` field (``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules`` …).

    Example:
        >>> umup_lora_config(r=8).target_modules == set(UMUP_LORA_TARGETS)
        True
    """
    kwargs.setdefault("target_modules", list(UMUP_LORA_TARGETS))
    kwargs.setdefault("task_type", "CAUSAL_LM")
    return register_umup_lora(LoraConfig(**kwargs))
