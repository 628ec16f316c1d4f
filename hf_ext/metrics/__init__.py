"""``evaluate`` modules of hf_ext, one folder each (``<name>/<name>.py``), loadable with ``evaluate.load(path)``.

They are thin shims over the components' plain functions (evaluate is in maintenance mode and an optional
extra); inside Python, prefer the component API or instantiate the module class directly.
"""

from __future__ import annotations

from pathlib import Path


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
