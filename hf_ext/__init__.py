"""hf_ext: Hugging Face-native components for ten research results.

Importing ``hf_ext`` is cheap: it arranges for the components' model types to be registered with the transformers
``Auto*`` classes when transformers is imported (see :mod:`hf_ext.auto` and :mod:`hf_ext.registry`) and exposes the
public names lazily, so that torch, transformers and the optional extras are imported only when a name that needs
them is used.

Example:
    >>> import hf_ext
    >>> hf_ext.__version__
    '0.2.0'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .utils.imports import lazy_exports

__version__ = "0.2.0"

__getattr__, __dir__, _PUBLIC = lazy_exports(__name__, {
    "core.anatomy": ["ModelAnatomy", "get_anatomy"],
    "core.layers": ["run_layers", "forward_with_layer_inputs"],
    "core.attention": ["attention_controls", "AttentionControl"],
    "core.key_positions": ["spans_to_key_positions", "items_to_key_positions", "key_weights"],
    "core.hooks": ["forward_hooks", "module_swaps"],
    "core.scoring": ["teacher_forced_logprobs", "greedy_reference"],
    "hub": ["render_model_card", "export_for_hub"],
    "auto": ["register"],
    "registry": ["AutoClasses", "components", "register_component"],
})
__all__ = ["__version__", *_PUBLIC]

if TYPE_CHECKING:  # pragma: no cover
    # ruff: noqa: F401
    from .auto import register
    from .core.anatomy import ModelAnatomy, get_anatomy
    from .core.attention import AttentionControl, attention_controls
    from .core.hooks import forward_hooks, module_swaps
    from .core.key_positions import items_to_key_positions, key_weights, spans_to_key_positions
    from .core.layers import forward_with_layer_inputs, run_layers
    from .core.scoring import greedy_reference, teacher_forced_logprobs
    from .hub import export_for_hub, render_model_card
    from .registry import AutoClasses, components, register_component

from .auto import _register_lazily  # noqa: E402

_register_lazily()
