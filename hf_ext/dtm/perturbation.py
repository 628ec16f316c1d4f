"""Components of a causal LM and in-place perturbations of them that always restore the model bit-exactly.

**Components** are the linear weights of the decoder blocks (:func:`list_components`: ``nn.Linear`` and GPT-2's
``Conv1D`` under ``<layers_path>.<i>``; Llama has 7 per layer: q, k, v, o, gate, up, down). The context managers
:func:`fake_quant` (int8 absmax per output row) and :func:`magnitude_prune` (unstructured, per matrix) change
weights in place through :func:`weight_perturbation` and restore them **bit-exactly** on exit (also on exceptions):
the building blocks of DTM's sensitivity scan and plans (:mod:`hf_ext.dtm.compression`).

Example:
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("llama")
    >>> name = list_components(model)[0]
    >>> with magnitude_prune(model, name, 1.0):
    ...     bool((get_component(model, name).weight == 0).all())
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hf_ext.utils.validation import check_probability

from ..core.anatomy import get_anatomy
from .int8 import fake_quantize_absmax, is_linear_like, linear_weight

__all__ = [
    "check_sparsity", "component_layer", "fake_quant", "get_component", "list_components", "magnitude_prune",
    "magnitude_prune_weight", "weight_perturbation",
]




def list_components(model: nn.Module, layers: Sequence[int] | None = None) -> list[str]:
    """Dotted names of every linear weight (``nn.Linear`` / GPT-2 ``Conv1D``) inside the decoder layers.

    Args:
        model: any transformers causal LM (:func:`~hf_ext.core.anatomy.get_anatomy`).
        layers: restrict to these layer indices (default: all).

    Returns:
        Names in layer order, e.g. ``["model.layers.0.self_attn.q_proj", …]``.

    Example:
        >>> len(list_components(tiny_causal_lm("llama")))  # 2 layers × 7
        14
    """
    anatomy = get_anatomy(model)
    names = []
    for index in anatomy.resolve_layers(layers):
        prefix = f"{anatomy.layers_path}.{index}"
        for name, module in anatomy.layers[index].named_modules():
            if name and is_linear_like(module):
                names.append(f"{prefix}.{name}")
    return names


def component_layer(model: nn.Module, name: str) -> int:
    """The decoder-layer index of component ``name`` (``ValueError`` outside the decoder layers)."""
    anatomy = get_anatomy(model)
    prefix = anatomy.layers_path + "."
    if not name.startswith(prefix):
        raise ValueError(f"component {name!r} is not inside the decoder layers ({anatomy.layers_path}.<i>.…)")
    return int(name[len(prefix):].split(".")[0])


def get_component(model: nn.Module, name: str) -> nn.Module:
    """The linear module ``name`` of ``model`` (``ValueError`` for a missing or non-linear module)."""
    try:
        module = model.get_submodule(name)
    except AttributeError as err:
        raise ValueError(f"model has no module {name!r}; list valid names with list_components(model)") from err
    if not is_linear_like(module):
        raise ValueError(f"module {name!r} is a {type(module).__name__}, not an nn.Linear/Conv1D component")
    return module


@contextlib.contextmanager
def weight_perturbation(model: nn.Module, changes: Mapping[str, Callable[[torch.Tensor], torch.Tensor]]) -> Iterator[None]:
    """Replace linear weights in place for the duration of the block; restore them bit-exactly afterwards.

    Args:
        model: the model.
        changes: component name -> ``fn(weight [out, in]) -> new weight [out, in]`` (``Conv1D`` is transposed for you).

    Example:
        >>> model, ids = tiny_causal_lm("llama", seed=0), torch.tensor([[1, 5, 6]])
        >>> before = model.model.layers[0].mlp.up_proj.weight.clone()
        >>> with weight_perturbation(model, {"model.layers.0.mlp.up_proj": lambda w: w * 0}):
        ...     out = model(ids)
        >>> torch.equal(model.model.layers[0].mlp.up_proj.weight, before)
        True
    """
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for name, fn in changes.items():
            module = get_component(model, name)
            param = module.weight
            saved.append((param, param.detach().clone()))
            with torch.no_grad():
                new = fn(linear_weight(module).detach())
                if not isinstance(module, nn.Linear):
                    new = new.t()
                param.copy_(new)
        yield
    finally:
        with torch.no_grad():
            for param, original in reversed(saved):
                param.copy_(original)


def magnitude_prune_weight(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero the ``round(sparsity · numel)`` smallest-magnitude entries (stable order on ties).

    Example:
        >>> magnitude_prune_weight(torch.tensor([[1., -3., 0.5, 2.]]), 0.5).tolist()
        [[0.0, -3.0, 0.0, 2.0]]
    """
    check_sparsity(sparsity)
    k = int(round(sparsity * weight.numel()))
    if k == 0:
        return weight.clone()
    flat = weight.detach().flatten()
    idx = torch.argsort(flat.abs(), stable=True)[:k]
    out = flat.clone()
    out[idx] = 0
    return out.view_as(weight)


