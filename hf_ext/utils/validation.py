"""Argument checks shared by every component: one place for "must be a positive int, got 1.5".

Every check returns the normalised value (``int``, ``float``, ``list[str]`` …) or raises an error whose message
names the argument, shows the bad value's ``repr`` and says what is accepted, e.g.
``steps must be an int >= 1, got 0``. A value of the wrong *type* raises :class:`ArgumentTypeError`, which is a
``TypeError`` and also a ``ValueError`` (callers that caught ``ValueError`` before 0.2.0 keep working); a value
of the right type outside its range raises ``ValueError``. ``bool`` is never accepted as a number, and a bare
``str`` is never accepted where a list of strings is expected (``concepts="abc"`` is not three concepts).

The module imports neither torch nor numpy; tensors and arrays are recognised by duck typing.

Example:
    >>> check_int("steps", 3, min=1)
    3
    >>> check_int("steps", 0, min=1)
    Traceback (most recent call last):
    ...
    ValueError: steps must be an int >= 1, got 0
    >>> check_str_list("concepts", "abc")
    Traceback (most recent call last):
    ...
    hf_ext.utils.validation.ArgumentTypeError: concepts must be a list of str, got a bare str 'abc' (wrap it: ['abc'])
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ArgumentTypeError", "check_bool", "check_choice", "check_elements", "check_float", "check_int", "check_layer", "check_layers",
    "check_path", "check_probability", "check_size", "check_str", "check_str_list", "check_token_ids",
    "MAX_ELEMENTS",
]

#: Largest number of elements :func:`check_size` lets a single allocation have (2**34 ≈ 17e9: 64 GiB of fp32),
#: far above any real model and far below what makes the allocator fail with an unclear error.
MAX_ELEMENTS = 2**34


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type: a ``TypeError`` that is also a ``ValueError`` (see the module doc)."""


def _range_text(kind: str, min: Any, max: Any, min_open: bool = False, max_open: bool = False) -> str:
    lo = "" if min is None else f"{'>' if min_open else '>='} {min}"
    hi = "" if max is None else f"{'<' if max_open else '<='} {max}"
    if lo and hi:
        return f"{kind} in {'(' if min_open else '['}{min}, {max}{')' if max_open else ']'}"
    return f"{kind} {lo or hi}".rstrip()


def _none_ok(allow_none: bool) -> str:
    return " or None" if allow_none else ""


def check_int(name: str, value: Any, *, min: int | None = None, max: int | None = None,
              allow_none: bool = False) -> int | None:
    """An integer (Python ``int`` or a numpy integer, never ``bool``) in ``[min, max]``.

    Args:
        name: the argument's name, as the caller wrote it (``"steps"``, ``"ScarConfig.k"``).
        value: the value to check.
        min, max: inclusive bounds (``None``: unbounded).
        allow_none: accept ``None`` (returned as is).

    Returns:
        ``int(value)`` (or ``None``).

    Raises:
        ArgumentTypeError: not an integer (``1.5``, ``"3"``, ``True``). ValueError: outside ``[min, max]``.

    Example:
        >>> check_int("batch_size", 8, min=1), check_int("seed", None, allow_none=True)
        (8, None)
        >>> check_int("n", True, min=1)
        Traceback (most recent call last):
        ...
        hf_ext.utils.validation.ArgumentTypeError: n must be an int >= 1, got True (bool)
    """
    if value is None and allow_none:
        return None
    what = _range_text("an int", min, max) + _none_ok(allow_none)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    value = int(value)
    if (min is not None and value < min) or (max is not None and value > max):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def check_size(name: str, value: Any, *, min: int = 1, max: int = MAX_ELEMENTS, allow_none: bool = False) -> int | None:
    """A size or count (an int ``>= min``, default 1) that is not absurd: at most ``max`` (:data:`MAX_ELEMENTS`).

    Catches ``n_latents=10**12`` with a clear ``ValueError`` before any allocation is tried.

    Example:
        >>> check_size("n_latents", 0)
        Traceback (most recent call last):
        ...
        ValueError: n_latents must be a positive int, got 0
        >>> check_size("n_latents", 10**12)
        Traceback (most recent call last):
        ...
        ValueError: n_latents must be a positive int of at most 17179869184, got 1000000000000
    """
    if value is None and allow_none:
        return None
    what = ("a positive int" if min == 1 else f"an int >= {min}") + _none_ok(allow_none)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    if value < min:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if value > max:
        raise ValueError(f"{name} must be {what} of at most {max}, got {value!r}")
    return int(value)


