"""The code base passes ruff (configured in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hf_ext.testing import time_factor

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = Path(sys.executable).with_name("ruff")  # the venv's own ruff first
    ruff = str(ruff) if ruff.exists() else shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: pip install 'hf-ext[dev]'")
    res = subprocess.run([ruff, "check", "--output-format", "concise", "hf_ext", "tests", "benchmarks", "notebooks"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120 * time_factor())
    assert res.returncode == 0, res.stdout + res.stderr
