"""Package-level behaviour: ``import hf_ext`` is fast and lazy (no torch, no transformers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import hf_ext
from hf_ext.testing import time_factor


def _run(code: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120 * time_factor(), cwd=cwd)


def test_import_is_lazy_and_fast():
    res = _run(
        """
        import sys, time
        t = time.process_time()  # CPU time: a loaded machine must not fail this
        import hf_ext, hf_ext.core
        elapsed = time.process_time() - t
        heavy = [m for m in ("torch", "transformers", "diffusers", "datasets", "evaluate", "matplotlib") if m in sys.modules]
        print(elapsed, heavy)
        assert not heavy, heavy
        assert elapsed < 1.0, elapsed
        """
    )
    assert res.returncode == 0, res.stderr


def test_lazy_public_names():
    from hf_ext.core.layers import run_layers

    assert hf_ext.run_layers is run_layers
    assert "attention_controls" in dir(hf_ext)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hf_ext.nope  # noqa: B018
