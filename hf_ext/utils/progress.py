"""Progress bars of hf_ext: tqdm bars that ``--no-progress`` and transformers' settings switch off.

A bar shows only when the caller asks for it (``progress=True``, the default of hf_ext's functions; the CLI's
``--no-progress`` turns it off) and transformers would show its own: its progress bars are enabled
(``transformers.utils.logging.disable_progress_bar()`` turns hf_ext's off too) and its verbosity is WARNING or more
verbose (``set_verbosity_error()`` silences bars as well as log records).

Example:
    >>> total = sum(progress_bar(range(3), enabled=False, desc="adding"))
    >>> total
    3
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .logging import transformers_verbosity

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["library_progress_bars", "progress_bar", "progress_enabled"]

# (module, is enabled, enable, disable) of the libraries whose own bars --no-progress hides
_LIBRARY_BARS = (
    ("transformers.utils.logging", "is_progress_bar_enabled", "enable_progress_bar", "disable_progress_bar"),
    ("datasets.utils.logging", "is_progress_bar_enabled", "enable_progress_bar", "disable_progress_bar"),
    ("huggingface_hub.utils", None, "enable_progress_bars", "disable_progress_bars"),
)


def progress_enabled(requested: bool = True) -> bool:
    """Whether a bar the caller ``requested`` is shown (see the module docstring)."""
    if not requested or transformers_verbosity() > logging.WARNING:
        return False
    tf_logging = sys.modules.get("transformers.utils.logging")  # not imported: nothing disabled its bars
    return tf_logging is None or tf_logging.is_progress_bar_enabled()


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **tqdm_kwargs: Any) -> tqdm:
    """A ``tqdm.auto.tqdm`` bar over ``iterable`` (or a manual one with ``total=``), disabled unless :func:`progress_enabled`.

    Args:
        iterable: what to iterate over; ``None`` for a bar updated by hand (``bar.update(n)``).
        enabled: the caller's wish (the ``progress`` argument of hf_ext's functions).
        **tqdm_kwargs: passed to tqdm (``desc``, ``total``, ``leave``, ``unit`` …); not ``disable``.

    Raises:
        TypeError: ``disable`` is passed (use ``enabled``).
    """
    if "disable" in tqdm_kwargs:
        raise TypeError("progress_bar() takes enabled=..., not disable=...")
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not progress_enabled(enabled), **tqdm_kwargs)


@contextlib.contextmanager
def library_progress_bars(enabled: bool) -> Iterator[None]:
    """Within the block, transformers', datasets' and huggingface_hub's own progress bars (weight loading, ``map``,
    downloads) are hidden unless ``enabled``; their previous settings are restored afterwards. ``hf-ext --no-progress``
    runs its command inside this.

    Example:
        >>> from transformers import AutoModelForCausalLM
        >>> tiny_causal_lm("gpt2").save_pretrained("tiny-gpt2")
        >>> with library_progress_bars(False):
        ...     model = AutoModelForCausalLM.from_pretrained("tiny-gpt2")  # no "Loading weights" bar
    """
    if enabled:
        yield
        return
    restore = []
    for module_name, is_enabled, enable, disable in _LIBRARY_BARS:
        module = importlib.import_module(module_name)
        if is_enabled is None:  # huggingface_hub: are_progress_bars_disabled()
            was_enabled = not module.are_progress_bars_disabled()
        else:
            was_enabled = getattr(module, is_enabled)()
        getattr(module, disable)()
        if was_enabled:
            restore.append(getattr(module, enable))
    try:
        yield
    finally:
        for enable_again in restore:
            enable_again()
