"""Scratch folders for the catalogue's damaged-file cases (one per test process, removed at exit)."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path


@functools.cache
def scratch() -> Path:
    root = Path(tempfile.mkdtemp(prefix="hf_ext_catalogue_"))
    atexit.register(shutil.rmtree, root, True)
    return root


def without_key(source: Path, name: str, file: str, key: str) -> Path:
    """A copy of the artifact folder ``source`` (named ``name``) whose JSON ``file`` lacks ``key``."""
    folder = damaged_copies(source, name)
    data = json.loads((folder / file).read_text())
    del data[key]
    (folder / file).write_text(json.dumps(data))
    return folder


def damaged_copies(source: Path, name: str, *, keep_manifest: bool = False) -> Path:
    """A fresh copy of the artifact folder ``source`` named ``name``, to damage.

    The copy has no save manifest unless ``keep_manifest``: a damaged folder without one stands for an artifact
    written by hand or by hf_ext < 0.2, so the loader's own checks (keys, files, headers) are what is tested; with
    the manifest kept, the manifest check must name the damaged file first.
    """
    from hf_ext.utils.saving import MANIFEST_NAME

    target = scratch() / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    if not keep_manifest:
        (target / MANIFEST_NAME).unlink(missing_ok=True)
    return target
