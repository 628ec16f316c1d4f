"""u-μP training on 1 or N processes (DDP or FSDP2) with an Accelerate loop, and its launch script.

:func:`train_umup` trains a causal LM with AdamW over :func:`~hf_ext.umup.umup_param_groups` (per-role LRs,
independent weight decay) and a warm-up + cosine schedule. The global batch of step ``s`` is a function of
``(seed, s)`` only and each process takes its contiguous share, so 1 process and N processes see the same tokens; the
gradients are averaged across processes (DDP through ``accelerator.prepare``, or FSDP2's reduce-scatter when sharded
with :func:`~hf_ext.umup.sharding.shard_umup`). u-μP scales every weight gradient by ``1/sqrt(local tokens)``, a
factor common to all tensors that Adam cancels, so the weights agree with one process up to float rounding.

``hf-ext umup train`` trains a byte-level u-μP Llama on the interpreter's standard library source (offline) and
saves it with ``save_pretrained``. Launch recipes::

    torchrun --nproc_per_node 2 -m hf_ext.cli umup train --steps 4 --out runs/umup-ddp            # DDP (CPU: gloo)
    torchrun --nproc_per_node 2 -m hf_ext.cli umup train --steps 4 --fsdp --out runs/umup-fsdp    # FSDP2
    accelerate launch --config_file configs/accelerate/fsdp2.yaml -m hf_ext.cli umup train --out runs/umup  # GPUs

Example:
    >>> from hf_ext.umup.training import build_byte_model, train_umup
    >>> model = build_byte_model(width=32, depth=2, seq_len=16)
    >>> losses = train_umup(model, steps=2, batch_size=4, seq_len=16, progress=False)
    >>> len(losses)
    2
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from hf_ext.utils.logging import get_logger
from hf_ext.utils.validation import check_size

if TYPE_CHECKING:
    from accelerate import Accelerator

    from .modeling_umup import UMupLlamaForCausalLM

logger = get_logger(__name__)

__all__ = ["build_byte_model", "global_batch", "main", "train_umup"]


def build_byte_model(width: int = 64, depth: int = 2, seq_len: int = 64, head_dim: int = 16,
                     seed: int = 0) -> UMupLlamaForCausalLM:
    """A seeded byte-level (vocab 256) :class:`~hf_ext.umup.UMupLlamaForCausalLM` of ``width`` and ``depth``.

    Raises:
        ValueError: ``width`` is not a multiple of ``head_dim``.
    """
    from .sweep import build_model

    return build_model("umup", width, depth=depth, seq_len=seq_len, head_dim=head_dim, seed=seed)


def global_batch(data: torch.Tensor, step: int, batch_size: int, seq_len: int, seed: int) -> torch.Tensor:
    """``[batch_size, seq_len]`` windows of the token stream ``data`` for ``step``: a function of ``(seed, step)``."""
    if data.numel() <= seq_len + 1:
        raise ValueError(f"data has {data.numel()} tokens; need more than seq_len + 1 = {seq_len + 1}")
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    starts = torch.randint(0, data.numel() - seq_len, (batch_size,), generator=g)
    return torch.stack([data[s:s + seq_len] for s in starts.tolist()]).long()


def _schedule(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))


def train_umup(model: nn.Module, data: torch.Tensor | None = None, *, steps: int = 100, batch_size: int = 16,
               seq_len: int = 64, lr: float = 0.5, weight_decay: float = 0.0, warmup: int = 0, seed: int = 0,
               accelerator: Accelerator | None = None, fsdp: bool = False, progress: bool = True) -> list[float]:
    """Train ``model`` (u-μP roles on its modules) for ``steps`` steps; returns the global mean loss of every step.

    Args:
        model: e.g. :func:`build_byte_model` or any :class:`~hf_ext.umup.UMupLlamaForCausalLM`; every process must
            hold the same initial weights (same seed or checkpoint).
        data: a 1-D token stream (default: the standard-library bytes of :func:`hf_ext.umup.sweep.stdlib_bytes`).
        steps, seq_len, lr, weight_decay, warmup: optimisation (``lr`` is u-μP's base LR η, O(1)).
        batch_size: the **global** batch (split across processes; must be divisible by their number).
        seed: keys every batch.
        accelerator: an ``accelerate.Accelerator`` (default: a new one, CPU without CUDA).
        fsdp: shard with FSDP2 (:func:`~hf_ext.umup.sharding.shard_umup`) even without an Accelerate FSDP2 launch.
        progress: tqdm bar on the main process.

    With sharding the model stays sharded afterwards (``DTensor`` parameters): save it through
    :func:`hf_ext.core.sharding.unsharded_copy` (called on every process).

    Raises:
        ValueError: ``batch_size`` not divisible by the number of processes, or a non-positive ``steps``.
    """
    from accelerate import Accelerator

    from hf_ext.utils.progress import progress_bar

    from ..core.sharding import sharding_kwargs
    from .optimization_umup import umup_param_groups
    from .sharding import shard_umup
    from .sweep import stdlib_bytes

    check_size("steps", steps)
    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    world, rank = acc.num_processes, acc.process_index
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} is not divisible by the {world} processes")
    data = stdlib_bytes() if data is None else data
    shard = sharding_kwargs(acc, fsdp)
    model.train()
    if shard is not None:
        model = shard_umup(model, device=acc.device, **shard)
        opt = torch.optim.AdamW(umup_param_groups(model, lr, weight_decay))
        trained = model
    else:
        opt = torch.optim.AdamW(umup_param_groups(model, lr, weight_decay))
        trained, opt = acc.prepare(model, opt)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, warmup))
    local = batch_size // world
    losses: list[float] = []
    for step in progress_bar(range(steps), desc="u-μP training", enabled=progress and acc.is_main_process):
        batch = global_batch(data, step, batch_size, seq_len, seed)[rank * local:(rank + 1) * local].to(acc.device)
        loss = trained(batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        opt.step()
        sched.step()
        losses.append(float(acc.reduce(loss.detach(), reduction="mean")) if world > 1 else float(loss.detach()))
    model.eval()
    return losses


def main(argv: Sequence[str] | None = None) -> int:
    """Deprecated (removed in 0.3): ``python -m hf_ext.umup.training ARGS`` is ``python -m hf_ext umup train ARGS``."""
    from hf_ext.cli import main as cli_main
    from hf_ext.utils.deprecation import warn_deprecated

    warn_deprecated("python -m hf_ext.umup.training", "python -m hf_ext umup train", category=FutureWarning)
    return cli_main(["umup", "train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
