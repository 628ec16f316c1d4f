"""The README's result tables, regenerated from the committed reports in ``docs/results/``.

A full run's ``report.json`` is committed, without its per-item arrays, as
``docs/results/reproduce-<component>-<model>.json`` (:func:`commit_results`). The README holds each table between
two markers::

    <!-- results: <component> <model> <table key> -->
    | the table, as :func:`hf_ext.reproduce.report.render_table` renders it |
    <!-- /results -->

:func:`check` lists the blocks whose text differs from what the JSON renders (a test runs it); ``python -m
hf_ext.reproduce.readme --write`` rewrites them.

Example:
    >>> blocks("x\\n<!-- results: atman m t -->\\n| a |\\n<!-- /results -->\\n")
    [(('atman', 'm', 't'), '| a |')]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .report import render_table

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "docs" / "results"
_BLOCK = re.compile(r"<!-- results: (\S+) (\S+) (\S+) -->\n(.*?)\n?<!-- /results -->", re.S)
#: figures left out of the committed JSON (per item or per scan entry: large, and not shown in the README)
_BULKY = ("per_item", "seconds", "cpu_seconds", "scan_int4", "scan_prune", "kept")


def results_path(component: str, model: str, results_dir: Path = RESULTS_DIR) -> Path:
    return Path(results_dir) / f"reproduce-{component}-{model.replace('/', '--')}.json"


def commit_results(run_dir: str | Path, results_dir: Path = RESULTS_DIR) -> Path:
    """Copy a run's ``report.json`` to ``docs/results/`` without its bulky per-item figures."""
    data = json.loads((Path(run_dir) / "report.json").read_text())
    data["figures"] = {k: v for k, v in data["figures"].items() if k not in _BULKY}
    path = results_path(data["component"], data["model"], results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def blocks(text: str) -> list[tuple[tuple[str, str, str], str]]:
    """``[((component, model, table key), block text)]`` of the README's result blocks."""
    return [((m.group(1), m.group(2), m.group(3)), m.group(4).strip()) for m in _BLOCK.finditer(text)]


def render(component: str, model: str, key: str, results_dir: Path = RESULTS_DIR) -> str:
    """The markdown of table ``key`` of the committed report of ``component`` on ``model``."""
    path = results_path(component, model, results_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no committed results {path}; run `hf-ext reproduce {component} --model {model}` "
                                "and commit_results() its folder")
    data = json.loads(path.read_text())
    for table in data["tables"]:
        if table["key"] == key:
            return render_table(table)
    raise KeyError(f"{path.name} has no table {key!r}; it has {[t['key'] for t in data['tables']]}")


def check(readme: Path = ROOT / "README.md", results_dir: Path = RESULTS_DIR) -> list[str]:
    """Keys of the README blocks that differ from the committed JSON (empty: in sync)."""
    return [" ".join(k) for k, text in blocks(readme.read_text(encoding="utf-8"))
            if text != render(*k, results_dir=results_dir)]


def write(readme: Path = ROOT / "README.md", results_dir: Path = RESULTS_DIR) -> int:
    """Rewrite every result block of the README from the JSON; returns the number of blocks."""
    text = readme.read_text(encoding="utf-8")
    count = 0

    def sub(m):
        nonlocal count
        count += 1
        return f"<!-- results: {m.group(1)} {m.group(2)} {m.group(3)} -->\n" \
               f"{render(m.group(1), m.group(2), m.group(3), results_dir)}\n<!-- /results -->"

    readme.write_text(_BLOCK.sub(sub, text), encoding="utf-8")
    return count


if __name__ == "__main__":  # python -m hf_ext.reproduce.readme [--write]
    if "--write" in sys.argv:
        print(f"rewrote {write()} result blocks")
    else:
        stale = check()
        print("README result tables are in sync" if not stale else f"stale: {stale}")
        sys.exit(1 if stale else 0)
