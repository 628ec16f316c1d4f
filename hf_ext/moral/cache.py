"""Fitted moral directions cached per encoder and language (:func:`cached_direction`)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from hf_ext.utils.logging import get_logger

from .direction import DEFAULT_STEM, MoralDirection

logger = get_logger(__name__)

__all__ = ["cached_direction", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$HF_EXT_CACHE/moral`` or ``~/.cache/hf_ext/moral``: where :func:`cached_direction` keeps fitted directions."""
    root = os.environ.get("HF_EXT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hf_ext")
    return Path(root) / "moral"


def cached_direction(model: str, language: str = "en", *, cache_dir: str | os.PathLike | None = None,
                     device: str | None = None, refit: bool = False, progress: bool = True) -> MoralDirection:
    """The direction of encoder ``model`` (path or Hub id) in ``language``: loaded from the cache, else fitted and cached.

    ``model="bundled"`` with ``language="en"`` returns the shipped direction without fitting.

    Example:
        >>> md = cached_direction("sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", "de")  # Hub download  # doctest: +SKIP
        >>> cached_direction("bundled").language  # the shipped English direction, no fitting
        'en'
    """
    if model == "bundled" and language == "en" and not refit:
        return MoralDirection.bundled(device=device)
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", str(model)).strip("_")[-80:]
    key += "-" + hashlib.sha256(str(model).encode()).hexdigest()[:8]
    path = Path(cache_dir or default_cache_dir()) / f"{key}-{language}"
    if not refit and (path / f"{DEFAULT_STEM}.json").is_file():
        logger.info("loading the cached moral direction %s", path)
        return MoralDirection.load(path, encoder=model, device=device)
    md = MoralDirection.fit(model, language, device=device, progress=progress)
    md.save(path)
    logger.info("fitted and cached the moral direction of %s (%s) in %s", model, language, path)
    return md
