"""The LR-transfer experiment: a byte-level LM on Python's standard-library source, u-μP vs standard parametrisation.

For each parametrisation (``"umup"``: :class:`UMupLlamaForCausalLM` + :func:`umup_param_groups`; ``"sp"``:
transformers' ``LlamaForCausalLM`` with its default init + one global AdamW LR), width and LR of a log2 grid,
train a fixed number of steps (linear warm-up, cosine decay, no weight decay) on random windows of the
concatenated ``*.py`` files of the running interpreter's standard library (present on every machine), and record
the mean training loss of the last steps. u-μP's optimal LR should stay put across widths while SP's shifts
(it halves per doubling of width in the literature).

Example:
    >>> rows = lr_sweep(widths=(32, 64), log2_lrs={"umup": [-1, 0], "sp": [-8, -7]}, steps=20, seeds=(0,),
    ...                 progress=False)
    >>> best_lrs(rows)
    {'umup': {32: 0, 64: 0}, 'sp': {32: -7, 64: -7}}
"""

from __future__ import annotations

import json
import math
import sysconfig
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_ext.utils.logging import get_logger

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

logger = get_logger(__name__)

PARAMETRIZATIONS: tuple[str, ...] = ("umup", "sp")
#: Default log2 LR grids (u-μP's optimum is O(1), SP's O(1e-3)).
DEFAULT_GRIDS: dict[str, list[int]] = {"umup": [-3, -2, -1, 0, 1, 2], "sp": [-11, -10, -9, -8, -7, -6]}

_DATA_CACHE: dict[tuple, Any] = {}


def stdlib_bytes(max_bytes: int = 2_000_000):
    """The first ``max_bytes`` bytes of the sorted ``*.py`` files of the interpreter's standard library (uint8 tensor).

    Raises:
        FileNotFoundError: no standard-library source found (a stripped Python install).
    """
    import torch

    key = ("stdlib", max_bytes)
    if key not in _DATA_CACHE:
        root = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(root.glob("*.py"))
        if not files:
            raise FileNotFoundError(f"no *.py files in the standard library folder {root}; pass your own data")
        buf = bytearray()
        for f in files:
            buf += f.read_bytes()
            if len(buf) >= max_bytes:
                break
        _DATA_CACHE[key] = torch.frombuffer(bytearray(buf[:max_bytes]), dtype=torch.uint8).long()
    return _DATA_CACHE[key]


def build_model(parametrization: str, width: int, *, depth: int = 2, seq_len: int = 64, head_dim: int = 32,
                vocab_size: int = 256, ffn_mult: int = 2, seed: int = 0) -> PreTrainedModel:
    """A byte-level Llama-style LM of ``width``: u-μP (:class:`UMupLlamaForCausalLM`) or SP (``LlamaForCausalLM``).

    Same architecture in both (pre-norm, RoPE, SwiGLU with ``ffn_mult·width``, untied head, SDPA); SP keeps
    transformers' default init (std 0.02) and affine RMSNorm.
    """
    import torch

    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"unknown parametrization {parametrization!r}; choose one of {PARAMETRIZATIONS}")
    if width % head_dim:
        raise ValueError(f"width={width} must be a multiple of head_dim={head_dim}")
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=ffn_mult * width,
                  num_hidden_layers=depth, num_attention_heads=width // head_dim, max_position_embeddings=max(seq_len, 64),
                  bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=False)
    if parametrization == "umup":
        from .configuration_umup import UMupConfig
        from .modeling_umup import UMupLlamaForCausalLM

        return UMupLlamaForCausalLM(UMupConfig(umup_attn_seq_len=seq_len, use_cache=False, **common))
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(use_cache=False, **common)
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg)


