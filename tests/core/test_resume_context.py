"""``run_layers`` on decoders whose layers carry state besides the hidden states, resumed with the
:class:`~hf_ext.core.resume_context.ResumeContext` of a full forward (issue 17).

ZAYA hands each layer the previous layer's router states, Kolibri its candidate-key pool and shared K/V, Gemma-3n
shared K/V in a dict its layers fill, HY-V4 the top-k indices of its last full indexer. Every reference here is the
model's own forward with plain torch hooks: layer inputs and outputs taken with ``register_forward_pre_hook`` /
``register_forward_hook``, a perturbed layer input put in with a plain pre-hook.
"""

from __future__ import annotations

import pytest
import torch

from hf_ext.core.anatomy import get_anatomy
from hf_ext.core.layers import forward_with_layer_inputs, resume_refusal, run_layers
from hf_ext.core.resume_context import ResumeContext
from tests.conformance.catalog import build, left_padded, text_ids

FAMILIES = ["zaya", "kolibri1_1", "gemma3n_text", "hy_v4"]


def _batch():
    # longer than the tiny sliding window (8), left padded, with a [B, T] mask
    return left_padded(text_ids(2, 12, seed=4), [3, 0])


def _real(states, mask):
    """Non-padding positions of states whose batch and sequence axes are the first pair shaped like ``mask``."""
    axis = next(a for a in range(states.dim() - 1) if tuple(states.shape[a:a + 2]) == tuple(mask.shape))
    return states.movedim((axis, axis + 1), (0, 1))[mask.bool()]


@torch.no_grad()
def _own_forward(model, ids, mask, pos, layer=None, replacement=None):
    """The model's own forward (plain torch hooks): logits, each layer's input and output; with ``layer``, that
    layer's input replaced by ``replacement``."""
    layers = get_anatomy(model).layers
    inputs, outputs = [None] * len(layers), [None] * len(layers)

    def pre(i):
        def hook(module, args, kwargs):
            if i == layer:
                if args and isinstance(args[0], torch.Tensor):
                    args = (replacement, *args[1:])
                else:
                    kwargs = {**kwargs, "hidden_states": replacement}
            inputs[i] = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs["hidden_states"]
            return args, kwargs
        return hook

    def post(i):
        def hook(module, args, out):
            outputs[i] = out[0] if isinstance(out, (tuple, list)) else out
        return hook

    handles = [m.register_forward_pre_hook(pre(i), with_kwargs=True) for i, m in enumerate(layers)]
    handles += [m.register_forward_hook(post(i)) for i, m in enumerate(layers)]
    try:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    return logits, inputs, outputs