def check_elements(name: str, shape: Sequence[int], *, max: int = MAX_ELEMENTS) -> None:
    """Refuse a tensor ``name`` of ``shape`` with more than ``max`` elements (:data:`MAX_ELEMENTS`) before it is
    allocated: each size may be fine alone while their product is not.

    Example:
        >>> check_elements("encoder weight [n_latents, n_inputs]", (10**9, 4096))
        Traceback (most recent call last):
        ...
        ValueError: encoder weight [n_latents, n_inputs] would have shape (1000000000, 4096) = 4096000000000 elements, more than 17179869184; choose smaller sizes
    """
    total = math.prod(int(s) for s in shape)
    if total > max:
        raise ValueError(f"{name} would have shape {tuple(int(s) for s in shape)} = {total} elements, more than "
                         f"{max}; choose smaller sizes")


def check_float(name: str, value: Any, *, min: float | None = None, max: float | None = None,
                min_open: bool = False, max_open: bool = False, allow_none: bool = False) -> float | None:
    """A finite real number (``int`` or ``float``, never ``bool``, ``nan`` or ``inf``) in the given range.

    Args:
        name, value: as :func:`check_int`.
        min, max: bounds; inclusive unless ``min_open`` / ``max_open``.
        allow_none: accept ``None``.

    Returns:
        ``float(value)`` (or ``None``).

    Raises:
        ArgumentTypeError: not a real number. ValueError: ``nan``, ``±inf`` or out of range.

    Example:
        >>> check_float("strength", 2)
        2.0
        >>> check_float("lr", 0.0, min=0, min_open=True)
        Traceback (most recent call last):
        ...
        ValueError: lr must be a finite number > 0, got 0.0
    """
    if value is None and allow_none:
        return None
    what = _range_text("a finite number", min, max, min_open, max_open) + _none_ok(allow_none)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        # 0-d tensors and arrays are numbers too
        if hasattr(value, "item") and getattr(value, "ndim", None) == 0 and not isinstance(value.item(), bool):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ArgumentTypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    value = float(value)
    bad = (not math.isfinite(value)
           or (min is not None and (value <= min if min_open else value < min))
           or (max is not None and (value >= max if max_open else value > max)))
    if bad:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def check_probability(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """A probability / fraction in ``[0, 1]``.

    Example:
        >>> check_probability("frac_noise", 0.25)
        0.25
    """
    return check_float(name, value, min=0.0, max=1.0, allow_none=allow_none)


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` (also numpy's bool); ``0``, ``1``, ``"yes"`` are refused.

    Example:
        >>> check_bool("normalize", "false")
        Traceback (most recent call last):
        ...
        hf_ext.utils.validation.ArgumentTypeError: normalize must be True or False, got 'false' (str)
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise ArgumentTypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """One of ``choices`` (compared with ``==``; ``bool`` never matches ``0``/``1``).

    Example:
        >>> check_choice("site", "attn", ("mlp", "block"))
        Traceback (most recent call last):
        ...
        ValueError: site must be one of ('mlp', 'block'), got 'attn'
    """
    choices = tuple(choices)
    try:
        ok = any(value == c and type(value) is not bool or value is c for c in choices)
    except Exception:  # noqa: BLE001 - an un-comparable value (an array) is simply not a choice
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_str(name: str, value: Any, *, allow_empty: bool = False, allow_none: bool = False) -> str | None:
    """A ``str`` (non-empty unless ``allow_empty``).

    Example:
        >>> check_str("prompt", "")
        Traceback (most recent call last):
        ...
        ValueError: prompt must be a non-empty str, got ''
    """
    if value is None and allow_none:
        return None
    what = ("a str" if allow_empty else "a non-empty str") + _none_ok(allow_none)
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    if not value and not allow_empty:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def check_str_list(name: str, value: Any, *, allow_empty_list: bool = False, allow_empty_items: bool = False,
                   unique: bool = False) -> list[str]:
    """A list (or tuple) of ``str``; a bare ``str`` is refused instead of being read as its characters.

    Args:
        name, value: as :func:`check_int`.
        allow_empty_list: accept ``[]``.
        allow_empty_items: accept ``""`` as an item.
        unique: refuse duplicates.

    Returns:
        A new ``list`` of the items.

    Example:
        >>> check_str_list("concepts", ("toxicity", "formality"))
        ['toxicity', 'formality']
        >>> check_str_list("concepts", ["a", 3])
        Traceback (most recent call last):
        ...
        hf_ext.utils.validation.ArgumentTypeError: concepts must be a list of str, got ['a', 3] (item 1 is 3, int)
    """
    if isinstance(value, Mapping):
        raise ArgumentTypeError(f"{name} must be a list of str, got a mapping {value!r}")
    if isinstance(value, (str, bytes)):
        raise ArgumentTypeError(f"{name} must be a list of str, got a bare {type(value).__name__} {value!r} "
                                f"(wrap it: [{value!r}])")
    if not isinstance(value, (Sequence, set, frozenset)) and not (
            hasattr(value, "__iter__") and hasattr(value, "__len__") and not hasattr(value, "shape")):
        raise ArgumentTypeError(f"{name} must be a list of str, got {value!r} ({type(value).__name__})")
    items = list(value)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ArgumentTypeError(f"{name} must be a list of str, got {value!r} "
                                    f"(item {i} is {item!r}, {type(item).__name__})")
        if not item and not allow_empty_items:
            raise ValueError(f"{name} must be a list of non-empty str, got {value!r} (item {i} is empty)")
    if not items and not allow_empty_list:
        raise ValueError(f"{name} must be a non-empty list of str, got {value!r}")
    if unique and len(set(items)) != len(items):
        dup = next(x for i, x in enumerate(items) if x in items[:i])
        raise ValueError(f"{name} must hold unique names, got {value!r} ({dup!r} repeats)")
    return items


def check_token_ids(name: str, ids: Any, vocab_size: int | None) -> Any:
    """Token ids (a tensor, array or nested list of ints) that all lie in ``[0, vocab_size)``.

    Checked before the embedding, so an id beyond the vocabulary is reported with its value instead of
    ``IndexError: index out of range in self`` (or a CUDA device assert). ``vocab_size=None`` checks only the type
    and the sign.

    Returns:
        ``ids`` unchanged.

    Raises:
        ArgumentTypeError: floating-point / bool tensors, or non-int items. ValueError: an id outside the vocabulary.

    Example:
        >>> check_token_ids("input_ids", [[1, 2], [3]], vocab_size=10)
        [[1, 2], [3]]
        >>> check_token_ids("input_ids", [[1, 12]], vocab_size=10)
        Traceback (most recent call last):
        ...
        ValueError: input_ids must hold token ids in [0, 10) (the model's vocabulary), got 12 in [[1, 12]]
    """
    accepted = f"token ids in [0, {vocab_size})" if vocab_size is not None else "non-negative token ids"
    if hasattr(ids, "dtype") and hasattr(ids, "min"):  # tensor or array
        dtype = str(ids.dtype)
        if "int" not in dtype or "bool" in dtype:
            raise ArgumentTypeError(f"{name} must hold {accepted} (an integer tensor), got dtype {dtype}")
        if getattr(ids, "numel", lambda: getattr(ids, "size", 1))() == 0:
            return ids
        lo, hi = int(ids.min()), int(ids.max())
        bad = lo if lo < 0 else (hi if vocab_size is not None and hi >= vocab_size else None)
        if bad is not None:
            shape = tuple(ids.shape)
            raise ValueError(f"{name} must hold {accepted} (the model's vocabulary), got {bad} in a tensor of "
                             f"shape {shape}")
        return ids

    def walk(x: Any) -> None:
        if isinstance(x, bool) or isinstance(x, (str, bytes, float)):
            raise ArgumentTypeError(f"{name} must hold {accepted}, got {x!r} ({type(x).__name__}) in {ids!r}")
        if isinstance(x, numbers.Integral):
            if x < 0 or (vocab_size is not None and x >= vocab_size):
                raise ValueError(f"{name} must hold {accepted} (the model's vocabulary), got {int(x)} in {ids!r}")
            return
        if hasattr(x, "dtype") and hasattr(x, "min"):
            check_token_ids(name, x, vocab_size)
            return
        if not isinstance(x, Iterable):
            raise ArgumentTypeError(f"{name} must hold {accepted}, got {x!r} ({type(x).__name__}) in {ids!r}")
        for item in x:
            walk(item)

    walk(ids)
    return ids


def check_layer(name: str, value: Any, num_layers: int) -> int:
    """One decoder-layer index for a ``num_layers``-layer model; negative counts from the end.

    Returns:
        The index in ``[0, num_layers)``.

    Raises:
        ArgumentTypeError: not an int (``'all'``, ``"3"``, ``1.0``, ``True``). ValueError: out of range.

    Example:
        >>> check_layer("layer", -1, 4)
        3
        >>> check_layer("layer", "all", 4)
        Traceback (most recent call last):
        ...
        hf_ext.utils.validation.ArgumentTypeError: layer must be one decoder-layer index, an int in [-4, 3] for this 4-layer model, got 'all' (str)
    """
    what = f"one decoder-layer index, an int in [{-num_layers}, {num_layers - 1}] for this {num_layers}-layer model"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    if not -num_layers <= int(value) < num_layers:
        raise ValueError(f"{name} must be {what}, got {value!r} (out of range)")
    return int(value) % num_layers


def check_layers(name: str, value: Any, num_layers: int) -> list[int]:
    """Decoder-layer indices: ``"all"``, one int, or a sequence of ints (negative counts from the end).

    Returns:
        Sorted, de-duplicated indices in ``[0, num_layers)``.

    Example:
        >>> check_layers("layers", "all", 3), check_layers("layers", [-1, 0], 3)
        ([0, 1, 2], [0, 2])
        >>> check_layers("layers", "a", 3)
        Traceback (most recent call last):
        ...
        ValueError: layers must be 'all', an int or a list of ints in [-3, 2], got 'a'
    """
    if isinstance(value, str):
        if value == "all":
            return list(range(num_layers))
        raise ValueError(f"{name} must be 'all', an int or a list of ints in [{-num_layers}, {num_layers - 1}], "
                         f"got {value!r}")
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return [check_layer(name, value, num_layers)]
    if not isinstance(value, Iterable) or hasattr(value, "shape"):
        raise ArgumentTypeError(f"{name} must be 'all', an int or a list of ints, got {value!r} "
                                f"({type(value).__name__})")
    items = list(value)
    if not items:
        raise ValueError(f"{name} must name at least one layer, got {value!r}")
    return sorted({check_layer(f"{name}[{i}]", v, num_layers) for i, v in enumerate(items)})


def check_path(name: str, value: Any, *, kind: str = "any", must_exist: bool = True) -> Path:
    """A filesystem path (``str`` or ``os.PathLike``, not empty); with ``must_exist`` it must exist as ``kind``.

    Args:
        kind: ``"file"``, ``"dir"`` or ``"any"``.

    Raises:
        ArgumentTypeError: not a path. ValueError: an empty string. FileNotFoundError: missing (the message names
        ``name`` and the path).

    Example:
        >>> check_path("corpus", "/no/such/file.txt", kind="file")
        Traceback (most recent call last):
        ...
        FileNotFoundError: corpus: no such file: '/no/such/file.txt'
    """
    if not isinstance(value, (str, os.PathLike)):
        raise ArgumentTypeError(f"{name} must be a path (str or os.PathLike), got {value!r} ({type(value).__name__})")
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{name} must be a non-empty path, got {value!r}")
    path = Path(value)
    if must_exist:
        exists = {"file": path.is_file, "dir": path.is_dir, "any": path.exists}[kind]()
        if not exists:
            what = {"file": "file", "dir": "directory", "any": "file or directory"}[kind]
            raise FileNotFoundError(f"{name}: no such {what}: {str(path)!r}")
    return path
