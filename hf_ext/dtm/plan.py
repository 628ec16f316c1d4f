"""A DTM compression plan: which decoder-Linear components go to int8 and how sparse each one is pruned (JSON).

Built by :func:`hf_ext.dtm.compression.build_plan`, simulated by :func:`hf_ext.dtm.compression.compressed`,
deployed by :func:`hf_ext.dtm.deployment.apply_plan`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .int8 import linear_weight
from .perturbation import get_component, list_components

__all__ = ["CompressionPlan", "parameter_shares"]


@dataclass
class CompressionPlan:
    """Which components to store in int8 and a per-component sparsity map (JSON-serialisable).

    Attributes:
        int8: component names converted to int8 (absmax per row, weight only).
        sparsity: component name -> magnitude-pruning sparsity.
        order: the ranking the plan was built from (least damaging first).
        base_model: name of the base model (free text / Hub id).
        metrics: e.g. ``{"fdtm": …, "fdt_ratio": …, "int8_param_share": …, "mean_sparsity": …}`` after the plan.

    Example:
        >>> plan = CompressionPlan(int8=["model.layers.0.mlp.up_proj"], sparsity={})
        >>> CompressionPlan.from_json(plan.to_json()) == plan
        True
    """

    int8: list[str] = field(default_factory=list)
    sparsity: dict[str, float] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    base_model: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The plan as JSON (sorted keys), read back by :meth:`from_json`."""
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan as JSON to ``path`` in one rename (a reader sees the old plan or the new one); returns it."""
        from hf_ext.utils.saving import atomic_write_text

        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> CompressionPlan:
        """Read a plan written by :meth:`save` (or ``dtm_plan.json`` of :func:`~hf_ext.dtm.save_compressed`)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"plan file {str(path)!r} does not exist")
        return cls.from_json(path.read_text(encoding="utf-8"))

    @classmethod
    def from_json(cls, text: str) -> CompressionPlan:
        """Read a plan written by :meth:`to_json`; unknown keys raise ``ValueError``."""
        data = json.loads(text)
        unknown = set(data) - {"int8", "sparsity", "order", "base_model", "metrics"}
        if unknown:
            raise ValueError(f"unknown plan fields {sorted(unknown)}; is this a CompressionPlan JSON?")
        return cls(**data)

    def summary(self, model: nn.Module | None = None) -> dict[str, Any]:
        """Counts (and parameter shares when ``model`` is given)."""
        out: dict[str, Any] = {"int8_components": len(self.int8), "pruned_components": len(self.sparsity), **self.metrics}
        if model is not None:
            out.update(parameter_shares(model, self))
        return out


def parameter_shares(model: nn.Module, plan: CompressionPlan) -> dict[str, float]:
    """``{"int8_param_share", "mean_sparsity"}`` of ``plan`` over ``model``'s decoder-Linear parameters."""
    sizes = {n: linear_weight(get_component(model, n)).numel() for n in list_components(model)}
    total = sum(sizes.values())
    int8 = sum(sizes.get(n, 0) for n in plan.int8)
    zeros = sum(sizes.get(n, 0) * s for n, s in plan.sparsity.items())
    return {"int8_param_share": int8 / total, "mean_sparsity": zeros / total}
