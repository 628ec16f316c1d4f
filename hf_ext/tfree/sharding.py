"""FSDP2 for T-FREE: the backbone's decoder layers, the hashed embedding and the sparse head, then the root.

T-FREE's two ``v × h`` matrices (the trigram ``EmbeddingBag`` and the multi-label head) are the model's largest
tensors after the layers; each becomes its own FSDP unit so that only one of them is gathered at a time.

Example (under ``torchrun --nproc_per_node 2``):
    >>> from hf_ext.tfree.training import tiny_tfree
    >>> model, tok = tiny_tfree("llama")
    >>> model = shard_tfree(model)  # needs a process group  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..core.sharding import decoder_layers, shard_model

__all__ = ["shard_tfree"]


def shard_tfree(model: nn.Module, **shard_kwargs: Any) -> nn.Module:
    """Shard a :class:`~hf_ext.tfree.TFreeForCausalLM` with FSDP2 (in place; returned).

    Units: every decoder layer of the backbone (found by the model anatomy, any family), the input embedding
    (``get_input_embeddings()``) and the head (``get_output_embeddings()``); then the root.

    Args:
        model: a T-FREE model (the same initial weights on every process).
        **shard_kwargs: see :func:`hf_ext.core.sharding.shard_model`.

    Raises:
        ValueError: the model has no input embedding or head module.
    """
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if not isinstance(embed, nn.Module) or not isinstance(head, nn.Module):
        raise ValueError(f"{type(model).__name__} has no input embedding / head module to shard; shard_tfree expects a "
                         "TFreeForCausalLM")
    units = [*decoder_layers(model), embed]
    if head is not embed:
        units.append(head)
    return shard_model(model, units, **shard_kwargs)
