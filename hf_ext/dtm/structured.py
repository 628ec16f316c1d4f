"""Structured pruning for DTM compression ladders: whole attention heads and whole MLP channels.

* A **head** is removed by zeroing its input columns of the attention's output projection (``o_proj``,
  ``out_proj``, ``dense``, GPT-2's ``c_proj``): the head then adds nothing to the residual stream, exactly as if it
  were cut out. Its query rows and its output columns are counted as removed parameters, and its key/value rows too
  once every query head of its key/value group is removed (grouped-query attention).
* An **MLP channel** is removed by zeroing its column of the down projection; its rows of the input projections
  (gate and up, or ``fc1``) and its down column are counted as removed.

Inside a layer, heads and channels are removed in order of magnitude (smallest first): a head by the Frobenius
norm of its output columns, a channel by the norm of its down column times the norm of its up (or fc1) row.
:func:`structured_prune` applies a ``{(layer, "heads"|"mlp"): fraction}`` map in place and restores the weights
bit-exactly on exit (:func:`~hf_ext.dtm.compression.weight_perturbation`).

Example:
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("llama")
    >>> with structured_prune(model, {(0, "heads"): 0.5, (1, "mlp"): 0.25}) as removed:
    ...     removed > 0
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from hf_ext.utils.validation import check_probability

from ..core.anatomy import get_anatomy
from .int8 import is_linear_like, linear_weight

STRUCTURES = ("heads", "mlp")
_ATTN_OUT = ("o_proj", "out_proj", "dense", "c_proj")
_ATTN_Q = ("q_proj", "query")
_ATTN_KV = (("k_proj", "v_proj"),)
_MLP_DOWN = ("down_proj", "fc2", "dense_4h_to_h", "c_proj")
_MLP_IN = (("gate_proj", "up_proj"), ("fc1",), ("dense_h_to_4h",), ("c_fc",))


@dataclass(frozen=True)
class LayerStructure:
    """The prunable structure of one decoder layer.

    Attributes:
        layer: layer index.
        attn_out, mlp_down: dotted names of the attention output and MLP down projections.
        mlp_in: dotted names of the MLP input projections (gate and up, or one).
        q_proj, kv_proj: query and key/value projections when separate (``None`` / ``()`` otherwise).
        num_heads, num_kv_heads, head_dim, hidden, intermediate: sizes.
    """

    layer: int
    attn_out: str
    mlp_down: str
    mlp_in: tuple[str, ...]
    q_proj: str | None
    kv_proj: tuple[str, ...]
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int

    def params_per_head(self) -> int:
        return 2 * self.head_dim * self.hidden  # its output columns and its query rows

    def params_per_kv_group(self) -> int:
        return len(self.kv_proj) * self.head_dim * self.hidden

    def params_per_channel(self) -> int:
        return (len(self.mlp_in) + 1) * self.hidden


def _find(model: nn.Module, prefix: str, candidates) -> str | None:
    for name in candidates:
        full = f"{prefix}.{name}"
        try:
            if is_linear_like(model.get_submodule(full)):
                return full
        except AttributeError:
            continue
    return None


def layer_structure(model: nn.Module, layer: int) -> LayerStructure:
    """The :class:`LayerStructure` of ``layer`` (Llama/Gemma/Qwen/Mistral names, OPT, GPT-NeoX, GPT-2).

    Raises:
        ValueError: the layer's attention output or MLP projections are not found by name.
    """
    anatomy = get_anatomy(model)
    index = anatomy.resolve_layers(layer)[0]
    cfg = anatomy.text_config
    layer_path = f"{anatomy.layers_path}.{index}"
    attn_path = next(f"{layer_path}.{n}" for n, m in anatomy.layers[index].named_modules()
                     if m is anatomy.attentions[index])
    mlp = anatomy.mlps[index]
    mlp_path = layer_path if mlp is None else next(f"{layer_path}.{n}" for n, m in anatomy.layers[index].named_modules()
                                                    if m is mlp)
    attn_out = _find(model, attn_path, _ATTN_OUT)
    down = _find(model, mlp_path, _MLP_DOWN)
    ins = next((tuple(f"{mlp_path}.{n}" for n in group) for group in _MLP_IN
                if all(_find(model, mlp_path, (n,)) for n in group)), None)
    if attn_out is None or down is None or ins is None:
        raise ValueError(f"cannot find the attention output / MLP projections of layer {index} in "
                         f"{type(model).__name__}; structured pruning knows {_ATTN_OUT} and {_MLP_DOWN} / {_MLP_IN}")
    heads = int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
    hidden = linear_weight(model.get_submodule(attn_out)).shape[0]
    head_dim = linear_weight(model.get_submodule(attn_out)).shape[1] // heads
    q = _find(model, attn_path, _ATTN_Q)
    kvp = tuple(n for n in (_find(model, attn_path, (k,)) for k in _ATTN_KV[0]) if n)
    return LayerStructure(index, attn_out, down, ins, q, kvp if q else (), heads, kv, head_dim, hidden,
                          linear_weight(model.get_submodule(down)).shape[1])


def _head_order(model: nn.Module, s: LayerStructure) -> list[int]:
    w = linear_weight(model.get_submodule(s.attn_out)).detach().float()  # [hidden, heads * head_dim]
    norms = w.view(w.shape[0], s.num_heads, s.head_dim).pow(2).sum((0, 2))
    return torch.argsort(norms, stable=True).tolist()


def _channel_order(model: nn.Module, s: LayerStructure) -> list[int]:
    down = linear_weight(model.get_submodule(s.mlp_down)).detach().float()  # [hidden, inter]
    up = linear_weight(model.get_submodule(s.mlp_in[-1])).detach().float()  # [inter, hidden]
    score = down.norm(dim=0) * up.norm(dim=1)
    return torch.argsort(score, stable=True).tolist()


def pruned_units(model: nn.Module, layer: int, structure: str, fraction: float) -> list[int]:
    """The heads or channels of ``layer`` removed at ``fraction`` (``round(fraction · count)``, smallest first)."""
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    check_probability("fraction", fraction)
    s = layer_structure(model, layer)
    order = _head_order(model, s) if structure == "heads" else _channel_order(model, s)
    return sorted(order[: int(round(fraction * len(order)))])


def removed_parameters(model: nn.Module, spec: Mapping[tuple[int, str], float]) -> int:
    """Parameters that ``spec`` (``{(layer, "heads"|"mlp"): fraction}``) removes (see the module docstring)."""
    total = 0
    for (layer, structure), fraction in spec.items():
        s = layer_structure(model, layer)
        units = pruned_units(model, layer, structure, fraction)
        if structure == "mlp":
            total += len(units) * s.params_per_channel()
            continue
        total += len(units) * s.params_per_head()
        per_group = s.num_heads // s.num_kv_heads
        groups = {h // per_group for h in units}
        total += sum(s.params_per_kv_group() for g in groups
                     if all(h in units for h in range(g * per_group, (g + 1) * per_group)))
    return total


@contextlib.contextmanager
def structured_prune(model: nn.Module, spec: Mapping[tuple[int, str], float]) -> Iterator[int]:
    """Remove heads / MLP channels inside the block (weights restored bit-exactly after); yields the number of
    removed parameters.

    Args:
        model: a transformers causal LM.
        spec: ``{(layer, "heads" | "mlp"): fraction in [0, 1]}``.
    """
    from .compression import weight_perturbation

    changes = {}
    for (layer, structure), fraction in spec.items():
        s = layer_structure(model, layer)
        units = pruned_units(model, layer, structure, fraction)
        if not units:
            continue
        if structure == "heads":
            cols = torch.tensor([h * s.head_dim + d for h in units for d in range(s.head_dim)])
            name = s.attn_out
        else:
            cols = torch.tensor(units)
            name = s.mlp_down
        previous = changes.get(name)

        def zero(w, cols=cols, previous=previous):
            w = previous(w) if previous else w.clone()
            w[:, cols] = 0
            return w
        changes[name] = zero
    with weight_perturbation(model, changes):
        yield removed_parameters(model, spec)
