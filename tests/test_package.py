"""Package-level behaviour: fast lazy import, Auto-class registration on transformers import, extras errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import hf_ext
from hf_ext._optional import require
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


def test_registration_runs_when_transformers_is_imported(tmp_path):
    (tmp_path / "pkgtoy_config.py").write_text(
        textwrap.dedent(
            """
            from transformers import PretrainedConfig

            class PkgToyConfig(PretrainedConfig):
                model_type = "hf_ext_pkgtoy"
            """
        )
    )
    res = _run(
        """
        import sys
        import hf_ext.auto as auto
        auto.REGISTRATIONS.append(auto.Registration("hf_ext_pkgtoy", "pkgtoy_config:PkgToyConfig"))
        auto._register_lazily()
        assert "transformers" not in sys.modules
        import transformers
        cfg = transformers.AutoConfig.for_model("hf_ext_pkgtoy")
        print(type(cfg).__name__)
        """,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("PkgToyConfig")


def test_missing_extra_names_the_extra():
    with pytest.raises(ImportError, match=r"hf-ext\[diffusion\]"):
        require("diffusers.this_module_does_not_exist")
    with pytest.raises(ImportError, match="pip install surely_not_a_package"):
        require("surely_not_a_package")
    assert require("json").dumps(1) == "1"
