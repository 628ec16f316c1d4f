"""Coordinate check (microsoft/mup-style): activation and gradient RMS per layer across widths, during training.

Under a correct maximal-update parametrisation the RMS of every activation and weight gradient stays O(1) as the
width grows (flat lines in the plot), at init and after some Adam steps. u-μP additionally puts them near 1 (unit
scale); the standard parametrisation's embedding output (std 0.02 init) and update-driven growth show up as lines
that move with width.

Example:
    >>> recs = coord_check(widths=(32, 64), parametrizations=("umup",), steps=2)
    >>> plot_coord_check(recs, "coord_check.png")
    PosixPath('coord_check.png')
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Default LRs (near each parametrisation's optimum in the stdlib-byte experiment).
DEFAULT_LRS: dict[str, float] = {"umup": 2.0**0, "sp": 2.0**-8}


def _rms(t) -> float:
    return float(t.detach().float().pow(2).mean().sqrt())


def coord_check(widths: Sequence[int] = (64, 128, 256), parametrizations: Iterable[str] = ("umup", "sp"), *,
                steps: int = 4, lrs: dict[str, float] | None = None, depth: int = 2, seq_len: int = 64,
                batch_size: int = 8, seed: int = 0, data: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """Train each (parametrisation, width) for ``steps`` Adam steps and record RMS values before every step.

    Returns:
        rows ``{"parametrization", "width", "step", "kind": "act"|"grad", "name", "rms"}``. Activations: the
        embedding output, every decoder layer's output (the residual stream) and the logits; gradients: every weight.

    Raises:
        ValueError: an unknown parametrisation, ``steps < 1`` or no widths.
    """
    import torch

    from ..core.hooks import forward_hooks
    from .sweep import PARAMETRIZATIONS, build_model, build_optimizer, stdlib_bytes

    params = list(parametrizations)
    for p in params:
        if p not in PARAMETRIZATIONS:
            raise ValueError(f"unknown parametrization {p!r}; choose from {PARAMETRIZATIONS}")
    if steps < 1 or not widths:
        raise ValueError(f"coord_check needs steps >= 1 and at least one width, got steps={steps}, widths={widths}")
    lrs = {**DEFAULT_LRS, **(lrs or {})}
    data = stdlib_bytes() if data is None else data
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, data.numel() - seq_len - 1, (steps, batch_size), generator=gen)
    batches = [torch.stack([data[s:s + seq_len] for s in row.tolist()]) for row in starts]
    rows: list[dict[str, Any]] = []
    for p in params:
        for w in widths:
            model = build_model(p, w, depth=depth, seq_len=seq_len, seed=seed)
            model.train()
            opt = build_optimizer(p, model, lrs[p])
            acts: dict[str, Any] = {}
            decoder = model.model
            hooks = {decoder.embed_tokens: lambda m, i, o, p, a=acts: a.__setitem__("embedding", o)}
            for k, layer in enumerate(decoder.layers):
                hooks[layer] = lambda m, i, o, p, k=k, a=acts: a.__setitem__(f"layer{k}", o[0] if isinstance(o, tuple) else o)
            with forward_hooks(hooks):
                for t, batch in enumerate(batches):
                    out = model(batch, labels=batch)
                    acts["logits"] = out.logits
                    opt.zero_grad(set_to_none=True)
                    out.loss.backward()
                    for name, a in acts.items():
                        rows.append({"parametrization": p, "width": w, "step": t, "kind": "act", "name": name,
                                     "rms": _rms(a)})
                    for name, prm in model.named_parameters():
                        if prm.grad is not None and prm.dim() == 2:
                            rows.append({"parametrization": p, "width": w, "step": t, "kind": "grad",
                                         "name": _short(name), "rms": _rms(prm.grad)})
                    opt.step()
    return rows


def _short(name: str) -> str:
    return name.replace("model.", "").replace(".weight", "").replace("self_attn.", "").replace("mlp.", "")


def plot_coord_check(rows: list[dict], path: str | Path, step: int | None = None) -> Path:
    """RMS vs width (log-log), one panel per parametrisation × {activations, weight gradients}, at ``step``
    (default: the last recorded step)."""
    from hf_ext.utils.imports import require

    require("matplotlib")
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("plot_coord_check got no rows")
    step = max(r["step"] for r in rows) if step is None else step
    params = [p for p in ("umup", "sp") if any(r["parametrization"] == p for r in rows)]
    fig = Figure(figsize=(9, 3.4 * len(params)), layout="tight")
    for i, p in enumerate(params):
        for j, kind in enumerate(("act", "grad")):
            ax = fig.add_subplot(len(params), 2, 2 * i + j + 1)
            sel = [r for r in rows if r["parametrization"] == p and r["kind"] == kind and r["step"] == step]
            for name in dict.fromkeys(r["name"] for r in sel):
                pts = sorted((r["width"], r["rms"]) for r in sel if r["name"] == name)
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker=".", label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("width")
            ax.set_ylabel("RMS")
            label = {"umup": "u-μP", "sp": "SP"}[p]
            ax.set_title(f"{label}: {'activations' if kind == 'act' else 'weight gradients'} after {step} steps",
                         fontsize=9)
            if kind == "act":
                ax.legend(fontsize=6, ncol=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def width_growth(rows: list[dict], parametrization: str, kind: str = "act", step: int | None = None) -> float:
    """max over tracked tensors of max(RMS)/min(RMS) across widths at ``step``: 1 means perfectly width-independent."""
    step = max(r["step"] for r in rows) if step is None else step
    sel = [r for r in rows if r["parametrization"] == parametrization and r["kind"] == kind and r["step"] == step]
    worst = 1.0
    for name in {r["name"] for r in sel}:
        vals = [r["rms"] for r in sel if r["name"] == name]
        if len(vals) > 1 and min(vals) > 0:
            worst = max(worst, max(vals) / min(vals))
    return worst
