"""Tour step ``environment`` (component ``core``): versions, device, and tiny-model forward speed.

It records the library versions and the device, times a forward of the tiny Llama of
:func:`hf_ext.testing.tiny_causal_lm` on a short input (tokens/s), and plots the forward times of the
five tiny families of :data:`hf_ext.testing.CAUSAL_LM_FAMILIES` as a PNG bar chart (skipped with a note
when matplotlib is not installed). With ``--model`` it also times that checkpoint's forward.

Example:
    >>> from pathlib import Path
    >>> from hf_ext.tour import TourContext
    >>> from hf_ext.tour.environment import environment_step
    >>> result = environment_step(TourContext(out_dir=Path("/tmp/env-step")))
    >>> result.metrics["llama_tokens_per_s"] > 0
    True
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from hf_ext.utils.logging import get_logger

from .registry import StepResult, TourContext, tour_step

logger = get_logger(__name__)

_TEXT = "The quick brown fox jumps over the lazy dog."


def _time_forward(model, input_ids, *, repeats: int, device: str) -> float:
    """Median seconds of ``model(input_ids)`` over ``repeats`` runs after two warm-up runs."""
    import torch

    def sync():
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    times = []
    with torch.inference_mode():
        for _ in range(2):  # warm-up: first-call allocations and dispatch
            model(input_ids)
        sync()
        for _ in range(repeats):
            start = time.perf_counter()
            model(input_ids)
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _bar_chart(path: Path, times_ms: dict[str, float], device: str, shape: tuple[int, ...]) -> Path:
    from hf_ext.utils.imports import require

    require("matplotlib")
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state (safe inside notebooks)

    fig = Figure(figsize=(5, 3), dpi=100, layout="tight")
    ax = fig.add_subplot()
    names = list(times_ms)
    ax.bar(names, [times_ms[n] for n in names], color="#4c72b0")
    ax.set_ylabel("forward time (ms, median)")
    ax.set_title(f"Tiny causal LMs, one forward of {shape[0]}×{shape[1]} tokens ({device})", fontsize=10)
    for i, n in enumerate(names):
        ax.annotate(f"{times_ms[n]:.2f}", (i, times_ms[n]), ha="center", va="bottom", fontsize=8)
    fig.savefig(path, format="png")
    return path


@tour_step("environment", component="core", order=0,
           description="Versions, device, and forward speed of the five tiny causal-LM families.")
def environment_step(ctx: TourContext) -> StepResult:
    """Versions + device + timed tiny forwards; writes ``forward_times.png``."""
    import torch

    from hf_ext.cli import environment_info
    from hf_ext.tiny import CAUSAL_LM_FAMILIES, tiny_causal_lm, tiny_tokenizer

    info = environment_info()
    metrics: dict[str, float | str] = {}
    tok = tiny_tokenizer()
    text = _TEXT * (2 if ctx.full else 1)
    batch = 8 if ctx.full else 4
    repeats = 50 if ctx.full else 15  # the median of many short runs resists a noisy machine
    input_ids = tok([text] * batch, return_tensors="pt").input_ids.to(ctx.device)
    n_tokens = input_ids.numel()

    times_ms: dict[str, float] = {}
    for family in CAUSAL_LM_FAMILIES:
        model = tiny_causal_lm(family, seed=ctx.seed).to(ctx.device)
        times_ms[family] = 1e3 * _time_forward(model, input_ids, repeats=repeats, device=ctx.device)
        del model
    metrics["llama_tokens_per_s"] = n_tokens / (times_ms["llama"] / 1e3)
    metrics["llama_forward_ms"] = times_ms["llama"]
    metrics["device"] = info["device"]
    metrics["torch"] = info["versions"]["torch"]
    metrics["transformers"] = info["versions"]["transformers"]
    for family, ms in times_ms.items():
        metrics.setdefault(f"{family}_forward_ms", ms)

    notes = []
    if ctx.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        if not ctx.progress:
            hf_logging.disable_progress_bar()
        try:
            user_tok = AutoTokenizer.from_pretrained(ctx.model)
            user_model = AutoModelForCausalLM.from_pretrained(ctx.model).to(ctx.device).eval()
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        ids = user_tok([_TEXT], return_tensors="pt").input_ids.to(ctx.device)
        seconds = _time_forward(user_model, ids, repeats=3, device=ctx.device)
        metrics["model_tokens_per_s"] = ids.numel() / seconds
        notes.append(f"`{ctx.model}` ({type(user_model).__name__}) ran at {ids.numel() / seconds:.0f} tokens/s "
                     f"on a {ids.numel()}-token input.")

    artifacts: list[Path] = []
    try:
        artifacts.append(_bar_chart(ctx.artifact("forward_times.png"), times_ms, ctx.device, tuple(input_ids.shape)))
    except ImportError as err:
        notes.append(f"No plot: {err}")
        logger.warning("environment step: skipping the plot (%s)", err)

    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    summary = (
        f"{versions}. Device: {info['device']} ({info['device_detail']}), torch threads {torch.get_num_threads()}. "
        f"Tiny Llama forward on {batch}×{input_ids.shape[1]} tokens: {times_ms['llama']:.2f} ms "
        f"({metrics['llama_tokens_per_s']:.0f} tokens/s, median of {repeats})."
    )
    return StepResult(metrics=metrics, summary=" ".join([summary, *notes]), artifacts=artifacts)
