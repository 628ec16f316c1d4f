"""README tables generated from committed reproduction reports.

A table generated from a report sits in the README between two HTML comments naming the report (a path relative to
the repository root, normally ``reports/<component>-<model>.json``: the ``report.json`` of a full run, committed) and
the table's key:

.. code-block:: markdown

    <!-- reproduce: reports/moral-bundled.json moral.user_study -->
    | study | scoring | ... |
    <!-- /reproduce -->

:func:`regenerate` rewrites every such block from its report (:func:`~hf_ext.reproduce.report.render_table`), so the
README shows exactly the reports' figures; ``tests/reproduce/test_readme_tables.py`` fails when it does not, and
``python -m hf_ext.reproduce.readme [README.md]`` rewrites the file in place.

Example:
    >>> text = "<!-- reproduce: r.json demo -->\\nold\\n<!-- /reproduce -->"
    >>> report = {"tables": [{"key": "demo", "columns": ["a"], "rows": [[1.5]], "formats": [".1f"]}]}
    >>> print(regenerate(text, load=lambda path: report))
    <!-- reproduce: r.json demo -->
    | a |
    |--:|
    | 1.5 |
    <!-- /reproduce -->
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .report import render_table

__all__ = ["BLOCK", "regenerate", "table_blocks"]

#: A generated block: the report path, the table key, the current table text.
BLOCK = re.compile(r"<!-- reproduce: (?P<path>\S+) (?P<key>\S+) -->\n(?P<table>.*?)\n?<!-- /reproduce -->", re.S)


def table_blocks(text: str) -> list[tuple[str, str]]:
    """``(report path, table key)`` of every generated block in ``text``."""
    return [(m["path"], m["key"]) for m in BLOCK.finditer(text)]


def regenerate(text: str, *, root: str | Path = ".", load: Callable[[str], dict[str, Any]] | None = None) -> str:
    """``text`` with every generated block re-rendered from its report.

    Args:
        text: the README.
        root: folder the report paths are relative to.
        load: report path → parsed JSON (default: read ``root / path``).

    Raises:
        FileNotFoundError: a report is missing; KeyError: a report has no table with the key.
    """
    cache: dict[str, dict[str, Any]] = {}

    def report(path: str) -> dict[str, Any]:
        if path not in cache:
            if load is not None:
                cache[path] = load(path)
            else:
                file = Path(root) / path
                if not file.is_file():
                    raise FileNotFoundError(f"README table source {file} does not exist; run the reproduction and "
                                            "commit its report.json there")
                cache[path] = json.loads(file.read_text(encoding="utf-8"))
        return cache[path]

    def render(match: re.Match) -> str:
        tables = {t["key"]: t for t in report(match["path"])["tables"]}
        if match["key"] not in tables:
            raise KeyError(f"{match['path']} has no table {match['key']!r}; it has {sorted(tables)}")
        return f"<!-- reproduce: {match['path']} {match['key']} -->\n{render_table(tables[match['key']])}\n<!-- /reproduce -->"

    return BLOCK.sub(render, text)


def main(argv: list[str] | None = None) -> int:
    """Rewrite the README (default ``README.md``) in place from its reports."""
    path = Path((argv if argv is not None else sys.argv[1:] or ["README.md"])[0])
    old = path.read_text(encoding="utf-8")
    new = regenerate(old, root=path.parent)
    if new != old:
        path.write_text(new, encoding="utf-8")
    print(f"{path}: {len(table_blocks(new))} generated tables, {'updated' if new != old else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
