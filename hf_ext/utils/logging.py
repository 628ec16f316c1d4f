"""hf_ext's loggers: the ``hf_ext.*`` family, which follows transformers' verbosity.

Every hf_ext module gets its logger with ``logger = get_logger(__name__)``. The records still propagate to the
root logger as usual (``logging.basicConfig``, pytest's ``caplog``), but a record below transformers' verbosity is
dropped, so ``transformers.logging.set_verbosity_error()`` (or ``TRANSFORMERS_VERBOSITY=error``) silences hf_ext
too. transformers' verbosity is read from the standard-library logger ``"transformers"``, so nothing here imports
transformers.

Example:
    >>> logger = get_logger("hf_ext.example")
    >>> logger.name
    'hf_ext.example'
    >>> transformers_verbosity() in (10, 20, 30, 40, 50)
    True
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["LIBRARY_LOGGER", "get_logger", "set_verbosity", "transformers_verbosity"]

#: The parent of every hf_ext logger.
LIBRARY_LOGGER = "hf_ext"

# TRANSFORMERS_VERBOSITY values (transformers.utils.logging.log_levels; "detail" is its debug with line numbers).
_ENV_LEVELS = {"detail": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
               "error": logging.ERROR, "critical": logging.CRITICAL}


def transformers_verbosity() -> int:
    """The level transformers logs at: its root logger's level once set, else ``TRANSFORMERS_VERBOSITY`` or WARNING.

    Matches ``transformers.logging.get_verbosity()`` without importing transformers.
    """
    level = logging.getLogger("transformers").level
    if level != logging.NOTSET:
        return level
    return _ENV_LEVELS.get(os.environ.get("TRANSFORMERS_VERBOSITY", "").lower(), logging.WARNING)


class _FollowTransformersVerbosity(logging.Filter):
    """Drops records below transformers' verbosity (a filter runs for records logged on the logger it is on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= transformers_verbosity()


_FILTER = _FollowTransformersVerbosity()


def get_logger(name: str) -> logging.Logger:
    """The logger ``name`` (the calling module's ``__name__``: ``hf_ext.…``, or ``transformers_modules.…`` for a copy
    vendored by :func:`hf_ext.hub.export_for_hub`), silenced with transformers' verbosity."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def set_verbosity(level: int) -> None:
    """Set the verbosity of hf_ext and transformers together (what ``hf-ext -v`` does).

    If transformers is imported, this calls ``transformers.logging.set_verbosity(level)``. Otherwise it sets the
    ``"transformers"`` logger's level and ``TRANSFORMERS_VERBOSITY`` (which transformers reads when it configures its
    logger on import), so that the level holds after transformers is imported.

    Args:
        level: a ``logging`` level (``logging.INFO`` …).

    Raises:
        ValueError: ``level`` is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL.
    """
    names = {v: k for k, v in _ENV_LEVELS.items() if k != "detail"}
    if level not in names:
        raise ValueError(f"level={level!r} is not a logging level; use one of {sorted(names)} (logging.DEBUG … CRITICAL)")
    logging.getLogger(LIBRARY_LOGGER).setLevel(level)
    tf_logging = sys.modules.get("transformers.utils.logging")
    if tf_logging is not None:
        tf_logging.set_verbosity(level)
    else:
        logging.getLogger("transformers").setLevel(level)
        os.environ["TRANSFORMERS_VERBOSITY"] = names[level]
