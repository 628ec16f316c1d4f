"""Scratch folders for the catalogue's damaged-file cases (one per test process, removed at exit)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.cache
def scratch() -> Path:
    root = Path(tempfile.mkdtemp(prefix="hf_ext_catalogue_"))
    atexit.register(shutil.rmtree, root, True)
    return root


def damaged_copies(source: Path, name: str) -> Path:
    """A fresh copy of the artifact folder ``source`` named ``name``, to damage."""
    target = scratch() / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target
