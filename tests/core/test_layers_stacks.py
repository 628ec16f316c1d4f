"""``run_layers`` on decoders whose hidden states are not ``[batch, seq, hidden]`` or that carry state between layers.

* Hyper-connection stacks (DeepSeek-V4's mHC, GLM-5-Next: ``[B, T, streams, D]``; Qwen4-Exp: ``[B, T, streams*D]``)
  and Gemma-3n's AltUp (``[streams, B, T, D]``, batch not first) resume from perturbed hidden states exactly as the
  model's own forward does with that layer's input replaced by a plain torch hook (the reference).
* Decoders whose later layers read state an earlier layer left behind (Gemma-3n's and Kolibri's shared K/V) are
  refused without the context of their full forward, with the type, the reason and the fix
  (``tests/core/test_resume_context.py`` resumes them with it).
* A VLM whose class has no ``get_output_embeddings`` (Nemotron-H-Omni) still returns its own logits.
* Decoders whose ``output_hidden_states[l]`` is layer ``l``'s output, not its input (Mamba, FalconMamba, RWKV) resume
  from the layer inputs :func:`forward_with_layer_inputs` returns, against the model's own forward and the layer
  outputs taken with plain torch hooks; DTM's scan uses its prefix cache on them with the full-forward NLL.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from torch.nn import functional as F

from hf_ext.core.anatomy import get_anatomy
from hf_ext.core.layers import forward_with_layer_inputs, resume_refusal, run_layers
from hf_ext.dtm import magnitude_prune, reference, sensitivity_scan
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
def test_shared_key_values_of_earlier_layers_are_refused_without_a_context(family):
    """Later layers read K/V an earlier layer computed: not resumable from hidden states alone; the probe finds that
    replaying the full forward's context resumes them, so they are resumable with one."""
    model = build(family)
    assert resume_refusal(model) is None
    ids = text_ids(1, 5)
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
    with pytest.raises(ValueError, match=f"cannot resume '{family}'.*carries state between layers.*context="):
        run_layers(model, hidden[1], 1, return_logits=True, input_ids=ids)
    _, states = forward_with_layer_inputs(model, input_ids=ids, use_cache=False)
    assert states.context is not None


@torch.no_grad()
def test_logits_of_a_vlm_without_output_embeddings_accessor():
    model = build("nemotron_h_omni")
    assert model.get_output_embeddings() is None  # the class has no accessor; its language model has the head
    ids, mask, pos = _batch()
    full = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True, use_cache=False)
    for layer in range(get_anatomy(model).num_layers + 1):
        logits = run_layers(model, full.hidden_states[layer], layer, mask, pos, return_logits=True, input_ids=ids)
        torch.testing.assert_close(logits[mask.bool()], full.logits[mask.bool()], atol=1e-5, rtol=1e-5)


def test_looped_stacks_are_refused_with_the_reason():
    """Dory loops its middle layers: a layer has no single input to resume from."""
    model = build("dory")
    reason = resume_refusal(model)
    assert reason is not None and "dory" in reason and "runs 2 times per forward" in reason
    ids = text_ids(1, 5)
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    with pytest.raises(ValueError, match="runs 2 times per forward"):
        run_layers(model, out.hidden_states[1], 1, return_logits=True, input_ids=ids)
    with pytest.raises(ValueError, match="'dory'.*runs 2 times per forward"):
        forward_with_layer_inputs(model, input_ids=ids, use_cache=False)


RECORD_OUTPUTS = ["mamba", "falcon_mamba", "rwkv"]