def check_sparsity(s: Any) -> None:
    """Raise ``ValueError`` unless ``s`` is a number in ``[0, 1]``."""
    check_probability("sparsity", s)


def _names(names: str | Sequence[str]) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


@contextlib.contextmanager
def fake_quant(model: nn.Module, names: str | Sequence[str], scheme: str = "int8_absmax_rowwise", *,
               bits: int = 8) -> Iterator[None]:
    """Fake-quantize components (absmax per output row) inside the block; weights are restored bit-exactly on exit.

    Args:
        model: the model (changed in place during the block).
        names: one component name or several (see :func:`list_components`).
        scheme: ``"int8_absmax_rowwise"`` (the only scheme; ``bits`` < 8 gives a coarser variant for stress tests).
        bits: quantization bits (8 by default).

    Example:
        >>> from hf_ext.dtm import reference, score
        >>> model = tiny_causal_lm("llama", seed=0)
        >>> ref = reference(model, [[1, 5, 6]], max_new_tokens=4, progress=False)
        >>> with fake_quant(model, "model.layers.0.self_attn.q_proj"):
        ...     res = score(model, ref)
    """
    if scheme != "int8_absmax_rowwise":
        raise ValueError(f"unknown quantization scheme {scheme!r}; supported: 'int8_absmax_rowwise'")
    with weight_perturbation(model, {n: (lambda w: fake_quantize_absmax(w, bits)) for n in _names(names)}):
        yield


@contextlib.contextmanager
def magnitude_prune(model: nn.Module, names: str | Sequence[str] | Mapping[str, float],
                    sparsity: float | None = None) -> Iterator[None]:
    """Magnitude-prune components (unstructured, per matrix) inside the block; restored bit-exactly on exit.

    Args:
        model: the model.
        names: a name, a list of names (all at ``sparsity``) or a ``{name: sparsity}`` map.
        sparsity: fraction of weights zeroed, in ``[0, 1]``.

    Example:
        >>> from hf_ext.dtm import reference, score
        >>> model = tiny_causal_lm("llama", seed=0)
        >>> ref = reference(model, [[1, 5, 6]], max_new_tokens=4, progress=False)
        >>> with magnitude_prune(model, {"model.layers.0.mlp.up_proj": 0.9}):
        ...     res = score(model, ref)
    """
    if isinstance(names, Mapping):
        spec = dict(names)
    else:
        if sparsity is None:
            raise ValueError("sparsity must be a number in [0, 1] (or names a {name: sparsity} mapping), got None")
        spec = {n: sparsity for n in _names(names)}
    for s in spec.values():
        check_sparsity(s)
    with weight_perturbation(model, {n: (lambda w, s=s: magnitude_prune_weight(w, s)) for n, s in spec.items()}):
        yield
