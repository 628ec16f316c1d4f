"""Builds every notebook in this folder from code (no outputs stored): ``python notebooks/make_notebooks.py``.

Each ``notebooks/src/<name>.py`` defines ``CELLS`` (nbformat cells) for ``notebooks/<name>.ipynb``; a component
adds its notebook by adding one such file. The test suite executes every ``notebooks/*.ipynb`` on tiny models,
offline. Edit the cells, re-run this script, then ``python notebooks/execute.py <name>`` (stores the outputs, which
the test compares with a fresh run) and commit both.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook

HERE = Path(__file__).resolve().parent


def build(source: Path) -> Path:
    """Write ``notebooks/<source.stem>.ipynb`` from the ``CELLS`` of ``source``."""
    cells = runpy.run_path(str(source))["CELLS"]
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })
    nbformat.validate(nb)
    target = HERE / f"{source.stem}.ipynb"
    nbformat.write(nb, target)
    return target


def main(names: list[str]) -> None:
    sources = sorted((HERE / "src").glob("*.py"))
    if names:
        sources = [s for s in sources if s.stem in names]
    for source in sources:
        print("wrote", build(source))


if __name__ == "__main__":
    main(sys.argv[1:])
