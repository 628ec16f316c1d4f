"""The configuration of MAD's striped-hybrid models: layer names, their aliases and the pattern parser.

Example:
    >>> parse_layers("(mH Sg mA Sg)x2")[:4]
    ['mh-hyena', 'swiglu', 'mh-attention', 'swiglu']
"""

from __future__ import annotations

import re
from typing import Any

from transformers import PreTrainedConfig

from hf_ext.utils.validation import check_elements, check_float, check_size

__all__ = ["LAYER_ALIASES", "LAYER_TYPES", "MADStackConfig", "SEQUENCE_MIXERS", "parse_layers"]

LAYER_ALIASES: dict[str, str] = {
    "a": "attention", "attention": "attention", "attn": "attention",
    "ma": "mh-attention", "mh-attention": "mh-attention", "mha": "mh-attention",
    "sa": "sliding-attention", "sliding-attention": "sliding-attention",
    "msa": "mh-sliding-attention", "mh-sliding-attention": "mh-sliding-attention",
    "sg": "swiglu", "swiglu": "swiglu",
    "m": "mlp", "mlp": "mlp",
    "mb": "mamba", "mamba": "mamba",
    "h": "hyena", "hyena": "hyena",
    "mh": "mh-hyena", "mh-hyena": "mh-hyena",
}
LAYER_TYPES: tuple[str, ...] = ("attention", "mh-attention", "sliding-attention", "mh-sliding-attention", "swiglu",
                                "mlp", "mamba", "hyena", "mh-hyena")
SEQUENCE_MIXERS = ("attention", "mh-attention", "sliding-attention", "mh-sliding-attention", "mamba", "hyena",
                   "mh-hyena")


def parse_layers(pattern: str | list[str] | tuple[str, ...]) -> list[str]:
    """Canonical layer names of a pattern string or list (case-insensitive names or shorthands; ``(..)xN`` repeats).

    Raises:
        ValueError: an unknown layer name (the message lists the valid names) or an empty pattern.

    Example:
        >>> parse_layers("(mH Sg mA Sg)x2")
        ['mh-hyena', 'swiglu', 'mh-attention', 'swiglu', 'mh-hyena', 'swiglu', 'mh-attention', 'swiglu']
    """
    if isinstance(pattern, (list, tuple)):
        items = [str(p) for p in pattern]
    elif isinstance(pattern, str):
        expanded = re.sub(r"\(([^()]*)\)\s*[xX*]\s*(\d+)", lambda m: " ".join([m.group(1)] * int(m.group(2))), pattern)
        items = [p for p in re.split(r"[\s,;]+", expanded) if p]
    else:
        raise TypeError(f"layers must be a pattern string or a list of layer names, got {type(pattern).__name__}")
    out = []
    for item in items:
        name = LAYER_ALIASES.get(item.lower())
        if name is None:
            raise ValueError(f"unknown MAD layer {item!r}; valid layers: {list(LAYER_TYPES)} (shorthands A, mA, SA, "
                             "mSA, Sg, M, Mb, H, mH). transformers' MoE/GLA/RWKV layers are not wrapped here")
        out.append(name)
    if not out:
        raise ValueError("empty MAD layer pattern; e.g. 'mh-attention,swiglu,mh-attention,swiglu'")
    return out


