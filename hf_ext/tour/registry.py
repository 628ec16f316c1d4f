"""The registry of tour steps: components add a step with :func:`tour_step`.

A step is a function ``fn(ctx: TourContext) -> StepResult``. It is registered when its module is
imported: :func:`discover` imports the tour's own :mod:`hf_ext.tour.environment` and the ``tour`` module each
component declares (:func:`hf_ext.registry.register_component`). Step modules are imported by
``hf-ext tour --list``, so they import only the standard library at module level and do their heavy imports
(torch, transformers, the component) inside the step function. Steps run in the components' canonical order.

Example:
    >>> from hf_ext.tour.registry import StepResult, tour_step
    >>> @tour_step("demo", component="core", order=999, description="Adds two numbers.")
    ... def demo(ctx):
    ...     return StepResult(metrics={"sum": 1 + 1}, summary="1 + 1 = 2")
    >>> "demo" in registered_steps()
    True
    >>> unregister_step("demo")
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hf_ext.registry import components, registered_components
from hf_ext.utils.logging import get_logger

logger = get_logger(__name__)

StepStatus = Literal["ok", "skipped", "failed"]
STATUSES: tuple[str, ...] = ("ok", "skipped", "failed")

#: Default wall-clock budget of one step without ``--full`` (a warning, never a kill).
DEFAULT_BUDGET_S = 30.0


@dataclass
class TourContext:
    """What a step gets from the runner.

    Attributes:
        out_dir: the step's own folder inside the run folder (``runs/tour-<ts>/<step>/``), already created.
            Write every artifact here; the report links to them with paths relative to the run folder.
        full: ``--full`` was passed: run the longer version (default: ≤ ``budget_s`` on 2 CPU cores).
        seed: the run's seed; the runner also seeds ``random`` and torch with it before each step.
        model: a Hub id (or local path) the user passed with ``--model``; ``None`` means "tiny models built
            in code". Steps that cannot use a user model ignore it (and may say so in their summary).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` … (already resolved from ``"auto"``).
        progress: whether the step may show progress bars (``progress_bar(..., enabled=ctx.progress)``).
        budget_s: the step's time budget in seconds (informative: the runner only warns when it is exceeded).

    Example:
        >>> ctx = TourContext(out_dir=Path("/tmp/x"), seed=0)
        >>> ctx.artifact("plot.png").name
        'plot.png'
    """

    out_dir: Path
    full: bool = False
    seed: int = 0
    model: str | None = None
    device: str = "cpu"
    progress: bool = True
    budget_s: float = DEFAULT_BUDGET_S

    def artifact(self, name: str) -> Path:
        """Path of an artifact ``name`` inside :attr:`out_dir` (its parent folders are created)."""
        path = Path(self.out_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class StepResult:
    """What a step returns.

    Attributes:
        metrics: name -> number or short string; the first three appear in the result table, all of
            them in the report.
        summary: one or a few sentences for the report (markdown allowed).
        artifacts: files written by the step (PNG files are embedded in the report, HTML and others linked).
        status: ``"ok"``, ``"skipped"`` (e.g. an optional extra is missing: say which in ``summary``) or
            ``"failed"``. A step that raises is recorded as ``"failed"`` by the runner.

    Example:
        >>> StepResult(metrics={"loss": 0.12}, summary="trained 50 steps").status
        'ok'
    """

    metrics: dict[str, float | int | str] = field(default_factory=dict)
    summary: str = ""
    artifacts: list[Path] = field(default_factory=list)
    status: StepStatus = "ok"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"StepResult.status={self.status!r} is not valid; use one of {STATUSES}")
        if not isinstance(self.metrics, dict):
            raise TypeError(f"StepResult.metrics must be a dict of name -> float|str, got {type(self.metrics).__name__}")
        self.artifacts = [Path(a) for a in self.artifacts]


StepFn = Callable[[TourContext], StepResult]


@dataclass(frozen=True)
class TourStep:
    """A registered step: see :func:`tour_step`."""

    name: str
    component: str
    fn: StepFn
    order: int = 100
    description: str = ""

    def __call__(self, ctx: TourContext) -> StepResult:
        return self.fn(ctx)


_STEPS: dict[str, TourStep] = {}
_lock = threading.Lock()
_discovered = False


def tour_step(name: str, component: str, *, order: int = 100, description: str = "") -> Callable[[StepFn], StepFn]:
    """Decorator registering ``fn(ctx: TourContext) -> StepResult`` as the tour step ``name``.

    Args:
        name: unique step name used by ``hf-ext tour --steps NAME`` (lowercase, ``[a-z0-9_-]``).
        component: the component it demonstrates (``"core"``, ``"scar"``, ``"atman"`` …); shown in the table.
        order: a component's steps run by increasing ``order``, then name (components in their canonical order).
        description: one line for ``hf-ext tour --list`` and the report (defaults to the docstring's first line).

    Returns:
        The function unchanged (it stays callable directly, e.g. from a notebook).

    Raises:
        ValueError: an invalid name, or a name already used by a different function.

    Example:
        >>> @tour_step("my_component", component="mine", order=50)
        ... def my_step(ctx):
        ...     return StepResult(summary="done")
        >>> unregister_step("my_component")
    """
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name) or name != name.lower():
        raise ValueError(f"tour step name {name!r} is not valid; use lowercase letters, digits, '_' or '-'")
    if not component:
        raise ValueError(f"tour step {name!r} needs a component name (e.g. 'core', 'scar')")

    def decorator(fn: StepFn) -> StepFn:
        if not callable(fn):
            raise TypeError(f"@tour_step({name!r}) must decorate a function, got {type(fn).__name__}")
        desc = description or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        step = TourStep(name=name, component=component, fn=fn, order=order, description=desc)
        with _lock:
            old = _STEPS.get(name)
            same = old is not None and (old.fn.__module__, old.fn.__qualname__) == (fn.__module__, fn.__qualname__)
            if old is not None and not same:
                raise ValueError(
                    f"tour step {name!r} is already registered by {old.fn.__module__}.{old.fn.__qualname__}; "
                    f"pick another name or call unregister_step({name!r}) first"
                )
            _STEPS[name] = step  # re-registering the same function (module reload) replaces it
        return fn

    return decorator


def unregister_step(name: str) -> None:
    """Remove the step ``name`` (no error if it is not registered)."""
    with _lock:
        _STEPS.pop(name, None)


#: The tour's own steps (not a component's).
BUILTIN_STEP_MODULES: tuple[str, ...] = ("hf_ext.tour.environment",)


def discover() -> None:
    """Import the tour's own step modules and every component's ``tour`` module once, registering their steps.

    A module that fails to import is logged and skipped (the others still register); a step whose
    component is missing an optional extra should instead import it inside the step and return ``"skipped"``.
    """
    global _discovered
    if _discovered:
        return
    for module in [*BUILTIN_STEP_MODULES, *(c.tour for c in components() if c.tour)]:
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - one broken component must not hide the others
            logger.error("could not import tour step module %s: %s: %s", module, type(err).__name__, err)
    _discovered = True


def registered_steps() -> dict[str, TourStep]:
    """All registered steps (after :func:`discover`), name -> :class:`TourStep`, in run order."""
    discover()
    rank = {c.name: i for i, c in enumerate(registered_components())}
    with _lock:
        steps = sorted(_STEPS.values(), key=lambda s: (rank.get(s.component, len(rank)), s.order, s.name))
    return {s.name: s for s in steps}


def select_steps(names: list[str] | tuple[str, ...] | None = None) -> list[TourStep]:
    """The steps to run, in run order: all of them for ``None``, else those named (duplicates ignored).

    Raises:
        ValueError: a name that is not registered; the message lists the valid names.
    """
    steps = registered_steps()
    if names is None:
        return list(steps.values())
    unknown = [n for n in names if n not in steps]
    if unknown:
        raise ValueError(f"unknown tour step(s) {', '.join(map(repr, unknown))}; valid steps: {', '.join(steps) or '(none)'}")
    wanted = set(names)
    return [s for s in steps.values() if s.name in wanted]


def _describe(step: TourStep) -> dict[str, Any]:
    return {"name": step.name, "component": step.component, "order": step.order, "description": step.description}
