"""hf_ext.core.sharding in one process: units, launch settings, guards (the sharded runs are in tests/distributed)."""

from __future__ import annotations

import pytest
import torch

from hf_ext.core.sharding import (
    decoder_layers,
    gather_full_tensors,
    shard_like,
    shard_model,
    sharding_kwargs,
    sharding_report,
    unsharded_copy,
)
from hf_ext.testing import CAUSAL_LM_FAMILIES, tiny_causal_lm


@pytest.mark.parametrize("family", CAUSAL_LM_FAMILIES)
def test_decoder_layers_are_the_anatomy_layers(family):
    model = tiny_causal_lm(family, num_layers=3)
    layers = decoder_layers(model)
    assert len(layers) == 3 and all(isinstance(m, torch.nn.Module) for m in layers)
    assert len({id(m) for m in layers}) == 3


def test_shard_model_needs_a_process_group_and_a_module():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        shard_model("model")
    with pytest.raises(RuntimeError, match="torchrun"):
        shard_model(tiny_causal_lm("llama"))


def _clear_fsdp_env(monkeypatch):
    for var in ("ACCELERATE_USE_FSDP", "FSDP_VERSION", "FSDP_RESHARD_AFTER_FORWARD", "FSDP_OFFLOAD_PARAMS"):
        monkeypatch.delenv(var, raising=False)


def test_sharding_kwargs_from_flag_and_launch_environment(monkeypatch):
    _clear_fsdp_env(monkeypatch)
    assert sharding_kwargs(None) is None and sharding_kwargs(None, fsdp=True) == {}
    # what `accelerate launch --config_file configs/accelerate/fsdp2.yaml` exports (Accelerate drops it on CPU)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    assert sharding_kwargs(None)["reshard_after_forward"] is False
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ValueError, match="fsdp_version 1"):
        sharding_kwargs(None, fsdp=True)


def test_sharding_kwargs_reads_the_accelerator_plugin(monkeypatch):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    _clear_fsdp_env(monkeypatch)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, reshard_after_forward=False)
    acc = SimpleNamespace(distributed_type=DistributedType.FSDP, state=SimpleNamespace(fsdp_plugin=plugin))
    assert sharding_kwargs(acc)["reshard_after_forward"] is False
    plain = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU, state=SimpleNamespace())
    assert sharding_kwargs(plain) is None


def test_helpers_on_plain_tensors_and_modules():
    lin = torch.nn.Linear(3, 2)
    assert sharding_report(lin) == {"sharded": False, "parameters": 2, "dtensor_parameters": 0, "global_numel": 8,
                                    "local_numel": 8}
    assert unsharded_copy(lin) is lin
    full = gather_full_tensors({"w": lin.weight, "n": 3})
    assert torch.equal(full["w"], lin.weight.detach()) and full["n"] == 3 and not full["w"].requires_grad
    assert torch.equal(shard_like(torch.ones(2, 3, dtype=torch.float64), lin.weight), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        shard_like(torch.ones(3, 2), lin.weight)


def test_component_guards():
    from hf_ext.diffusion.multifusion.sharding import unet_blocks
    from hf_ext.scar import ScarAdapter
    from hf_ext.scar.sharding import shard_scar
    from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM, umup_param_groups
    from hf_ext.umup.sharding import group_summary

    with pytest.raises(TypeError, match="ScarAdapter"):
        shard_scar(torch.nn.Linear(2, 2))
    model = tiny_causal_lm("llama")
    scar = ScarAdapter.for_model(model, layer=0).attach(model)
    try:
        with pytest.raises(ValueError, match="detach"):
            shard_scar(scar)
    finally:
        scar.detach()
    with pytest.raises(ValueError, match="down_blocks"):
        unet_blocks(torch.nn.Linear(2, 2))
    a = UMupLlamaForCausalLM(UMupConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4))
    b = UMupLlamaForCausalLM(a.config)
    with pytest.raises(ValueError, match="build it after shard_umup"):
        group_summary(umup_param_groups(a, lr=1.0), b)  # an optimizer holding another model's tensors
