"""``run_layers`` on decoders whose hidden states are not ``[batch, seq, hidden]`` or that carry state between layers.

* Hyper-connection stacks (DeepSeek-V4's mHC, GLM-5-Next: ``[B, T, streams, D]``; Qwen4-Exp: ``[B, T, streams*D]``)
  and Gemma-3n's AltUp (``[streams, B, T, D]``, batch not first) resume from perturbed hidden states exactly as the
  model's own forward does with that layer's input replaced by a plain torch hook (the reference).
* Decoders whose later layers read state an earlier layer left behind (Gemma-3n's and Kolibri's shared K/V) are
  refused with the type and the reason.
* A VLM whose class has no ``get_output_embeddings`` (Nemotron-H-Omni) still returns its own logits.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from hf_ext.core.anatomy import get_anatomy
from hf_ext.core.layers import resume_refusal, run_layers
from tests.conformance.catalog import build, left_padded, text_ids
from tests.conformance.shrink import shrink_config


def _gemma3n_unshared():
    """Gemma-3n with its AltUp streams and per-layer inputs but no K/V sharing (resumable)."""
    config = shrink_config(transformers.Gemma3nTextConfig, num_hidden_layers=3, num_kv_shared_layers=0,
                           layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                           intermediate_size=[128] * 3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return transformers.Gemma3nForCausalLM(config).eval()


STREAMS = {"deepseek_v4": lambda: build("deepseek_v4"), "qwen4_exp_text": lambda: build("qwen4_exp_text"),
           "glm5_next": lambda: build("glm5_next"), "gemma3n_text_unshared": _gemma3n_unshared}


def _batch():
    ids, mask, pos = left_padded(text_ids(2, 10, seed=3), [2, 0])
    return ids, mask, pos


def _real(states, mask):
    """Non-padding positions of states whose batch and sequence axes are the first pair shaped like ``mask``."""
    axis = next(a for a in range(states.dim() - 1) if tuple(states.shape[a:a + 2]) == tuple(mask.shape))
    return states.movedim((axis, axis + 1), (0, 1))[mask.bool()]


@torch.no_grad()
def _with_layer_input(model, ids, mask, pos, layer, replacement):
    """The model's own forward with decoder layer ``layer``'s input replaced (plain torch hooks): logits and that
    layer's output."""
    target = get_anatomy(model).layers[layer]
    seen = {}

    def pre(module, args, kwargs):
        if args and isinstance(args[0], torch.Tensor):
            return (replacement, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": replacement}

    def post(module, args, out):
        seen["out"] = out[0] if isinstance(out, tuple) else out

    handles = [target.register_forward_pre_hook(pre, with_kwargs=True), target.register_forward_hook(post)]
    try:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    return logits, seen["out"]


@pytest.mark.parametrize("family", list(STREAMS))
@torch.no_grad()
def test_resumes_stream_shaped_hidden_states_like_the_models_forward(family):
    model = STREAMS[family]()
    assert resume_refusal(model) is None
    ids, mask, pos = _batch()
    full = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True, use_cache=False)
    n = get_anatomy(model).num_layers
    assert full.hidden_states[0].dim() == 4 or full.hidden_states[0].shape[-1] != model.config.hidden_size
    gen = torch.Generator().manual_seed(0)
    for layer in range(n):
        given = full.hidden_states[layer] * 1.5 + 0.1 * torch.randn(full.hidden_states[layer].shape, generator=gen)
        ref_logits, ref_out = _with_layer_input(model, ids, mask, pos, layer, given)
        assert (_real(ref_logits, mask) - _real(full.logits, mask)).abs().max() > 1e-3  # the change is visible
        logits = run_layers(model, given, layer, mask, pos, return_logits=True, input_ids=ids)
        torch.testing.assert_close(_real(logits, mask), _real(ref_logits, mask), atol=1e-5, rtol=1e-5)
        if layer + 1 < n:  # run to the end, the decoder's own output (streams merged, normed) comes back
            part = run_layers(model, given, layer, mask, pos, end_layer=layer + 1, input_ids=ids)
            torch.testing.assert_close(_real(part, mask), _real(ref_out, mask), atol=1e-5, rtol=1e-5)
    # after the last layer: output_hidden_states[-1] as the full forward returns it
    logits = run_layers(model, full.hidden_states[n], n, mask, pos, return_logits=True, input_ids=ids)
    torch.testing.assert_close(_real(logits, mask), _real(full.logits, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["deepseek_v4", "gemma3n_text_unshared"])
def test_hidden_states_of_the_wrong_layout_are_refused(family):
    model = STREAMS[family]()
    flat = torch.zeros(1, 4, model.config.get_text_config().hidden_size)
    with pytest.raises(ValueError, match=r"hidden_states must be \[.*(batch, seq|4, batch).*got shape \(1, 4, "):
        run_layers(model, flat, 1)


@pytest.mark.parametrize("family", ["gemma3n_text", "kolibri1_1"])
def test_shared_key_values_of_earlier_layers_are_refused(family):
    """Later layers read K/V an earlier layer computed: not resumable from hidden states alone."""
    model = build(family)
    reason = resume_refusal(model)
    assert reason is not None and family in reason and "carries state between layers" in reason
    ids = text_ids(1, 5)
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
    with pytest.raises(ValueError, match="carries state between layers"):
        run_layers(model, hidden[1], 1, return_logits=True, input_ids=ids)


@torch.no_grad()
def test_logits_of_a_vlm_without_output_embeddings_accessor():
    model = build("nemotron_h_omni")
    assert model.get_output_embeddings() is None  # the class has no accessor; its language model has the head
    ids, mask, pos = _batch()
    full = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True, use_cache=False)
    for layer in range(get_anatomy(model).num_layers + 1):
        logits = run_layers(model, full.hidden_states[layer], layer, mask, pos, return_logits=True, input_ids=ids)
        torch.testing.assert_close(logits[mask.bool()], full.logits[mask.bool()], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("family", "why"), [("dory", "runs 2 times per forward"),
                                              ("mamba", "this family records layer outputs"),
                                              ("rwkv", "this family records layer outputs")])
def test_looped_stacks_and_shifted_hidden_states_are_refused_with_the_reason(family, why):
    """Dory loops its middle layers (a layer has no single input); Mamba's and RWKV's output_hidden_states[l] is
    what layer l returned, so resuming layer l from it would silently skip a layer."""
    model = build(family)
    reason = resume_refusal(model)
    assert reason is not None and family in reason and why in reason
    ids = text_ids(1, 5)
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    if family != "dory":  # the refusal is right: hidden_states[0] is layer 0's output, the input of layer 1
        layers = get_anatomy(model).layers
        seen = {}
        handle = layers[1].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
        handle.remove()
        torch.testing.assert_close(seen["x"], out.hidden_states[0], atol=0, rtol=0)
    with pytest.raises(ValueError, match=why):
        run_layers(model, out.hidden_states[1], 1, return_logits=True, input_ids=ids)
