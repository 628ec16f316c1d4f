"""The README's reproduction tables equal the committed full reports (regenerated and diffed)."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from hf_ext.reproduce.readme import regenerate, table_blocks

ROOT = Path(__file__).resolve().parents[2]


def test_readme_tables_equal_the_committed_reports():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = table_blocks(text)
    assert blocks, "the README has no generated reproduction tables"
    for path, _ in blocks:
        assert (ROOT / path).is_file(), f"README cites {path}, which is not committed"
    new = regenerate(text, root=ROOT)
    diff = "\n".join(difflib.unified_diff(text.splitlines(), new.splitlines(), "README.md", "regenerated", lineterm=""))
    assert new == text, f"README tables differ from their reports (run python -m hf_ext.reproduce.readme):\n{diff}"


def test_regenerate_reports_missing_tables_and_files(tmp_path):
    text = "<!-- reproduce: missing.json t -->\n| x |\n<!-- /reproduce -->"
    with pytest.raises(FileNotFoundError, match="missing.json"):
        regenerate(text, root=tmp_path)
    with pytest.raises(KeyError, match="no table 't'"):
        regenerate(text, load=lambda path: {"tables": [{"key": "u", "columns": ["x"], "rows": []}]})
