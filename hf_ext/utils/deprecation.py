"""Deprecation shims: an old name or flag keeps working for one release, with a warning (noted in CHANGELOG.md).

Python APIs warn with ``DeprecationWarning`` (seen by developers and test suites); command-line flags warn with
``FutureWarning``, which Python shows to end users by default.

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_deprecated("--base", "--model", category=FutureWarning)
    >>> str(caught[0].message)
    '--base is deprecated and will be removed in hf-ext 0.3; use --model instead'
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["REMOVED_IN", "DeprecatedList", "warn_deprecated"]

#: The release that removes what 0.2 deprecates.
REMOVED_IN = "0.3"


def warn_deprecated(old: str, new: str, *, category: type[Warning] = DeprecationWarning, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` (removed in :data:`REMOVED_IN`)."""
    warnings.warn(f"{old} is deprecated and will be removed in hf-ext {REMOVED_IN}; use {new} instead", category,
                  stacklevel=stacklevel)


class DeprecatedList(list):
    """A module-level list that components used to append to: ``append`` still works, warns, and calls ``on_append``.

    Args:
        items: the initial items.
        old: what the list is called (for the warning), e.g. ``"hf_ext.cli.COMMAND_MODULES"``.
        new: what to do instead.
        on_append: called with each appended item after it is added.
    """

    def __init__(self, items: Iterable[Any] = (), *, old: str, new: str, on_append: Callable[[Any], None] | None = None) -> None:
        super().__init__(items)
        self._old, self._new, self._on_append = old, new, on_append

    def append(self, item: Any) -> None:
        warn_deprecated(f"appending to {self._old}", self._new)
        super().append(item)
        if self._on_append is not None:
            self._on_append(item)
