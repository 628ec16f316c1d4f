"""Lazy package exports (one helper for every package) and optional dependencies that name their extra."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from hf_ext.utils.imports import extra_for, lazy_exports, require

HF_EXT = Path(__file__).resolve().parents[2] / "hf_ext"


def test_lazy_exports_resolve_cache_and_list(monkeypatch):
    import hf_ext.dtm as pkg

    getattr_, dir_, all_ = lazy_exports(pkg.__name__, {"int8": ["quantize_absmax"]}, submodules=["toy"])
    assert all_ == ["quantize_absmax", "toy"]
    monkeypatch.delattr(pkg, "quantize_absmax", raising=False)
    from hf_ext.dtm.int8 import quantize_absmax

    assert getattr_("quantize_absmax") is quantize_absmax and vars(pkg)["quantize_absmax"] is quantize_absmax
    assert getattr_("toy") is sys.modules["hf_ext.dtm.toy"]
    assert {"quantize_absmax", "toy", "__name__"} <= set(dir_())
    with pytest.raises(AttributeError, match="module 'hf_ext.dtm' has no attribute 'nope'"):
        getattr_("nope")
    with pytest.raises(ValueError, match="'a' is listed under both 'x' and 'y'"):
        lazy_exports("p", {"x": ["a"], "y": ["a"]})


def test_lazy_name_whose_dependency_is_missing_names_the_extra(monkeypatch):
    """A public name whose submodule imports a missing package (diffusers here, hidden) says which extra to install."""
    import hf_ext.diffusion.sld  # noqa: F401

    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "hf_ext.diffusion.sld.pipeline_sld", raising=False)
    getattr_, _, _ = lazy_exports("hf_ext.diffusion.sld", {"pipeline_sld": ["SafeLatentDiffusionPipeline"]})
    with pytest.raises(ModuleNotFoundError, match=r"hf_ext.diffusion.sld.SafeLatentDiffusionPipeline needs "
                                                  r"'diffusers', which is not installed: pip install 'hf-ext\[diffusion\]'"):
        getattr_("SafeLatentDiffusionPipeline")


def test_packages_use_the_helper_not_hand_written_getattr():
    hand_written = [str(p.relative_to(HF_EXT)) for p in HF_EXT.rglob("__init__.py")
                    if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__"
                           for n in ast.parse(p.read_text()).body)]
    assert not hand_written, f"use hf_ext.utils.imports.lazy_exports in {hand_written}"


def test_missing_dependency_names_the_extra():
    assert extra_for("diffusers.pipelines") == ("diffusion", "diffusers")
    assert extra_for("sklearn.metrics") == ("eval", "scikit-learn")
    with pytest.raises(ImportError, match=r"pip install 'hf-ext\[diffusion\]'"):
        require("diffusers.this_module_does_not_exist")
    with pytest.raises(ImportError, match="pip install surely_not_a_package"):
        require("surely_not_a_package")
    with pytest.raises(ImportError, match="pip install optimum-quanto"):
        require("optimum_probe_missing.quanto", distribution="optimum-quanto")
    assert require("json").dumps(1) == "1"
