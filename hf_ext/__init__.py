"""hf_ext: Hugging Face-native components for ten research results.

Importing ``hf_ext`` is cheap: it registers the package's model types with the transformers
``Auto*`` classes (see :mod:`hf_ext.auto`) and exposes the public names lazily, so that torch,
transformers and the optional extras are imported only when a name that needs them is used.

Example:
    >>> import hf_ext
    >>> hf_ext.__version__  # doctest: +SKIP
    '0.2.0'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# public name -> submodule that defines it; resolved on first attribute access (PEP 562).
_LAZY: dict[str, str] = {
    "ModelAnatomy": "hf_ext.core.anatomy",
    "get_anatomy": "hf_ext.core.anatomy",
    "run_layers": "hf_ext.core.layers",
    "attention_controls": "hf_ext.core.attention",
    "AttentionControl": "hf_ext.core.attention",
    "spans_to_key_positions": "hf_ext.core.attention",
    "items_to_key_positions": "hf_ext.core.attention",
    "key_weights": "hf_ext.core.attention",
    "forward_hooks": "hf_ext.core.hooks",
    "module_swaps": "hf_ext.core.hooks",
    "teacher_forced_logprobs": "hf_ext.core.scoring",
    "greedy_reference": "hf_ext.core.scoring",
    "render_model_card": "hf_ext.hub",
    "export_for_hub": "hf_ext.hub",
    "register": "hf_ext.auto",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_ext' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    # ruff: noqa: F401
    from .auto import register
    from .core.anatomy import ModelAnatomy, get_anatomy
    from .core.attention import (
        AttentionControl,
        attention_controls,
        items_to_key_positions,
        key_weights,
        spans_to_key_positions,
    )
    from .core.hooks import forward_hooks, module_swaps
    from .core.layers import run_layers
    from .core.scoring import greedy_reference, teacher_forced_logprobs
    from .hub import export_for_hub, render_model_card

from .auto import _register_lazily  # noqa: E402

_register_lazily()
