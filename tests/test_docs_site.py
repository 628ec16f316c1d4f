"""The API reference site builds with ``mkdocs build --strict`` (any warning fails) and its API pages are current.

Docs tier (marker ``docs``). The site needs the ``docs`` extra (part of ``dev``), so a missing mkdocs is an error here,
not a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parents[1]
MKDOCS = Path(sys.executable).with_name("mkdocs")


def test_api_pages_list_every_public_name():
    proc = subprocess.run([sys.executable, "scripts/api_pages.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = [p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")]
    missing = [p for p in pages if f": {p}" not in nav and not p.startswith("results/")]
    assert not missing, f"docs pages not in mkdocs.yml's nav: {missing}"


def test_the_site_builds_strictly(tmp_path):
    assert MKDOCS.exists(), f"{MKDOCS} missing: install the docs extra (pip install -e '.[docs]')"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "scar" / "index.html").read_text(encoding="utf-8")
    assert "ScarAdapter" in api and "for_model" in api  # the API pages hold the rendered docstrings
    assert (tmp_path / "site" / "supported_models" / "index.html").is_file()
