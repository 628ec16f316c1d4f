"""Nested ``from_pretrained``: a SCAR adapter folder loads its base model through the base's own class, with the
caller's public options only, on every path (Auto, ScarModel, from_config), and hf_ext has no other nested load."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

import hf_ext
from hf_ext.scar import ScarAdapter, ScarConfig, ScarModel
from hf_ext.testing import tiny_causal_lm

IDS = torch.tensor([[1, 5, 9, 2, 7, 3]])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(adapter folder, base folder, expected steered logits) with a base saved as a plain Llama folder."""
    root = tmp_path_factory.mktemp("scar_loading")
    base = tiny_causal_lm("llama", seed=0)
    base.save_pretrained(root / "base")
    base = AutoModelForCausalLM.from_pretrained(root / "base").eval()
    scar = ScarAdapter.for_model(base, layer=1, concepts=["a"], seed=0)
    scar.config.base_model_name_or_path = str(root / "base")
    with torch.no_grad():
        scar.latent_bias[0] = 0.6
    scar.attach(base)
    with torch.no_grad(), scar.steer({"a": -20.0}, output="replace"):
        want = base(IDS).logits
    scar.save_pretrained(root / "scar", card=False)
    scar.detach()
    return root / "scar", root / "base", want


def _check(model, want, dtype=torch.float32):
    assert isinstance(model, ScarModel)
    assert type(model.model) is LlamaForCausalLM  # the base's own class, from the base's config
    assert model.model.dtype == dtype
    with torch.no_grad():
        got = model(IDS, steering={"a": -20.0}, steering_output="replace").logits.float()
    torch.testing.assert_close(got, want, rtol=0 if dtype == torch.float32 else 0.05,
                               atol=0 if dtype == torch.float32 else 0.05)


def test_auto_model_loads_the_base_without_private_kwargs(saved):
    adapter, _, want = saved
    # The Auto class passes _from_auto, config, adapter_kwargs, trust_remote_code, revision … to ScarModel:
    # none of them may reach the nested load of the base (transformers 5.25 raised "multiple values for _from_auto").
    _check(AutoModelForCausalLM.from_pretrained(adapter), want)


def test_auto_model_forwards_public_options_to_the_base(saved):
    adapter, _, want = saved
    model = AutoModelForCausalLM.from_pretrained(adapter, dtype=torch.bfloat16, attn_implementation="eager",
                                                 local_files_only=True)
    _check(model, want, torch.bfloat16)
    assert model.model.config._attn_implementation == "eager"
    assert model.scar.encoder.weight.dtype == torch.float32  # adapter_dtype default: fp32


def test_scarmodel_from_pretrained_direct_and_revisions(saved):
    adapter, base, want = saved
    _check(ScarModel.from_pretrained(adapter, _from_auto=True, _commit_hash="abc", adapter_kwargs={}), want)
    with pytest.raises(ValueError, match="revision='a'.*adapter_revision='b'"):
        ScarModel.from_pretrained(adapter, revision="a", adapter_revision="b")
    with pytest.raises(ValueError, match="subfolder='x'"):
        ScarModel.from_pretrained(adapter, subfolder="x")
    with pytest.raises(TypeError, match=r"unsupported download options \['proxies'\]"):
        ScarAdapter.from_pretrained(adapter, proxies={"https": "p"})


def test_given_base_ignores_base_options_with_a_warning(saved, caplog):
    adapter, base, want = saved
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    with caplog.at_level(logging.WARNING, logger="hf_ext.scar.modeling_scar"):
        sm = ScarModel.from_pretrained(adapter, model=model, dtype=torch.bfloat16)
    assert sm.model is model and "ignores base-model arguments ['dtype']" in caplog.text
    _check(sm, want)
    sm.scar.detach()


def test_from_config_and_init_load_the_named_base(saved):
    adapter, _, want = saved
    config = AutoConfig.from_pretrained(adapter)
    assert isinstance(config, ScarConfig)
    adapter_weights = ScarAdapter.from_pretrained(adapter).state_dict()
    for model in (ScarModel(config), AutoModelForCausalLM.from_config(config)):
        assert type(model.model) is LlamaForCausalLM
        model.scar.load_state_dict(adapter_weights)
        _check(model.eval(), want)


# ----------------------------------------------------------------------------------------------- the audit


def _forwarding_from_pretrained_calls(path: Path) -> list[str]:
    """``from_pretrained(..., **x)`` calls in one file, as ``file:function``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "from_pretrained" and any(k.arg is None for k in node.keywords)):
                found.append(f"{path.name}:{fn.name}")
    return found


def test_every_nested_from_pretrained_that_forwards_kwargs_is_audited():
    """A new ``X.from_pretrained(..., **kwargs)`` inside hf_ext must go through ``split_loading_kwargs`` and get a test
    here: add it to AUDITED only then."""
    audited = {"persistence.py:load_base_model",  # split_loading_kwargs, tested above
               "modeling_scar.py:from_pretrained",  # ScarAdapter.from_pretrained(**hub): download options only
               "persistence.py:from_pretrained",  # ModelHubMixin.from_pretrained: DOWNLOAD_OPTIONS only (TypeError)
               "cli.py:load_pipeline",  # SLD CLI: diffusers_dtype_kwargs(dtype), one dtype keyword
               "compat.py:load_image_processor",  # the caller's kwargs for the same folder (tests/test_compat.py)
               # verify_manifest, then the parent class's own from_pretrained with the caller's arguments unchanged
               "saving.py:from_pretrained", "pipeline_mixin.py:from_pretrained",
               "configuration_scar.py:from_pretrained",  # super().from_pretrained: the same config, one path kwarg added
               "tokenization_tfree.py:from_pretrained"}  # super().from_pretrained after the strict file checks
    package = Path(hf_ext.__file__).parent
    found = {call for path in sorted(package.rglob("*.py")) for call in _forwarding_from_pretrained_calls(path)}
    assert found == audited, f"unaudited nested from_pretrained calls forwarding **kwargs: {sorted(found - audited)}"
