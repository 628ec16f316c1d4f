"""The malformed-input catalogue: every case is a real call of a public entry point with one bad input.

A case passes only with a *clear error* (issue 19): a ``ValueError``, ``TypeError`` or ``FileNotFoundError`` (or a
subclass) whose message names the argument (or file) and shows the bad value's ``repr`` (or the path). A call that
returns is a *silent* result, another exception type or a message without those parts an *unclear* one.

Cases are built programmatically where a parameter has a type (:func:`int_cases`, :func:`float_cases` …) and by
hand where the bad input is specific (a truncated file, an id beyond the vocabulary).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CLEAR = (ValueError, TypeError, FileNotFoundError)


@dataclass
class Case:
    """One malformed call: ``call()`` must raise a clear error whose message contains every needle."""

    id: str
    call: Callable[[], Any]
    needles: tuple[str, ...]
    types: tuple[type[BaseException], ...] = field(default=CLEAR)


CASES: list[Case] = []


def case(id: str, call: Callable[[], Any], *needles: str, types: tuple[type[BaseException], ...] = CLEAR) -> None:
    if any(c.id == id for c in CASES):
        raise AssertionError(f"duplicate catalogue id {id}")
    CASES.append(Case(id, call, tuple(needles), types))


def shown(value: Any) -> str:
    """How a message shows ``value``: its repr (floats as Python prints them, so ``nan``, ``inf``, ``-1.0``)."""
    return repr(value)


def int_cases(label: str, call: Callable[[Any], Any], name: str, *, min: int | None = None,
              max: int | None = None, allow_none: bool = False, size: bool = False, extra: tuple = ()) -> None:
    """Cases for an int parameter ``name``: wrong types (1.5, True, "3", None, nan) and out-of-range values."""
    bad: list[Any] = [1.5, True, "3", math.nan, [1]]
    if not allow_none:
        bad.append(None)
    if min is not None:
        bad.append(min - 1)
        if min > 0 and min - 1 != -1:
            bad.append(-1)
    if max is not None:
        bad.append(max + 1)
    if size:
        bad.append(10**12)
    for value in (*bad, *extra):
        case(f"{label}:{name}={value!r}", lambda v=value: call(v), name.split(".")[-1], shown(value))


def float_cases(label: str, call: Callable[[Any], Any], name: str, *, min: float | None = None,
                max: float | None = None, min_open: bool = False, allow_none: bool = False,
                extra: tuple = ()) -> None:
    """Cases for a float parameter ``name``: nan, ±inf, a str, a bool, None and out-of-range values."""
    bad: list[Any] = [math.nan, math.inf, -math.inf, "0.5", True]
    if not allow_none:
        bad.append(None)
    if min is not None:
        bad.append(min if min_open else min - 1.0)
    if max is not None:
        bad.append(max + 1.0)
    for value in (*bad, *extra):
        needle = shown(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else shown(value)
        case(f"{label}:{name}={value!r}", lambda v=value: call(v), name.split(".")[-1], needle)


def choice_cases(label: str, call: Callable[[Any], Any], name: str, bad: tuple = ("bogus", "", None, 3)) -> None:
    """Cases for a parameter that takes one of a few strings."""
    for value in bad:
        case(f"{label}:{name}={value!r}", lambda v=value: call(v), name.split(".")[-1], shown(value))


def bool_cases(label: str, call: Callable[[Any], Any], name: str, bad: tuple = ("false", 0, None)) -> None:
    """Cases for a strictly boolean parameter."""
    for value in bad:
        case(f"{label}:{name}={value!r}", lambda v=value: call(v), name.split(".")[-1], shown(value))
