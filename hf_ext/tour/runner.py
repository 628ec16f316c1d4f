"""Runs tour steps, prints one result table and writes ``runs/tour-<YYYYmmdd-HHMMSS>/report.md``.

Every step runs in order, is timed, and may fail without stopping the tour: its exception becomes a
``"failed"`` row with the error message. A step slower than its budget (30 s by default) is reported
with a warning unless ``full=True``; it is never killed.

Example:
    >>> from hf_ext.tour import run_tour
    >>> import io
    >>> run = run_tour(["environment"], out="runs", progress=False, stream=io.StringIO())
    >>> run.exit_code, run.report_path.name
    (0, 'report.md')

The ``hf-ext tour`` sub-command is defined here too (:func:`add_parser`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from hf_ext.utils.cli import add_common_options, finite_float, print_result, resolve_device
from hf_ext.utils.logging import get_logger
from hf_ext.utils.progress import library_progress_bars, progress_bar, progress_enabled

from ..markdown import markdown_table
from .registry import (
    DEFAULT_BUDGET_S,
    StepResult,
    TourContext,
    TourStep,
    _describe,
    registered_steps,
    select_steps,
)

logger = get_logger(__name__)

#: Default base folder of tour runs (relative to the working directory).
DEFAULT_OUT = Path("runs")
_TABLE_METRICS = 3


@dataclass
class StepRecord:
    """One executed step: the step, its result, wall-clock seconds and (if it raised) the traceback."""

    step: TourStep
    result: StepResult
    seconds: float
    over_budget: bool = False
    traceback: str | None = None


@dataclass
class TourRun:
    """The outcome of :func:`run_tour`.

    Attributes:
        run_dir: the run folder (``<out>/tour-<timestamp>``).
        report_path: ``run_dir / "report.md"``.
        records: one :class:`StepRecord` per step, in run order.
        table: the result table printed to the stream.
    """

    run_dir: Path
    report_path: Path
    records: list[StepRecord] = field(default_factory=list)
    table: str = ""

    @property
    def exit_code(self) -> int:
        """0 when no step failed, else 1."""
        return int(any(r.result.status == "failed" for r in self.records))




def _new_run_dir(base: Path) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = base / f"tour-{stamp}"
    i = 1
    while run_dir.exists():  # two runs in the same second
        run_dir = base / f"tour-{stamp}-{i}"
        i += 1
    run_dir.mkdir(parents=True)
    return run_dir


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def _key_metrics(result: StepResult, n: int = _TABLE_METRICS) -> str:
    items = list(result.metrics.items())
    text = ", ".join(f"{k}={_fmt(v)}" for k, v in items[:n])
    return text + (f" (+{len(items) - n})" if len(items) > n else "")


def format_table(records: list[StepRecord]) -> str:
    """The plain-text result table: step, component, status, seconds, key metrics."""
    header = ("step", "component", "status", "seconds", "key metrics")
    rows = [
        (r.step.name, r.step.component, r.result.status, f"{r.seconds:.1f}" + ("!" if r.over_budget else ""),
         _key_metrics(r.result) if r.result.status != "failed" else (r.result.summary.splitlines() or [""])[0][:80])
        for r in records
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header).rstrip(), "  ".join("-" * w for w in widths)]
    out += [line.format(*row).rstrip() for row in rows]
    if any(r.over_budget for r in records):
        out.append("! over its time budget (a warning only; --full runs have no budget)")
    return "\n".join(out)


def _rel(path: Path, run_dir: Path) -> str:
    path = Path(path)
    if not path.is_absolute():
        path = Path.cwd() / path
    return Path(os.path.relpath(path.resolve(), run_dir.resolve())).as_posix()


def write_report(run: TourRun, *, options: dict) -> Path:
    """Write ``report.md`` (one section per step) and ``results.json`` into ``run.run_dir``."""
    run_dir = run.run_dir
    lines = [f"# hf-ext tour — {run_dir.name}", ""]
    lines.append("Options: " + ", ".join(f"`{k}={v}`" for k, v in options.items()))
    lines += ["", markdown_table(["step", "component", "status", "seconds", "key metrics"],
                                 [[f"[{r.step.name}](#{r.step.name})", r.step.component, r.result.status,
                                   f"{r.seconds:.1f}", _key_metrics(r.result)] for r in run.records],
                                 align=["left", "left", "left", "right", "left"])]
    for r in run.records:
        res = r.result
        lines += ["", f'<a id="{r.step.name}"></a>', "", f"## {r.step.name} ({r.step.component})", ""]
        if r.step.description:
            lines += [f"*{r.step.description}*", ""]
        budget = f" — over its {options.get('budget_s', DEFAULT_BUDGET_S):g} s budget" if r.over_budget else ""
        lines += [f"Status: **{res.status}**, {r.seconds:.2f} s{budget}", ""]
        if res.summary:
            lines += [res.summary, ""]
        if r.traceback:
            lines += ["```", r.traceback.rstrip(), "```", ""]
        if res.metrics:
            lines += [markdown_table(["metric", "value"], [[k, _fmt(v)] for k, v in res.metrics.items()]), ""]
        for art in res.artifacts:
            rel = _rel(art, run_dir)
            if art.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"):
                lines += [f"![{art.name}]({rel})", ""]
            else:
                lines += [f"- [{art.name}]({rel})"]
        if res.artifacts:
            lines.append("")
    run.report_path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    results = {
        "options": options,
        "steps": [
            {**_describe(r.step), "status": r.result.status, "seconds": r.seconds, "over_budget": r.over_budget,
             "summary": r.result.summary, "metrics": r.result.metrics,
             "artifacts": [_rel(a, run_dir) for a in r.result.artifacts]}
            for r in run.records
        ],
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return run.report_path


def run_tour(
    steps: list[str] | None = None,
    *,
    out: str | os.PathLike | None = None,
    full: bool = False,
    seed: int = 0,
    model: str | None = None,
    device: str | None = "auto",
    progress: bool = True,
    budget_s: float = DEFAULT_BUDGET_S,
    stream: TextIO | None = None,
) -> TourRun:
    """Run tour steps and write the report.

    Args:
        steps: step names to run (in registry order), or ``None`` for all registered steps.
        out: base folder; the run goes to ``<out>/tour-<YYYYmmdd-HHMMSS>/`` (default ``runs/``).
        full: run the longer versions and do not warn about the budget.
        seed: seed passed to every step (and set for ``random``/torch before each step).
        model: optional Hub id for steps that can use a real checkpoint.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        progress: allow progress bars (one over the steps, and the steps' own), unless transformers' settings
            hide them (:func:`hf_ext.utils.progress.progress_enabled`).
        budget_s: per-step budget in seconds; exceeding it only logs a warning (without ``full``).
        stream: where the result table goes (default ``sys.stdout``; pass ``io.StringIO()`` to capture it).

    Returns:
        A :class:`TourRun`; ``run.exit_code`` is 1 if any step failed.

    Raises:
        ValueError: an unknown step name (the message lists the valid ones) or a negative budget.

    Example:
        >>> import io
        >>> run = run_tour(["environment"], out="runs", progress=False, stream=io.StringIO())
        >>> [r.result.status for r in run.records]
        ['ok']
    """
    if budget_s <= 0:
        raise ValueError(f"budget_s={budget_s!r} must be positive (seconds per step, default {DEFAULT_BUDGET_S:g})")
    selected = select_steps(steps)
    stream = sys.stdout if stream is None else stream
    device = resolve_device(device)
    run_dir = _new_run_dir(Path(out) if out is not None else DEFAULT_OUT)
    run = TourRun(run_dir=run_dir, report_path=run_dir / "report.md")
    progress = progress_enabled(progress)
    with _threads_for(model, device), library_progress_bars(progress):
        _run_steps(run, selected, full=full, seed=seed, model=model, device=device, progress=progress,
                   budget_s=budget_s)
    run.table = format_table(run.records)
    options = {"steps": [s.name for s in selected], "full": full, "seed": seed, "model": model, "device": device,
               "budget_s": budget_s}
    write_report(run, options=options)
    print(run.table, file=stream)
    print(f"\nreport: {run.report_path}", file=stream, flush=True)
    return run


def _run_steps(run: TourRun, selected: list[TourStep], *, full: bool, seed: int, model: str | None, device: str,
               progress: bool, budget_s: float) -> None:
    run_dir = run.run_dir
    bar = progress_bar(selected, enabled=progress, desc="tour", unit="step")
    for step in bar:
        bar.set_postfix_str(f"{step.name} ({step.component})")
        step_dir = run_dir / step.name
        step_dir.mkdir(parents=True, exist_ok=True)
        ctx = TourContext(out_dir=step_dir, full=full, seed=seed, model=model, device=device, progress=progress,
                          budget_s=budget_s)
        tb = None
        start = time.perf_counter()
        try:
            from accelerate.utils import set_seed

            set_seed(seed)  # accelerate's: Python, NumPy and torch (all devices)
            result = step(ctx)
            if not isinstance(result, StepResult):
                raise TypeError(f"tour step {step.name!r} returned {type(result).__name__}; it must return a StepResult")
        except Exception as err:  # noqa: BLE001 - a failing step must not stop the tour
            tb = traceback.format_exc()
            logger.error("tour step %s failed: %s: %s", step.name, type(err).__name__, err)
            result = StepResult(summary=f"{type(err).__name__}: {err}", status="failed")
        seconds = time.perf_counter() - start
        over = seconds > budget_s and not full
        if over:
            logger.warning("tour step %s took %.1f s, over its %g s budget", step.name, seconds, budget_s)
        run.records.append(StepRecord(step=step, result=result, seconds=seconds, over_budget=over, traceback=tb))


# ----------------------------------------------------------------------------------------------- CLI


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``tour`` sub-command to the ``hf-ext`` parser (see :mod:`hf_ext.cli`)."""
    p = subparsers.add_parser(
        "tour",
        help="run every component end to end on tiny models and write a report",
        description="Run the tour steps (offline, tiny models, ≤ 30 s each on 2 CPU cores) and write "
                    "runs/tour-<timestamp>/report.md.",
    )
    p.add_argument("--full", action="store_true", help="run the longer versions of the steps (no time budget)")
    p.add_argument("--steps", nargs="+", metavar="NAME", help="run only these steps (see --list)")
    p.add_argument("--list", action="store_true", help="list the steps and exit")
    add_common_options(p, model="a Hub id or local path for the steps that can use a real model (default: tiny "
                                "models built in code)", device="auto", seed=0, out=str(DEFAULT_OUT),
                       out_help="the run folder tour-<timestamp>/ with report.md goes inside", json=True, progress=True)
    p.add_argument("--budget", type=finite_float, default=DEFAULT_BUDGET_S, metavar="SECONDS",
                   help=f"per-step time budget; exceeding it warns (default: {DEFAULT_BUDGET_S:g})")
    p.set_defaults(func=_cmd_tour)
    return p


def _cmd_tour(args: argparse.Namespace) -> int:
    if args.list:
        steps = registered_steps()
        width = max((len(n) for n in steps), default=4)
        cwidth = max((len(s.component) for s in steps.values()), default=9)
        print_result([_describe(s) for s in steps.values()], "\n".join(
            f"{s.name:<{width}}  {s.component:<{cwidth}}  {s.description}" for s in steps.values()), as_json=args.json)
        return 0
    try:
        selected = select_steps(args.steps)
    except ValueError as err:
        print(f"hf-ext tour: error: {err}", file=sys.stderr)
        return 2
    run = run_tour([s.name for s in selected], out=args.out, full=args.full, seed=args.seed, model=args.model,
                   device=args.device, progress=not args.no_progress, budget_s=args.budget,
                   stream=io.StringIO() if args.json else None)
    if args.json:
        print((run.run_dir / "results.json").read_text(encoding="utf-8"), end="")
    return run.exit_code


@contextlib.contextmanager
def _threads_for(model: str | None, device: str):
    """One torch thread for the tiny built-in models on CPU: their ops are too small to gain from intra-op threads,
    and on a busy machine threads waiting for each other's time slices made steps many times slower."""
    import torch

    previous = torch.get_num_threads()
    if model is None and device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
