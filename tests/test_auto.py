"""Auto-class registration: lazy (on transformers' import), complete whichever module imports transformers first."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

MODEL_TYPES = ["scar", "tfree", "umup_llama", "mad_stack"]


def _run(code: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


@pytest.mark.parametrize("first", ["transformers", "hf_ext.umup.configuration_umup", "hf_ext.scar.modeling_scar",
                                   "hf_ext.tfree.tokenization_tfree", "hf_ext.mad"])
def test_every_model_type_registers_whatever_is_imported_first(first):
    """A modeling module that itself triggers transformers' import is half-imported when the registration starts:
    its model type is registered when its import finishes (no code at the end of modeling modules needed)."""
    res = _run(f"""
        import importlib
        importlib.import_module({first!r})
        import transformers
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
        from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING
        from hf_ext.registry import components
        for entry in (a for c in components() for a in c.auto):
            config = CONFIG_MAPPING[entry.model_type]
            for auto_name, path in entry.models.items():
                assert getattr(transformers, auto_name)._model_mapping[config].__name__ == path.split(":")[1], path
            if entry.tokenizer:
                tokenizer = TOKENIZER_MAPPING[config]
                tokenizer = tokenizer[-1] if isinstance(tokenizer, tuple) else tokenizer
                assert tokenizer.__name__ == entry.tokenizer.split(":")[1]
        print(sorted(a.model_type for c in components() for a in c.auto))
    """)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == str(sorted(MODEL_TYPES))


def test_a_component_registered_later_registers_at_once(tmp_path):
    (tmp_path / "pkgtoy").mkdir()
    (tmp_path / "pkgtoy" / "configuration_pkgtoy.py").write_text(textwrap.dedent("""
        from transformers import PretrainedConfig

        class PkgToyConfig(PretrainedConfig):
            model_type = "hf_ext_pkgtoy"

        class LegacyConfig(PretrainedConfig):
            model_type = "hf_ext_pkgtoy_legacy"
    """))
    (tmp_path / "pkgtoy" / "__init__.py").write_text(textwrap.dedent("""
        from hf_ext.registry import AutoClasses, register_component

        register_component(name="pkgtoy", title="PkgToy", order=999, package=__name__,
                           auto=[AutoClasses("hf_ext_pkgtoy", config=".configuration_pkgtoy:PkgToyConfig")])
    """))
    res = _run("""
        import sys, warnings
        import hf_ext, pkgtoy
        assert "transformers" not in sys.modules
        import transformers
        print(type(transformers.AutoConfig.for_model("hf_ext_pkgtoy")).__name__)
        import hf_ext.auto as auto  # the deprecated list still registers (with a warning)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            auto.REGISTRATIONS.append(auto.Registration("hf_ext_pkgtoy_legacy",
                                                        "pkgtoy.configuration_pkgtoy:LegacyConfig"))
        assert "REGISTRATIONS is deprecated" in str(caught[0].message)
        print(type(transformers.AutoConfig.for_model("hf_ext_pkgtoy_legacy")).__name__)
    """, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split() == ["PkgToyConfig", "LegacyConfig"]