@torch.no_grad()
def _with_layer_outputs(model, **kwargs):
    """The model's own forward and every decoder layer's output (its hidden states), taken with plain torch hooks."""
    layers = get_anatomy(model).layers
    outs = [None] * len(layers)

    def keep(i):
        def hook(module, args, out):
            outs[i] = out[0] if isinstance(out, tuple) else out
        return hook

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    try:
        return model(**kwargs), outs
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("family", RECORD_OUTPUTS)
@torch.no_grad()
def test_decoders_recording_layer_outputs_resume_from_every_layer(family):
    model = build(family)
    assert resume_refusal(model) is None
    ids, mask, pos = _batch()
    real = mask.bool()
    kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "use_cache": False}
    full, outs = _with_layer_outputs(model, **kwargs, output_hidden_states=True)
    n = len(outs)
    # the family records layer l's output at output_hidden_states[l] (so it cannot be resumed from there)
    for layer in range(n):
        torch.testing.assert_close(full.hidden_states[layer], outs[layer], atol=0, rtol=0)
    out, states = forward_with_layer_inputs(model, **kwargs)
    assert len(states) == n + 1
    torch.testing.assert_close(out.logits, full.logits, atol=0, rtol=0)
    torch.testing.assert_close(states[0], model.get_input_embeddings()(ids), atol=0, rtol=0)
    for layer in range(1, n):
        torch.testing.assert_close(states[layer], outs[layer - 1], atol=0, rtol=0)
    torch.testing.assert_close(states[n], full.hidden_states[n], atol=0, rtol=0)  # after the final norm
    for layer in range(n + 1):
        logits = run_layers(model, states[layer], layer, mask, pos, return_logits=True, input_ids=ids)
        torch.testing.assert_close(logits[real], full.logits[real], atol=1e-5, rtol=1e-5)
        if layer < n:  # through layer `layer`: its output, or after the last layer the decoder's (normed) output
            part = run_layers(model, states[layer], layer, mask, pos, end_layer=layer + 1, input_ids=ids)
            expected = outs[layer] if layer + 1 < n else full.hidden_states[n]
            torch.testing.assert_close(part[real], expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", RECORD_OUTPUTS)
@torch.no_grad()
def test_decoders_recording_layer_outputs_resume_from_given_states_like_the_models_forward(family):
    """Perturbed layer inputs: resuming equals the model's own forward with that layer's input replaced (so a
    resume that skipped or repeated a layer would show)."""
    model = build(family)
    ids, mask, pos = _batch()
    real = mask.bool()
    out, states = forward_with_layer_inputs(model, input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    full_logits = out.logits
    gen = torch.Generator().manual_seed(0)
    for layer in range(len(states) - 1):
        given = states[layer] * 1.5 + 0.1 * torch.randn(states[layer].shape, generator=gen)
        ref_logits, ref_out = _with_layer_input(model, ids, mask, pos, layer, given)
        assert (ref_logits[real] - full_logits[real]).abs().max() > 1e-3  # the change is visible
        with pytest.raises(ValueError, match=r"records each layer's output .*forward_with_layer_inputs"):
            run_layers(model, given, layer, mask, pos, return_logits=True, input_ids=ids)  # not vouched for
        logits = run_layers(model, given, layer, mask, pos, return_logits=True, input_ids=ids, from_layer_inputs=True)
        torch.testing.assert_close(logits[real], ref_logits[real], atol=1e-5, rtol=1e-5)
        if layer + 1 < len(states) - 1:  # the last layer run to the end returns the decoder's normed output
            part = run_layers(model, given, layer, mask, pos, end_layer=layer + 1, input_ids=ids,
                              from_layer_inputs=True)
            torch.testing.assert_close(part[real], ref_out[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", RECORD_OUTPUTS)
@torch.no_grad()
def test_decoders_recording_layer_outputs_refuse_output_hidden_states_as_layer_inputs(family):
    """output_hidden_states[l] has the shape of layer l's input but is its output: taken as the input, a resume would
    silently run layer l twice. It is refused with the fix named; the same states via forward_with_layer_inputs run."""
    model = build(family)
    ids, mask, pos = _batch()
    full = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, output_hidden_states=True)
    n = len(full.hidden_states) - 1
    for layer in range(n):
        with pytest.raises(ValueError, match=rf"{family}.*output_hidden_states\[{layer}\] is not the input of layer "
                                             rf"{layer}.*states\[{layer}\] of forward_with_layer_inputs"):
            run_layers(model, full.hidden_states[layer], layer, mask, pos, return_logits=True, input_ids=ids)
    # the state after the last layer is the decoder's output in both
    logits = run_layers(model, full.hidden_states[n], n, mask, pos, return_logits=True, input_ids=ids)
    torch.testing.assert_close(logits[mask.bool()], full.logits[mask.bool()], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("start", [1, 2])
def test_decoders_recording_layer_outputs_refuse_wrong_shaped_states(start):
    model = build("mamba")
    assert get_anatomy(model).num_layers == 2  # start 2: the decoder's output
    wide = torch.zeros(1, 4, model.config.hidden_size + 1)
    with pytest.raises(ValueError, match=rf"hidden_states must be \[batch, seq, {model.config.hidden_size}\] .*"
                                         rf"layer {start} of MambaForCausalLM.*got shape \(1, 4, "):
        run_layers(model, wide, start)


@torch.no_grad()
def test_forward_with_layer_inputs_is_output_hidden_states_where_that_records_the_inputs():
    from hf_ext.testing import tiny_causal_lm

    model = tiny_causal_lm("llama")
    ids, mask, pos = _batch()
    plain = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
    out, states = forward_with_layer_inputs(model, input_ids=ids, attention_mask=mask, position_ids=pos)
    assert len(states) == len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert all(a is b for a, b in zip(states, out.hidden_states))  # the forward's own tuple, nothing captured
    for a, b in zip(states, plain.hidden_states):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(out.logits, plain.logits, atol=0, rtol=0)


@torch.no_grad()
def test_sensitivity_scan_on_mamba_uses_the_prefix_cache_with_the_full_forward_nll():
    model = build("mamba")
    prompts = [[1, 5, 6, 7], [1, 9], [1, 20, 21, 22, 23, 24]]
    ref = reference(model, prompts, max_new_tokens=6, eos_token_id=[], progress=False)
    methods = {"prune": [0.9]}
    cached = sensitivity_scan(model, ref, methods=methods, progress=False)
    full = sensitivity_scan(model, ref, methods=methods, prefix_cache=False, progress=False)
    assert cached.prefix_cache is True and full.prefix_cache is False
    assert {row["layer"] for row in cached.rows} == {0, 1}  # resumed from layer 1 too, not only from layer 0
    for a, b in zip(cached.rows, full.rows):
        assert a["component"] == b["component"]
        assert a["nll"] == pytest.approx(b["nll"], rel=1e-5, abs=1e-6)
        assert (a["fdtm"], a["sdtm"]) == (b["fdtm"], b["sdtm"])
    # independent NLL of a layer-1 row: the perturbed model's own full forward, one prompt at a time, no padding
    row = next(r for r in cached.rows if r["layer"] == 1)
    with magnitude_prune(model, row["component"], 0.9):
        nlls = [F.cross_entropy(model(torch.tensor([p + c])).logits[0, len(p) - 1:len(p) - 1 + len(c)].float(),
                                torch.tensor(c), reduction="none")
                for p, c in zip(ref["prompt_ids"], ref["continuation_ids"])]
    assert row["nll"] == pytest.approx(float(torch.cat(nlls).mean()), rel=1e-4)
