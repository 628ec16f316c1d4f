"""FSDP2 for SCAR training: the adapter is one FSDP unit.

A SCAR adapter is a sparse autoencoder (``W_enc`` ``[L, D]``, ``W_dec`` ``[D, L]``, two biases), not a decoder stack:
its forward reads both matrices directly, so the whole adapter is the (root) unit. At the released shape
(Llama-3-8B, D = 4096, L = 24,576) that is 201M parameters, 2.4 GB with Adam's state in fp32, divided by the number
of processes. The base model is not trained and not sharded (cache its activations first,
:func:`hf_ext.scar.build_activation_dataset`).

Example (under ``torchrun --nproc_per_node 2``):
    >>> from hf_ext.scar import ScarAdapter, ScarConfig
    >>> adapter = ScarAdapter(ScarConfig(n_inputs=16, n_latents=64, k=8))
    >>> adapter = shard_scar(adapter)  # needs a process group  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from ..core.sharding import shard_model
from .modeling_scar import ScarAdapter

__all__ = ["shard_scar"]


def shard_scar(adapter: ScarAdapter, **shard_kwargs: Any) -> ScarAdapter:
    """Shard a detached :class:`~hf_ext.scar.ScarAdapter` with FSDP2 (in place; returned) for training on activations.

    Args:
        adapter: the adapter (the same initial weights on every process).
        **shard_kwargs: see :func:`hf_ext.core.sharding.shard_model`.

    Raises:
        TypeError: not a ``ScarAdapter``.
        ValueError: the adapter is attached to a model (its hook reads the weights outside the adapter's forward,
            where FSDP would not gather them): train on cached activations, then attach the saved adapter.
    """
    if not isinstance(adapter, ScarAdapter):
        raise TypeError(f"shard_scar expects a ScarAdapter, got {type(adapter).__name__}")
    if adapter.is_attached:
        raise ValueError("the ScarAdapter is attached to a model; detach() it and train on cached activations "
                         "(build_activation_dataset) before sharding")
    return shard_model(adapter, [], **shard_kwargs)
