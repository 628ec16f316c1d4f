"""``evaluate`` modules of hf_ext, one folder each (``<name>/<name>.py``), loadable with ``evaluate.load(path)``.

They are thin shims over the components' plain functions (evaluate is in maintenance mode and an optional
extra); inside Python, prefer the component API or instantiate the module class directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def metric_path(name: str) -> str:
    """Folder of the metric ``name`` for ``evaluate.load(metric_path(name))``.

    Raises:
        ValueError: no such metric; the message lists the available ones.
    """
    root = Path(__file__).resolve().parent
    available = sorted(p.name for p in root.iterdir() if (p / f"{p.name}.py").is_file())
    if name not in available:
        raise ValueError(f"no hf_ext metric {name!r}; available: {available}")
    return str(root / name)


def module_info(info_class: type, *, description: str, citation: str, inputs: str, features: Any,
                urls: Sequence[str], **extra: Any) -> Any:
    """The ``_info()`` of an hf_ext ``evaluate`` module.

    Args:
        info_class: ``evaluate.MetricInfo`` or ``evaluate.ComparisonInfo``.
        description, citation, inputs: the module's texts (``inputs`` is its ``inputs_description``).
        features: the ``datasets.Features`` of its inputs.
        urls: reference URLs (paper, reference code).
        **extra: further fields (``module_type="comparison"`` …).
    """
    return info_class(description=description, citation=citation, inputs_description=inputs, features=features,
                      reference_urls=list(urls), **extra)