def build_optimizer(parametrization: str, model, lr: float, weight_decay: float = 0.0):
    """AdamW over u-μP's per-tensor groups (``"umup"``) or one global LR (``"sp"``)."""
    import torch

    if parametrization == "umup":
        from .optimization_umup import umup_param_groups

        return torch.optim.AdamW(umup_param_groups(model, lr, weight_decay))
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def _schedule(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_run(parametrization: str, width: int, log2_lr: float, *, steps: int = 200, seed: int = 0, batch_size: int = 16,
              seq_len: int = 64, depth: int = 2, warmup: int | None = None, tail: int | None = None, data=None) -> dict:
    """Train one model and return ``{"loss": mean of the last `tail` step losses, "diverged": bool, "seconds": …}``.

    The batches depend only on ``seed`` (the same windows for every LR and width: common random numbers).
    """
    import torch

    data = stdlib_bytes() if data is None else data
    if data.numel() <= seq_len + 1:
        raise ValueError(f"data has {data.numel()} tokens; need more than seq_len + 1 = {seq_len + 1}")
    warmup = max(1, steps // 6) if warmup is None else warmup
    tail = max(1, steps // 8) if tail is None else tail
    model = build_model(parametrization, width, depth=depth, seq_len=seq_len, seed=seed)
    model.train()
    opt = build_optimizer(parametrization, model, 2.0 ** log2_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, warmup))
    gen = torch.Generator().manual_seed(10_000 + seed)
    losses, t0 = [], time.perf_counter()
    for _ in range(steps):
        starts = torch.randint(0, data.numel() - seq_len - 1, (batch_size,), generator=gen)
        batch = torch.stack([data[s:s + seq_len] for s in starts.tolist()])
        loss = model(batch, labels=batch).loss
        if not torch.isfinite(loss.detach()):
            return {"loss": float("nan"), "diverged": True, "seconds": time.perf_counter() - t0}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return {"loss": sum(losses[-tail:]) / tail, "diverged": False, "seconds": time.perf_counter() - t0}


def lr_sweep(widths: Sequence[int] = (64, 128, 256), log2_lrs: dict[str, Sequence[float]] | None = None, *,
             parametrizations: Iterable[str] = PARAMETRIZATIONS, steps: int = 200, seeds: Sequence[int] = (0, 1),
             batch_size: int = 16, seq_len: int = 64, depth: int = 2, progress: bool = True,
             data: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """Run the grid; returns one row ``{"parametrization", "width", "log2_lr", "seed", "loss", "diverged", "seconds"}``
    per run (a diverged run has loss NaN).

    Args:
        widths: hidden sizes (multiples of 32: head_dim 32).
        log2_lrs: per parametrization the log2 LR grid (default :data:`DEFAULT_GRIDS`).
        parametrizations: ``"umup"`` and/or ``"sp"``.
        steps, seeds, batch_size, seq_len, depth: the training budget (byte-level, vocab 256).
        progress: a tqdm bar over runs.
        data: a 1-D long tensor of token ids (default :func:`stdlib_bytes`).
    """
    from hf_ext.utils.progress import progress_bar

    grids = {**DEFAULT_GRIDS, **(log2_lrs or {})}
    params = list(parametrizations)
    for p in params:
        if p not in PARAMETRIZATIONS:
            raise ValueError(f"unknown parametrization {p!r}; choose from {PARAMETRIZATIONS}")
    if not widths or not seeds:
        raise ValueError("lr_sweep needs at least one width and one seed")
    jobs = [(p, w, lr, s) for p in params for w in widths for lr in grids[p] for s in seeds]
    rows = []
    for p, w, lr, s in progress_bar(jobs, enabled=progress, desc="u-μP LR sweep"):
        res = train_run(p, w, lr, steps=steps, seed=s, batch_size=batch_size, seq_len=seq_len, depth=depth, data=data)
        rows.append({"parametrization": p, "width": w, "log2_lr": lr, "seed": s, **res})
        logger.info("%s width=%d lr=2^%s seed=%d loss=%.4f", p, w, lr, s, res["loss"])
    return rows


def mean_losses(rows: list[dict]) -> dict[str, dict[int, dict[float, float]]]:
    """``{parametrization: {width: {log2_lr: mean loss over seeds}}}`` (NaN if any seed diverged)."""
    acc: dict = {}
    for r in rows:
        acc.setdefault(r["parametrization"], {}).setdefault(r["width"], {}).setdefault(r["log2_lr"], []).append(r["loss"])
    return {p: {w: {lr: (sum(v) / len(v) if all(math.isfinite(x) for x in v) else float("nan"))
                    for lr, v in sorted(d.items())} for w, d in sorted(ws.items())} for p, ws in acc.items()}


def best_lrs(rows: list[dict]) -> dict[str, dict[int, float]]:
    """The optimal log2 LR per parametrization and width: the lowest mean loss over seeds (ties: the lower LR)."""
    out: dict[str, dict[int, float]] = {}
    for p, ws in mean_losses(rows).items():
        for w, d in ws.items():
            finite = {lr: loss for lr, loss in d.items() if math.isfinite(loss)}
            if finite:
                out.setdefault(p, {})[w] = min(finite, key=lambda lr: (finite[lr], lr))
    return out


def transfer_summary(rows: list[dict]) -> dict[str, Any]:
    """How the optimum (log2 LR) moves with width, per parametrization: ``<p>_shift`` (largest minus smallest width),
    ``<p>_range`` (max − min over all widths) and ``<p>_max_step_between_widths``."""
    best = best_lrs(rows)
    out: dict[str, Any] = {"best_log2_lr": {p: {str(w): lr for w, lr in d.items()} for p, d in best.items()}}
    for p, d in best.items():
        ws = sorted(d)
        out[f"{p}_shift"] = d[ws[-1]] - d[ws[0]] if len(ws) > 1 else 0.0
        out[f"{p}_range"] = max(d.values()) - min(d.values())
        out[f"{p}_max_step_between_widths"] = max((abs(d[b] - d[a]) for a, b in zip(ws, ws[1:])), default=0.0)
    return out


def plot_sweep(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Loss vs log2 LR, one line per width, one panel per parametrization; the optimum of each width marked."""
    from hf_ext.utils.imports import require

    require("matplotlib")
    from matplotlib.figure import Figure

    means, best = mean_losses(rows), best_lrs(rows)
    params = [p for p in ("sp", "umup") if p in means]
    fig = Figure(figsize=(5 * len(params), 3.8), layout="tight")
    finite = [v for ws in means.values() for d in ws.values() for v in d.values() if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0, 1)
    for k, p in enumerate(params):
        ax = fig.add_subplot(1, len(params), k + 1)
        for w, d in means[p].items():
            xs = list(d)
            line, = ax.plot(xs, [d[x] for x in xs], marker="o", label=f"width {w}")
            b = best.get(p, {}).get(w)
            if b is not None:
                ax.plot([b], [d[b]], marker="*", markersize=14, color=line.get_color())
        ax.set_xlabel("log2 learning rate")
        ax.set_ylabel("final training loss (mean over seeds)")
        ax.set_ylim(lo - 0.02 * (hi - lo), min(hi, lo + 1.5) + 0.02)
        ax.set_title({"sp": "standard parametrisation (LlamaForCausalLM)", "umup": "u-μP (UMupLlamaForCausalLM)"}[p],
                     fontsize=9)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def save_rows(rows: list[dict], path: str | Path) -> Path:
    """Write the rows and the transfer summary as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": rows, "summary": transfer_summary(rows)}, indent=1))
    return path
