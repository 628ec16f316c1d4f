"""Where a SCAR adapter hooks: the module of a base model behind each ``ScarConfig.site``.

``"mlp"`` / ``"attention"`` hook the output of decoder layer ``i``'s MLP / self-attention (before the residual add),
``"block"`` and ``"residual_post"`` the decoder layer's output (the residual stream after layer ``i``),
``"residual_pre"`` the decoder layer's input (a forward *pre*-hook: the residual stream before layer ``i``), and
``"module"`` the output of any named submodule (``model.get_submodule(name)``). A module returning a tuple is
hooked on its first element.

Example:
    >>> from hf_ext.core.anatomy import get_anatomy
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("llama")
    >>> type(site_module(model, get_anatomy(model), "attention", 0, None)).__name__
    'LlamaAttention'
    >>> site_module(model, get_anatomy(model), "module", 0, "model.layers.1.mlp.down_proj").out_features
    64
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from ..core.anatomy import ModelAnatomy

__all__ = ["site_module"]


def site_module(model: nn.Module, anatomy: ModelAnatomy, site: str, index: int, name: str | None) -> nn.Module:
    """The module to hook for ``site`` at decoder layer ``index`` (``name``: the submodule of ``site="module"``).

    Raises:
        ValueError: the layer has no such part (a Mamba layer's attention), or ``name`` names no submodule.
    """
    if site == "module":
        try:
            return model.get_submodule(name)
        except AttributeError as err:
            tops = [n for n, _ in model.named_children()]
            raise ValueError(f"site_module={name!r} is not a submodule of {type(model).__name__} ({err}); names are "
                             f"dotted paths from model.named_modules(), its children are {tops}") from err
    if site in ("mlp", "attention"):
        parts = anatomy.mlp_outputs if site == "mlp" else anatomy.attentions
        if parts[index] is None:
            raise ValueError(f"decoder layer {index} of {anatomy.family!r} ({type(model).__name__}) has no "
                             f"{'MLP' if site == 'mlp' else 'self-attention'} ({type(anatomy.layers[index]).__name__}); "
                             "use site='block' for this layer")
        return parts[index]
    return anatomy.layers[index]  # block, residual_post (output), residual_pre (input, via a pre-hook)
