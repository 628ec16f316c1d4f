"""M-VADER / S-MAGMA (Weinbach et al., 2022): the MultiFusion parts with an S-MAGMA encoder, plus encoder tuning helpers.

Public API (lazy): :class:`MVaderPipeline`, :func:`enable_bitfit` (bias-only training, S-MAGMA's semantic stage),
:func:`enable_lora` (peft LoRA alternative), :func:`trainable_parameter_names`.
"""

import importlib
from typing import Any

_EXPORTS = {
    "MVaderPipeline": "pipeline_mvader",
    "enable_bitfit": "tuning", "enable_lora": "tuning", "trainable_parameter_names": "tuning",
    "language_model_of": "tuning",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
