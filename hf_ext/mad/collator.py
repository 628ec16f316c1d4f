"""Batching MAD examples for transformers causal LMs without the silent double shift.

MAD ``targets`` are already aligned to input positions (``targets[t]`` is what position ``t`` must predict). A
transformers ``*ForCausalLM`` given ``labels`` shifts them once more, which silently trains on the wrong token.
:class:`MADCollator` therefore emits ``labels`` **and** ``shift_labels`` (both = ``targets``):
``transformers.loss.loss_utils.ForCausalLMLoss`` skips its shift when ``shift_labels`` is given, and models that
forward ``**kwargs`` to ``self.loss_function`` (Llama, Mistral, Qwen2/3, Mamba, Mamba2, Jamba, ...) pick it up.

Example:
    >>> import numpy as np
    >>> from hf_ext.mad.collator import MADCollator
    >>> batch = MADCollator()([{"input_ids": [1, 2, 3], "targets": [2, 3, -100]}])
    >>> batch["input_ids"].tolist(), batch["shift_labels"].tolist()
    ([[1, 2, 3]], [[2, 3, -100]])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class MADCollator:
    """Stack MAD rows into ``{"input_ids", "labels", "shift_labels"}`` long tensors ``[B, L]``.

    Attributes:
        emit_labels: also emit ``labels`` (needed by ``Trainer`` to compute the loss; the loss itself uses
            ``shift_labels``). Set False when computing the loss yourself.
        attention_mask: also emit an all-ones ``attention_mask`` (MAD rows have no padding).
    """

    emit_labels: bool = True
    attention_mask: bool = False

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict:
        import numpy as np
        import torch

        if not rows:
            raise ValueError("MADCollator got an empty batch")
        for key in ("input_ids", "targets"):
            if key not in rows[0]:
                raise ValueError(f"MADCollator: rows need an {key!r} column (got {sorted(rows[0])}); MAD datasets "
                                 "have input_ids and targets")
        x = torch.as_tensor(np.asarray([np.asarray(r["input_ids"]) for r in rows]), dtype=torch.long)
        y = torch.as_tensor(np.asarray([np.asarray(r["targets"]) for r in rows]), dtype=torch.long)
        if x.shape != y.shape:
            raise ValueError(f"MADCollator: input_ids {tuple(x.shape)} and targets {tuple(y.shape)} differ in shape")
        out = {"input_ids": x, "shift_labels": y}
        if self.emit_labels:
            out["labels"] = y
        if self.attention_mask:
            out["attention_mask"] = torch.ones_like(x)
        return out
