"""MAD accuracy: torchmetrics' ``MulticlassAccuracy`` (macro, mad-lab parity) and plain micro accuracy.

mad-lab's ``Accuracy`` is ``torchmetrics.MulticlassAccuracy(num_classes=V, ignore_index=-100)`` whose default is
``average="macro"``: per-class recall ``tp / (tp + fn)`` averaged over the classes with ``tp + fp + fn > 0`` (a class
that is predicted but never a target counts as 0; a class that never occurs is left out). ``micro`` is the fraction
of scored positions predicted right.

Example:
    >>> import numpy as np
    >>> refs = np.array([[0, 0, 1, -100]]); preds = np.array([[0, 0, 0, 3]])
    >>> mad_accuracy(preds, refs, average="micro"), mad_accuracy(preds, refs, average="macro")
    (0.6666666666666666, 0.5)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..utils.imports import require
from .config import IGNORE_INDEX

if TYPE_CHECKING:
    from numpy.typing import ArrayLike  # numpy arrays, (nested) lists and torch tensors (CPU) alike

__all__ = ["mad_accuracy", "mad_accuracy_from_logits"]


def _np(a: Any):
    import numpy as np

    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _scored(preds, refs, num_classes: int | None, ignore_index: int):
    """Flat scored predictions and references (``refs != ignore_index``) and the number of classes, validated."""
    import numpy as np

    p, r = _np(preds).reshape(-1), _np(refs).reshape(-1)
    if p.shape != r.shape:
        raise ValueError(f"mad_accuracy: predictions ({p.size} values) and references ({r.size}) must match in size")
    keep = r != ignore_index
    p, r = p[keep].astype(np.int64), r[keep].astype(np.int64)
    if num_classes is None:
        num_classes = int(max(p.max(initial=-1), r.max(initial=-1))) + 1
    if p.size and (p.min() < 0 or r.min() < 0 or p.max() >= num_classes or r.max() >= num_classes):
        raise ValueError(f"mad_accuracy: class ids must lie in [0, num_classes={num_classes}) (got predictions in "
                         f"[{p.min()}, {p.max()}], references in [{r.min()}, {r.max()}])")
    return p, r, num_classes


def mad_accuracy(predictions: ArrayLike, references: ArrayLike, average: str = "macro", num_classes: int | None = None,
                 ignore_index: int = IGNORE_INDEX) -> float:
    """Accuracy over the scored positions (``references != ignore_index``), by torchmetrics' ``MulticlassAccuracy``.

    Args:
        predictions: predicted ids (argmax), any shape (numpy array, list or torch tensor).
        references: MAD targets of the same shape, ``-100`` ignored.
        average: ``"macro"`` (torchmetrics ``MulticlassAccuracy`` default, as mad-lab reports) or ``"micro"``.
        num_classes: the vocab size (default: the largest id + 1; macro excludes absent classes anyway).
        ignore_index: the ignored target value.

    Returns:
        float in [0, 1] (computed in float64); ``0.0`` if nothing is scored.

    Raises:
        ValueError: unknown ``average``, shape mismatch or ids outside ``[0, num_classes)``.
        ImportError: torchmetrics is missing (install ``hf-ext[eval]``).

    Example:
        >>> mad_accuracy([[1, 2]], [[1, -100]], average="micro")
        1.0
    """
    if average not in ("macro", "micro"):
        raise ValueError(f"mad_accuracy: average must be 'macro' (mad-lab parity) or 'micro', got {average!r}")
    p, r, num_classes = _scored(predictions, references, num_classes, ignore_index)
    if r.size == 0:
        return 0.0
    import torch

    classification = require("torchmetrics.classification")
    metric = classification.MulticlassAccuracy(num_classes=num_classes, average=average, validate_args=False)
    metric.set_dtype(torch.float64)
    return float(metric(torch.from_numpy(p), torch.from_numpy(r)))


def mad_accuracy_from_logits(logits: ArrayLike, references: ArrayLike, average: str = "macro",
                             ignore_index: int = IGNORE_INDEX) -> float:
    """:func:`mad_accuracy` of ``logits.argmax(-1)`` (``logits [..., V]``, ``V`` = number of classes)."""
    a = _np(logits)
    return mad_accuracy(a.argmax(-1), references, average=average, num_classes=a.shape[-1], ignore_index=ignore_index)
