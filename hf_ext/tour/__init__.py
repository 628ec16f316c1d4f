"""The tour: every component end to end on tiny models, one result table and a report folder.

A component adds a step with :func:`tour_step` in the ``tour`` module it declares with
:func:`hf_ext.registry.register_component`; ``hf-ext tour`` (or :func:`run_tour`) runs them.

Example:
    >>> from hf_ext.tour import StepResult, TourContext, tour_step
    >>> @tour_step("hello", component="core", order=1, description="Says hello.")
    ... def hello(ctx: TourContext) -> StepResult:
    ...     path = ctx.artifact("hello.txt")
    ...     path.write_text("hello")
    ...     return StepResult(metrics={"chars": 5}, summary="wrote hello.txt", artifacts=[path])
    >>> from hf_ext.tour import unregister_step; unregister_step("hello")
"""

from __future__ import annotations

from .registry import (
    DEFAULT_BUDGET_S,
    StepResult,
    TourContext,
    TourStep,
    discover,
    registered_steps,
    select_steps,
    tour_step,
    unregister_step,
)
from .runner import StepRecord, TourRun, format_table, run_tour

__all__ = [
    "DEFAULT_BUDGET_S",
    "StepRecord",
    "StepResult",
    "TourContext",
    "TourRun",
    "TourStep",
    "discover",
    "format_table",
    "registered_steps",
    "run_tour",
    "select_steps",
    "tour_step",
    "unregister_step",
]
