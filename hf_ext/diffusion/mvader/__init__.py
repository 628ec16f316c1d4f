"""M-VADER / S-MAGMA (Weinbach et al., 2022): the MultiFusion parts with an S-MAGMA encoder, plus encoder tuning helpers.

Public API (lazy): :class:`MVaderPipeline`, :func:`enable_bitfit` (bias-only training, S-MAGMA's semantic stage),
:func:`enable_lora` (peft LoRA alternative), :func:`trainable_parameter_names`.
"""

from __future__ import annotations

from hf_ext.registry import register_component
from hf_ext.utils.imports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "pipeline_mvader": ["MVaderPipeline"],
    "tuning": ["enable_bitfit", "enable_lora", "trainable_parameter_names", "language_model_of"],
})

register_component(
    name="mvader", title="M-VADER", order=85, package=__name__,
    summary="M-VADER / S-MAGMA: the MultiFusion parts with an S-MAGMA encoder (CLI and tour: multifusion)",
    cards=["mvader"], extras=["diffusion", "lora"], notebook="10_multifusion.ipynb",
)