def _close(a, b, mask, what):
    torch.testing.assert_close(_real(a, mask), _real(b, mask), atol=1e-5, rtol=1e-5, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_resumes_from_every_layer_with_the_context_like_the_models_forward(family):
    model = build(family)
    assert resume_refusal(model) is None
    ids, mask, pos = _batch()
    ref_logits, ref_inputs, ref_outputs = _own_forward(model, ids, mask, pos)
    out, states = forward_with_layer_inputs(model, input_ids=ids, attention_mask=mask, position_ids=pos,
                                            use_cache=False)
    assert isinstance(states.context, ResumeContext) and (states.context.batch, states.context.length) == (2, 12)
    n = get_anatomy(model).num_layers
    assert len(states) == n + 1
    for layer in range(n):
        _close(states[layer], ref_inputs[layer], mask, f"input of layer {layer}")
    for layer in range(n + 1):
        logits = run_layers(model, states[layer], layer, mask, pos, return_logits=True, input_ids=ids,
                            context=states.context)
        _close(logits, ref_logits, mask, f"logits resumed from layer {layer}")
        if layer + 1 < n:
            part = run_layers(model, states[layer], layer, mask, pos, end_layer=layer + 1, input_ids=ids,
                              context=states.context)
            _close(part, ref_outputs[layer], mask, f"output of layer {layer}")


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_resumes_from_perturbed_inputs_like_the_models_forward_with_that_input_replaced(family):
    """What DTM does: layer l changed, its original input given; here the input itself is changed, so that layer l
    and every later layer run on new states while the replayed state of layers < l stays the full forward's."""
    model = build(family)
    ids, mask, pos = _batch()
    _, states = forward_with_layer_inputs(model, input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    plain_logits = _own_forward(model, ids, mask, pos)[0]
    n = get_anatomy(model).num_layers
    gen = torch.Generator().manual_seed(0)
    for layer in range(n):
        given = states[layer] * 1.5 + 0.1 * torch.randn(states[layer].shape, generator=gen)
        ref_logits, _, ref_outputs = _own_forward(model, ids, mask, pos, layer, given)
        assert (_real(ref_logits, mask) - _real(plain_logits, mask)).abs().max() > 1e-3  # the change is visible
        logits = run_layers(model, given, layer, mask, pos, return_logits=True, input_ids=ids, context=states.context)
        _close(logits, ref_logits, mask, f"logits resumed from a perturbed layer {layer}")
        if layer + 1 < n:
            part = run_layers(model, given, layer, mask, pos, end_layer=layer + 1, input_ids=ids,
                              context=states.context)
            _close(part, ref_outputs[layer], mask, f"output of a perturbed layer {layer}")


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_resuming_without_the_context_is_refused_with_type_reason_and_fix(family):
    model = build(family)
    ids, mask, pos = _batch()
    _, states = forward_with_layer_inputs(model, input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    family_name = get_anatomy(model).family
    unregistered = states[1].clone()  # not a state forward_with_layer_inputs returned: its context is unknown
    with pytest.raises(ValueError, match=rf"cannot resume '{family_name}' .* at layer 1 without a ResumeContext: the "
                       r"decoder carries state between layers.*pass context=states\.context of "
                       r"forward_with_layer_inputs"):
        run_layers(model, unregistered, 1, mask, pos, return_logits=True, input_ids=ids)
    # the states forward_with_layer_inputs returned find their context themselves
    found = run_layers(model, states[1], 1, mask, pos, return_logits=True, input_ids=ids)
    given = run_layers(model, unregistered, 1, mask, pos, return_logits=True, input_ids=ids, context=states.context)
    torch.testing.assert_close(found, given, atol=0, rtol=0)
    # layer 0 skips nothing: no context needed
    run_layers(model, unregistered, 0, mask, pos, end_layer=1, input_ids=ids)


@torch.no_grad()
def test_a_context_of_a_batch_of_another_shape_is_refused():
    model = build("zaya")
    ids, mask, pos = _batch()
    _, states = forward_with_layer_inputs(model, input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    _, one_row = forward_with_layer_inputs(model, input_ids=ids[1:], use_cache=False)
    with pytest.raises(ValueError, match=r"recorded on a batch of shape \(1, 12\) \(batch, length\), the hidden "
                                         r"states are \(2, 12\).*pass context=states\.context"):
        run_layers(model, states[1], 1, mask, pos, return_logits=True, input_ids=ids, context=one_row.context)
    with pytest.raises(ValueError, match="context must be a ResumeContext"):
        run_layers(model, states[1], 1, mask, pos, input_ids=ids, context=states)


@torch.no_grad()
def test_a_context_of_another_model_is_refused():
    other = build("kolibri1_1")
    _, foreign = forward_with_layer_inputs(other, input_ids=text_ids(2, 12), use_cache=False)
    model = build("zaya")
    ids, mask, pos = _batch()
    _, states = forward_with_layer_inputs(model, input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    with pytest.raises(ValueError, match=r"recorded on another model \(Kolibri1_1ForCausalLM\).*ZayaForCausalLM"):
        run_layers(model, states[1], 1, mask, pos, input_ids=ids, context=foreign.context)


def _refusal_with_a_shared_object_dependency(model) -> str | None:
    """``resume_refusal(model)`` while layer 0 stashes (the mean of) its output on the decoder and layer 1 adds the
    stash to its output (plain torch hooks: state a layer leaves on a shared object, which nothing hands on)."""
    anatomy = get_anatomy(model)
    shared = anatomy.decoder

    def stash(module, args, out):
        shared.stashed = (out[0] if isinstance(out, tuple) else out).mean(dim=(1, 2), keepdim=True)

    def read(module, args, out):
        return (out[0] + shared.stashed, *out[1:]) if isinstance(out, tuple) else out + shared.stashed

    handles = [anatomy.layers[0].register_forward_hook(stash), anatomy.layers[1].register_forward_hook(read)]
    try:
        return resume_refusal(model)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def test_state_left_on_a_shared_object_is_not_replayed_so_the_probe_refuses():
    """A context replays layer outputs and dict arguments only. State a layer leaves on a shared object would be read
    stale from whatever forward ran last: the probe checks the replay after a forward on other tokens, so it
    refuses."""
    import transformers

    from tests.conformance.shrink import shrink_config

    config = shrink_config(transformers.ZayaConfig, num_experts_per_tok=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
    reason = _refusal_with_a_shared_object_dependency(model)
    assert reason is not None and "'zaya'" in reason and "carries state between layers" in reason


@torch.no_grad()
def test_a_decoder_reading_state_from_a_shared_object_is_refused_not_resumed_stale():
    """The same shared-object dependency on a decoder that hands on the hidden states only (Llama): resumed right after
    a full forward on the same tokens the stashed value happens to be right, so the probe checks after a forward on
    other tokens and refuses (a resume would otherwise read whatever the last forward left)."""
    from hf_ext.testing import tiny_causal_lm

    reason = _refusal_with_a_shared_object_dependency(tiny_causal_lm("llama"))
    assert reason is not None and "'llama'" in reason and "carries state between layers" in reason
    assert resume_refusal(tiny_causal_lm("llama")) is None  # without the hooks: resumable
