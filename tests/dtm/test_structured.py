"""Structured pruning (heads, MLP channels) against hooks that remove the same parts, on several families."""

import pytest
import torch

from hf_ext.core.anatomy import get_anatomy
from hf_ext.dtm.structured import layer_structure, pruned_units, removed_parameters, structured_prune

IDS = torch.tensor([[1, 5, 6, 7, 8, 9, 10]])


def _zero_output(module):
    def hook(mod, args, out):
        if isinstance(out, tuple):
            return (torch.zeros_like(out[0]), *out[1:])
        return torch.zeros_like(out)
    return module.register_forward_hook(hook)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "opt"])
def test_removing_everything_equals_zeroing_the_block_outputs(causal_lms, family):
    model = causal_lms[family]
    anatomy = get_anatomy(model)
    before = model(IDS).logits
    with structured_prune(model, {(0, "heads"): 1.0, (1, "mlp"): 1.0}):
        got = model(IDS).logits
    s = layer_structure(model, 0)
    hooks = [_zero_output(model.get_submodule(s.attn_out)), _zero_output(model.get_submodule(layer_structure(model, 1).mlp_down))]
    try:
        bias_free = model(IDS).logits
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(model(IDS).logits, before)  # restored bit-exactly
    # zeroing the projection's input columns leaves its bias: compare with the hooked model only without biases
    if getattr(model.get_submodule(s.attn_out), "bias", None) is None:
        assert torch.allclose(got, bias_free, atol=1e-5)
    else:
        assert not torch.allclose(got, before)
    assert anatomy.num_layers == 2


def test_smallest_heads_go_first_and_parameter_counts(causal_lms):
    model = causal_lms["llama"]
    s = layer_structure(model, 0)
    w = model.get_submodule(s.attn_out).weight.detach()
    norms = [float(w[:, h * s.head_dim:(h + 1) * s.head_dim].norm()) for h in range(s.num_heads)]
    assert pruned_units(model, 0, "heads", 0.5) == sorted(sorted(range(s.num_heads), key=norms.__getitem__)[:2])
    one_channel = (len(s.mlp_in) + 1) * s.hidden
    assert removed_parameters(model, {(1, "mlp"): 1 / s.intermediate}) == one_channel
    # all heads of a layer: query rows and output columns of every head, plus every key/value group
    all_heads = s.num_heads * 2 * s.head_dim * s.hidden + s.num_kv_heads * 2 * s.head_dim * s.hidden
    assert removed_parameters(model, {(0, "heads"): 1.0}) == all_heads


def test_bad_arguments(causal_lms):
    model = causal_lms["llama"]
    with pytest.raises(ValueError, match="structure"):
        pruned_units(model, 0, "experts", 0.5)
    with pytest.raises(ValueError, match="fraction"):
        pruned_units(model, 0, "heads", 1.5)
