"""M-VADER's encoder tuning (BitFit for S-MAGMA's semantic stage, LoRA as the alternative), shared with MultiFusion.

The functions live in :mod:`hf_ext.diffusion.multifusion.tuning` (M-VADER builds on the MultiFusion parts, never the
other way round); this module keeps their M-VADER import path.

Example:
    >>> from hf_ext.diffusion.mvader.tuning import enable_bitfit
    >>> from hf_ext.testing import tiny_causal_lm
    >>> all(n.endswith(".bias") for n in enable_bitfit(tiny_causal_lm("gpt2")))
    True
"""

from hf_ext.diffusion.multifusion.tuning import (
    enable_bitfit,
    enable_lora,
    language_model_of,
    trainable_parameter_names,
)

__all__ = ["enable_bitfit", "enable_lora", "language_model_of", "trainable_parameter_names"]
