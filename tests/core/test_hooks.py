"""Hooks with a lifetime: per-row parameters, restoration after exceptions, thread isolation."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from torch import nn

from hf_ext.core.anatomy import get_anatomy
from hf_ext.core.hooks import current_params, forward_hooks, module_swaps, rows


def _zeroed_mlp_copy(model, layer):
    """Independent reference: a deep copy whose MLP output in ``layer`` is exactly zero (weights and biases zeroed)."""
    ref = copy.deepcopy(model)
    out = get_anatomy(ref).mlp_outputs[layer]
    last = [m for m in out.modules() if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"][-1]
    with torch.no_grad():
        last.weight.zero_()
        if last.bias is not None:
            last.bias.zero_()
    return ref


def _scale(module, args, output, params):
    return output * rows(params["alpha"], output)


@torch.no_grad()
def test_per_row_parameters_match_reference(causal_lm):
    ids = torch.tensor([[1, 20, 21, 22, 23], [1, 30, 31, 32, 33]])
    plain = causal_lm(ids).logits
    zeroed = _zeroed_mlp_copy(causal_lm, 0)(ids).logits
    target = get_anatomy(causal_lm).mlp_outputs[0]
    with forward_hooks({target: _scale}, params={"alpha": torch.tensor([1.0, 0.0])}):
        steered = causal_lm(ids).logits
    torch.testing.assert_close(steered[0], plain[0], rtol=0, atol=0)
    torch.testing.assert_close(steered[1], zeroed[1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(steered[1], plain[1])


@torch.no_grad()
def test_restored_bit_identical_after_exception(causal_lm):
    ids = torch.tensor([[1, 20, 21, 22]])
    before = causal_lm(ids).logits
    target = get_anatomy(causal_lm).mlp_outputs[-1]
    with pytest.raises(RuntimeError, match="boom"):
        with forward_hooks({target: _scale}, params={"alpha": 0.0}):
            assert not torch.equal(causal_lm(ids).logits, before)
            raise RuntimeError("boom")
    assert not target._forward_hooks
    assert torch.equal(causal_lm(ids).logits, before)


@torch.no_grad()
def test_hooks_invisible_to_other_threads(causal_lm):
    ids = torch.tensor([[1, 20, 21, 22]])
    plain = causal_lm(ids).logits
    target = get_anatomy(causal_lm).mlp_outputs[0]
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def steering_thread():
        with forward_hooks({target: _scale}, params={"alpha": 0.0}):
            inside.set()
            done.wait(timeout=30)
            seen["steered"] = causal_lm(ids).logits

    worker = threading.Thread(target=steering_thread)
    worker.start()
    assert inside.wait(timeout=30)
    seen["other"] = causal_lm(ids).logits  # runs while the other thread's hook is registered
    done.set()
    worker.join()
    assert torch.equal(seen["other"], plain)
    assert not torch.allclose(seen["steered"], plain)


def test_nested_groups_and_params():
    lin = nn.Linear(2, 2)
    calls = []
    with forward_hooks({lin: lambda m, a, o, p: calls.append(p)}, params="outer") as t1:
        with forward_hooks({lin: lambda m, a, o, p: calls.append(p)}, params="inner") as t2:
            assert current_params(t1) == "outer" and current_params(t2) == "inner"
            lin(torch.zeros(1, 2))
        assert current_params(t2) is None
        lin(torch.zeros(1, 2))
    assert calls == ["outer", "inner", "outer"]


def test_pre_hooks_modify_inputs():
    lin = nn.Linear(2, 2)
    x = torch.ones(1, 2)
    with forward_hooks({}, pre_hooks={lin: lambda m, args, p: (args[0] * p,)}, params=0.0):
        assert torch.equal(lin(x), lin.bias.detach().unsqueeze(0))


def test_rows_validation():
    like = torch.zeros(3, 4, 5)
    assert rows(torch.tensor([1.0, 2.0, 3.0]), like).shape == (3, 1, 1)
    assert rows(2.0, like).dim() == 0
    with pytest.raises(ValueError, match="batch has 3 rows"):
        rows(torch.tensor([1.0, 2.0]), like)
    flat = rows(torch.tensor([1.0, 2.0]), torch.zeros(6, 5))  # [B*T, D] with B=2, T=3
    assert flat.flatten().tolist() == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    with pytest.raises(TypeError, match="nn.Module"):
        with forward_hooks({"model.layers.0": _scale}):
            pass


@torch.no_grad()
def test_module_swaps_restore(causal_lm):
    ids = torch.tensor([[1, 20, 21, 22]])
    before = causal_lm(ids).logits
    anatomy = get_anatomy(causal_lm)
    name = f"{anatomy.layers_path}.0"
    original = causal_lm.get_submodule(name)
    with pytest.raises(RuntimeError):
        with module_swaps(causal_lm, {f"{name}.{n}": nn.Identity() for n, m in original.named_children() if m in anatomy.mlp_outputs}):
            raise RuntimeError("boom")
    assert causal_lm.get_submodule(name) is original
    assert torch.equal(causal_lm(ids).logits, before)
    with pytest.raises(ValueError, match="no submodule 'nope.x'"):
        with module_swaps(causal_lm, {"nope.x": nn.Identity()}):
            pass
    with pytest.raises(TypeError, match="must be an nn.Module"):
        with module_swaps(causal_lm, {name: 3}):
            pass
    assert causal_lm.get_submodule(name) is original
