"""hf_ext.compat at both ends of the version range: each function against the installed releases (this file runs in
the newest and in the oldest run of .ci/tiers.py), and each branch against stand-ins for the other releases."""

from __future__ import annotations

import inspect
import warnings
from types import SimpleNamespace

import pytest
import torch
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import CausalLMOutputWithPast

from hf_ext import compat
from hf_ext.testing import tiny_causal_lm


def test_cache_argument_and_field_match_the_installed_release():
    model = tiny_causal_lm("llama")
    name = compat.cache_argument(model)
    assert name in inspect.signature(type(model).forward).parameters
    assert compat.cache_field() in CausalLMOutputWithPast.__dataclass_fields__
    cache = DynamicCache()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[1, 5, 6]]), use_cache=True, **{name: cache})
    assert compat.output_cache(out) is not None and compat.output_cache(out).get_seq_length() == 3


def test_cache_argument_both_branches():
    def new(input_ids, cache=None, past_key_values=None): ...  # recent: both, the old name deprecated

    def old(input_ids, past_key_values=None): ...

    assert compat.cache_argument(new) == "cache" and compat.cache_argument(old) == "past_key_values"
    assert compat.output_cache(SimpleNamespace(cache="c", past_key_values=None)) == "c"
    assert compat.output_cache(SimpleNamespace(past_key_values="p")) == "p"
    assert compat.output_cache(SimpleNamespace()) is None


def test_build_causal_mask_installed_release_warns_not_and_masks_causally():
    config = tiny_causal_lm("llama").config
    hidden = torch.zeros(1, 4, config.hidden_size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Both past_key_values and cache are set" (transformers 5.2x)
        mask = compat.build_causal_mask(create_causal_mask, config, hidden, torch.ones(1, 4, dtype=torch.long),
                                        torch.arange(4).view(1, 4))
    if mask is not None:  # sdpa may return None for a plain causal mask
        visible = mask if mask.dtype == torch.bool else mask == 0
        assert torch.equal(visible.view(4, 4), torch.ones(4, 4, dtype=torch.bool).tril())


@pytest.mark.parametrize("signature", ["new", "old"])
def test_build_causal_mask_passes_one_cache_name(signature):
    seen = {}

    def new(config, inputs_embeds, attention_mask, cache, position_ids=None, *, past_key_values=None):
        seen.update(locals())

    def old(config, input_embeds, attention_mask, cache_position, past_key_values, position_ids=None):
        seen.update(locals())

    compat.build_causal_mask({"new": new, "old": old}[signature], "cfg", torch.zeros(1, 3, 2), None, None)
    if signature == "new":
        assert "cache" in seen and seen["past_key_values"] is None and "cache_position" not in seen
    else:
        assert torch.equal(seen["cache_position"], torch.arange(3)) and seen["input_embeds"].shape == (1, 3, 2)


def test_sub_config_spec_and_diffusers_dtype_kwargs():
    spec = compat.sub_config_spec()
    assert spec is None or spec.__name__ == "SubConfigSpec"
    pytest.importorskip("diffusers")
    from diffusers.pipelines import pipeline_utils

    (key,) = compat.diffusers_dtype_kwargs(torch.float16)
    source = inspect.getsource(pipeline_utils.DiffusionPipeline.from_pretrained)
    assert f'kwargs.pop("{key}"' in source  # the keyword this diffusers release reads


def test_split_loading_kwargs_and_requested_attn_implementation():
    hub, model, dropped = compat.split_loading_kwargs({
        "_from_auto": True, "_commit_hash": "abc", "config": object(), "adapter_kwargs": {"revision": "x"},
        "subfolder": "", "code_revision": None, "trust_remote_code": False, "cache_dir": "/c", "token": None,
        "force_download": False, "local_files_only": True, "dtype": torch.bfloat16, "device_map": "cpu",
        "revision": "main"})
    assert hub == {"cache_dir": "/c", "local_files_only": True}
    assert model == {"dtype": torch.bfloat16, "device_map": "cpu", "revision": "main"}
    assert set(dropped) == {"_from_auto", "_commit_hash", "config", "adapter_kwargs", "subfolder", "code_revision",
                            "trust_remote_code"}
    assert compat.split_loading_kwargs({"trust_remote_code": True})[1] == {"trust_remote_code": True}
    config = tiny_causal_lm("llama").config
    assert compat.requested_attn_implementation(None) is None
    assert compat.requested_attn_implementation(config) == config._attn_implementation


def test_load_image_processor_with_and_without_the_auto_fallback(tmp_path, monkeypatch):
    import transformers

    name = "CLIPImageProcessorPil" if hasattr(transformers, "CLIPImageProcessorPil") else "CLIPImageProcessor"
    getattr(transformers, name)(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(tmp_path)
    assert compat.load_image_processor(tmp_path).crop_size == {"height": 16, "width": 16}

    def needs_torchvision(*args, **kwargs):  # what AutoImageProcessor does on transformers 5.1x without torchvision
        raise ImportError("AutoImageProcessor requires the Torchvision library")

    try:
        monkeypatch.setattr(transformers.AutoImageProcessor, "from_pretrained", needs_torchvision)
    except ImportError:  # this release's Auto class is the torchvision-only one: the first call took the fallback
        pass
    processor = compat.load_image_processor(tmp_path)
    assert type(processor).__name__.removesuffix("Fast") == name and processor.crop_size["height"] == 16


def test_cache_argument_of_a_head_that_passes_kwargs_on_is_its_base_models():
    # Evolla's head names neither keyword and forwards **kwargs to its base model, which takes ``cache``: passing
    # ``past_key_values`` there raises transformers' deprecation warning
    class Base(torch.nn.Module):
        def forward(self, input_ids, cache=None, past_key_values=None): ...

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Base()

        @property
        def base_model(self):
            return self.model

        def forward(self, input_ids, **kwargs): ...

    class OldBase(Base):
        def forward(self, input_ids, past_key_values=None): ...

    head = Head()
    assert compat.cache_argument(head) == "cache"
    head.model = OldBase()
    assert compat.cache_argument(head) == "past_key_values"
