"""FSDP2 for u-μP: shard the decoder layers and the root, and check that every tensor keeps its u-μP role.

µP implementations that keep their metadata on the parameters lose it under FSDP (mup #59: FSDP1 flattens the
tensors, so ``infshape`` and the LR groups derived from it are gone). hf_ext keeps the roles on the *modules*
(``_umup_role`` / ``_umup_depth``) and derives each tensor's LR multiplier from its *global* shape, which FSDP2's
``DTensor`` reports unchanged, so :func:`hf_ext.umup.umup_param_groups` gives the same groups before and after
sharding. :func:`shard_umup` verifies exactly that and raises otherwise. Build the optimizer **after** sharding.

Example (under ``torchrun --nproc_per_node 2``):
    >>> from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM, umup_param_groups
    >>> model = UMupLlamaForCausalLM(UMupConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
    ...                                         num_hidden_layers=2, num_attention_heads=4))
    >>> model = shard_umup(model)  # needs a process group  # doctest: +SKIP
    >>> optimizer = torch.optim.AdamW(umup_param_groups(model, lr=0.5, weight_decay=0.01))  # needs a process group  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..core.sharding import shard_model

__all__ = ["group_summary", "shard_umup"]


def group_summary(groups: torch.optim.Optimizer | Sequence[Mapping[str, Any]], model: nn.Module) -> list[tuple[str, float, float, float, tuple[str, ...]]]:
    """``[(name, lr, weight_decay, lr_multiplier, parameter names)]`` of an optimizer's (or a group list's) groups.

    Parameters are named through ``model`` (by identity), so the summary of an optimizer built on a sharded model can
    be compared with the unsharded model's.

    Example:
        >>> from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM, umup_param_groups
        >>> m = UMupLlamaForCausalLM(UMupConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
        ...                                     num_hidden_layers=2, num_attention_heads=4))
        >>> name, lr, weight_decay, multiplier, params = group_summary(umup_param_groups(m, lr=1.0), m)[0]
        >>> name, round(lr, 4), params
        ('embedding', 0.1768, ('model.embed_tokens.weight',))
    """
    groups = groups.param_groups if isinstance(groups, torch.optim.Optimizer) else groups
    names = {id(p): n for n, p in model.named_parameters()}
    out = []
    for g in groups:
        unknown = [tuple(p.shape) for p in g["params"] if id(p) not in names]
        if unknown:
            raise ValueError(f"group {g.get('name')!r} holds parameters that are not in the model {unknown[:3]}: an "
                             "optimizer built before sharding keeps the replaced tensors; build it after shard_umup")
        out.append((g.get("name", ""), float(g["lr"]), float(g.get("weight_decay", 0.0)),
                    float(g.get("lr_multiplier", 1.0)), tuple(sorted(names[id(p)] for p in g["params"]))))
    return out


def shard_umup(model: nn.Module, **shard_kwargs: Any) -> nn.Module:
    """Shard a u-μP model (e.g. :class:`~hf_ext.umup.UMupLlamaForCausalLM`) with FSDP2 and verify its LR groups.

    Decoder layers (found by the model anatomy), then the root, as :func:`hf_ext.core.sharding.shard_model`. Before
    and after, :func:`~hf_ext.umup.umup_param_groups` is evaluated (at ``lr=1``, ``weight_decay=1``): the group names,
    LR multipliers, weight decays and the parameter names of each group must be identical.

    Args:
        model: a model whose u-μP modules carry ``_umup_role`` (role-less parameters go to the ``"non_umup"`` group
            for the check, as ``allow_non_unit_scaling_params=True``).
        **shard_kwargs: ``device``, ``mesh``, ``reshard_after_forward``, ``mp_policy``, ``offload_policy`` (see
            :func:`~hf_ext.core.sharding.shard_model`; :func:`~hf_ext.core.sharding.sharding_kwargs` reads them from an
            Accelerate FSDP2 launch).

    Returns:
        The sharded ``model``.

    Raises:
        RuntimeError: the groups differ after sharding (the message lists the first difference).
    """
    from .optimization_umup import umup_param_groups

    def summary():
        return group_summary(umup_param_groups(model, lr=1.0, weight_decay=1.0, allow_non_unit_scaling_params=True),
                             model)

    before = summary()
    shard_model(model, **shard_kwargs)
    after = summary()
    if before != after:
        diff = next((b, a) for b, a in zip(before + [None] * len(after), after + [None] * len(before)) if b != a)
        raise RuntimeError(f"u-μP parameter groups changed under sharding: before {diff[0]}, after {diff[1]}")
    return model