class MADStackConfig(PreTrainedConfig):
    """Config of :class:`MADStackForCausalLM` / :class:`MADAutoEncoder`.

    Args:
        layers: layer pattern (see :func:`parse_layers`), stored as a list of canonical names.
        hidden_size: width ``d`` (mad-lab 128).
        vocab_size: task vocab.
        max_position_embeddings: longest sequence (sets the Hyena filter length; mad-lab ``max_length``).
        num_attention_heads: heads of the ``mh-*`` layers (mad-lab 16; ``hidden_size`` must be divisible).
        sliding_window: window of the sliding attention layers (mad-lab 32).
        rope_theta: RoPE base. mamba_d_state, mamba_d_conv, mamba_expand: Mamba settings (mad-lab 4, 4, 2).
        hyena_order, hyena_filter_order, hyena_short_filter_order, hyena_inner_factor, hyena_proj_groups: Hyena
            settings (mad-lab ``hyena.yml``: order 2, implicit-filter width 4, short conv 3, inner factor 4 with 4 tied
            projection groups); mh_hyena_filter_order: filter width of ``mh-hyena`` (mad-lab 2; inner factor 1).
        norm: ``"rmsnorm"`` (paper, ``benchmark.py``) or ``"layernorm"`` (mad-lab ``train.py``).
        initializer_range: std of the token embedding (and of linears when ``init="normal"``).
        init: ``"torch"`` (mad-lab after PR #4: Linear default init, zero biases) or ``"normal"`` (before PR #4: every
            Linear N(0, 0.02), which also wipes Mamba's dt bias init).
        global_pool: autoencoder pooling (``"last"`` as mad-lab).
    """

    model_type = "mad_stack"

    def __init__(self, layers: str | list[str] | tuple[str, ...] = "mh-attention,swiglu,mh-attention,swiglu", hidden_size: int = 128,
                 vocab_size: int = 16, max_position_embeddings: int = 1280, num_attention_heads: int = 16,
                 sliding_window: int = 32, rope_theta: float = 10000.0, mamba_d_state: int = 4, mamba_d_conv: int = 4,
                 mamba_expand: int = 2, hyena_order: int = 2, hyena_filter_order: int = 4,
                 mh_hyena_filter_order: int = 2, hyena_short_filter_order: int = 3, hyena_inner_factor: int = 4,
                 hyena_proj_groups: int = 4, norm: str = "rmsnorm",
                 norm_eps: float = 1e-5, initializer_range: float = 0.02, init: str = "torch",
                 global_pool: str = "last", tie_word_embeddings: bool = False, **kwargs: Any):
        self.layers = parse_layers(layers)
        sizes = dict(hidden_size=hidden_size, vocab_size=vocab_size, max_position_embeddings=max_position_embeddings,
                     num_attention_heads=num_attention_heads, sliding_window=sliding_window,
                     mamba_d_state=mamba_d_state, mamba_d_conv=mamba_d_conv, mamba_expand=mamba_expand,
                     hyena_order=hyena_order, hyena_filter_order=hyena_filter_order,
                     mh_hyena_filter_order=mh_hyena_filter_order, hyena_short_filter_order=hyena_short_filter_order,
                     hyena_inner_factor=hyena_inner_factor, hyena_proj_groups=hyena_proj_groups)
        for name, value in sizes.items():
            check_size(f"MADStackConfig.{name}", value)
        check_elements("the embedding [vocab_size, hidden_size]", (vocab_size, hidden_size))
        check_float("MADStackConfig.rope_theta", rope_theta, min=0, min_open=True)
        check_float("MADStackConfig.norm_eps", norm_eps, min=0)
        check_float("MADStackConfig.initializer_range", initializer_range, min=0)
        if norm not in ("rmsnorm", "layernorm"):
            raise ValueError(f"norm must be 'rmsnorm' or 'layernorm', got {norm!r}")
        if init not in ("torch", "normal"):
            raise ValueError(f"init must be 'torch' (mad-lab after PR #4) or 'normal' (before), got {init!r}")
        if any(layer.startswith("mh-") for layer in self.layers) and hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by num_attention_heads={num_attention_heads} "
                             "for the multi-head layers")
        self.hidden_size = hidden_size
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.num_attention_heads = num_attention_heads
        self.sliding_window = sliding_window
        self.rope_theta = rope_theta
        self.mamba_d_state = mamba_d_state
        self.mamba_d_conv = mamba_d_conv
        self.mamba_expand = mamba_expand
        self.hyena_order = hyena_order
        self.hyena_filter_order = hyena_filter_order
        self.hyena_short_filter_order = hyena_short_filter_order
        self.hyena_inner_factor = hyena_inner_factor
        self.hyena_proj_groups = hyena_proj_groups
        self.mh_hyena_filter_order = mh_hyena_filter_order
        if (hyena_inner_factor * (hyena_order + 1)) % hyena_proj_groups:
            raise ValueError(f"hyena_inner_factor * (hyena_order + 1) = {hyena_inner_factor * (hyena_order + 1)} must be "
                             f"divisible by hyena_proj_groups={hyena_proj_groups}")
        self.norm = norm
        self.norm_eps = norm_eps
        self.initializer_range = initializer_range
        self.init = init
        self.global_pool = global_pool
        self.num_hidden_layers = len(self.layers)
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
