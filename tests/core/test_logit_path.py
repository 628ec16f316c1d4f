"""Logits always come through the model's own code after the head (issue 17, item 2).

Families that change the logits after ``lm_head`` — Cohere multiplies by ``logit_scale``, Granite divides by
``logits_scaling``, Gemma 2 soft-caps with ``final_logit_softcapping`` — against the model's own full forward:
``run_layers(..., return_logits=True)`` from every layer, and DTM's ``sensitivity_scan`` NLL with and without the
prefix cache against the NLL of the reference continuation computed here from full-forward logits.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from torch.nn import functional as F

from hf_ext.core.layers import run_layers
from hf_ext.dtm import magnitude_prune, reference, sensitivity_scan
from tests.conformance.shrink import shrink_config

# (config class, the post-head field, a value far from neutral so that skipping it is visible)
CASES = {
    "cohere_logit_scale": ("CohereConfig", "logit_scale", 0.0625),
    "granite_logits_scaling": ("GraniteConfig", "logits_scaling", 8.0),
    "gemma2_final_logit_softcapping": ("Gemma2Config", "final_logit_softcapping", 2.0),
}
PROMPTS = [[1, 5, 6, 7], [1, 9], [1, 20, 21, 22, 23, 24]]


def _model(case):
    name, field, value = CASES[case]
    config = shrink_config(getattr(transformers, name), **{field: value})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config)
    return model.eval(), field, value


@pytest.mark.parametrize("case", list(CASES))
@torch.no_grad()
def test_run_layers_logits_equal_full_forward(case):
    model, field, value = _model(case)
    ids = torch.tensor([[0, 0, 1, 5, 6, 7, 8], [1, 9, 10, 11, 12, 13, 14]])
    mask = (torch.arange(7) >= torch.tensor([[2], [0]])).long()
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    full = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
    plain_head = model.get_output_embeddings()(full.hidden_states[-1])
    real = mask.bool()
    # the family really changes the logits after the head: lm_head alone is visibly wrong
    assert (plain_head[real] - full.logits[real]).abs().max() > 1e-2, (field, value)
    for layer in range(model.config.num_hidden_layers + 1):
        logits = run_layers(model, full.hidden_states[layer], layer, mask, pos, return_logits=True, input_ids=ids)
        torch.testing.assert_close(logits[real], full.logits[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
@torch.no_grad()
def test_sensitivity_scan_nll_with_and_without_prefix_cache(case):
    model, _, _ = _model(case)
    ref = reference(model, PROMPTS, max_new_tokens=6, eos_token_id=[], progress=False)
    methods = {"prune": [0.9]}
    cached = sensitivity_scan(model, ref, methods=methods, progress=False)
    full = sensitivity_scan(model, ref, methods=methods, prefix_cache=False, progress=False)
    for a, b in zip(cached.rows, full.rows):
        assert a["nll"] == pytest.approx(b["nll"], rel=1e-5, abs=1e-6)
        assert (a["fdtm"], a["sdtm"]) == (b["fdtm"], b["sdtm"])
    # independent NLL of one row: the perturbed model's own full forward, one prompt at a time, no padding
    row = full.rows[0]
    with magnitude_prune(model, row["component"], 0.9):
        nlls = []
        for p, c in zip(ref["prompt_ids"], ref["continuation_ids"]):
            logits = model(torch.tensor([p + c])).logits[0, len(p) - 1:len(p) - 1 + len(c)]
            nlls.append(F.cross_entropy(logits.float(), torch.tensor(c), reduction="none"))
    assert row["nll"] == pytest.approx(float(torch.cat(nlls).mean()), rel=1e-4)


@torch.no_grad()
def test_run_layers_refuses_a_decoder_that_carries_extra_state():
    """The probe catches a decoder whose layer 1 does not read layer 0's output (here: a pre-hook adds 1)."""
    from hf_ext.testing import tiny_causal_lm

    model = tiny_causal_lm("llama")
    ids = torch.tensor([[1, 5, 6, 7]])
    full = model(ids, output_hidden_states=True)
    handle = model.model.layers[1].register_forward_pre_hook(lambda m, args: (args[0] + 1.0, *args[1:]))
    try:
        with pytest.raises(ValueError, match=r"cannot resume 'llama' \(LlamaForCausalLM\) from hidden states: .*layer 1"):
            run_layers(model, full.hidden_states[1], 1, return_logits=True)
    finally:
        handle.remove()
    # a fresh model object is probed afresh; the stand-ins are gone after each call
    model = tiny_causal_lm("llama")
    run_layers(model, full.hidden_states[1], 1, return_logits=True)
    assert all(type(layer).__name__ == "LlamaDecoderLayer" for layer in model.model.layers)
    torch.testing.assert_close(model(ids).logits, full.logits)


@torch.no_grad()
def test_zaya_router_states_between_layers_need_the_context_and_dtm_scans_with_the_prefix_cache():
    """ZAYA hands each layer the previous layer's router states next to the hidden states: resuming from hidden
    states alone gave logits off by 0.015, so run_layers refuses that naming the type; with the context of the full
    forward it resumes, and DTM's prefix-cache scan gives the NLL of full forwards and of the perturbed model's own
    forward."""
    from hf_ext.core.layers import resume_refusal

    config = shrink_config(transformers.ZayaConfig, num_experts_per_tok=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
    assert resume_refusal(model) is None
    full = model(torch.tensor([[1, 5, 6, 7]]), output_hidden_states=True)
    with pytest.raises(ValueError, match="cannot resume 'zaya'.*carries state between layers"):
        run_layers(model, full.hidden_states[1], 1, return_logits=True)
    ref = reference(model, PROMPTS, max_new_tokens=4, eos_token_id=[], progress=False)
    scan = sensitivity_scan(model, ref, methods={"prune": [0.9]}, progress=False)
    plain = sensitivity_scan(model, ref, methods={"prune": [0.9]}, prefix_cache=False, progress=False)
    assert scan.prefix_cache is True and plain.prefix_cache is False
    for a, b in zip(scan.rows, plain.rows):
        assert a["component"] == b["component"] and (a["fdtm"], a["sdtm"]) == (b["fdtm"], b["sdtm"])
        assert a["nll"] == pytest.approx(b["nll"], rel=1e-5, abs=1e-6)
    row = scan.rows[-1]
    assert row["layer"] > 0  # resumed past a layer whose router states the next one reads
    with magnitude_prune(model, row["component"], 0.9):
        nlls = [F.cross_entropy(model(torch.tensor([p + c])).logits[0, len(p) - 1:len(p) - 1 + len(c)].float(),
                                torch.tensor(c), reduction="none")
                for p, c in zip(ref["prompt_ids"], ref["continuation_ids"])]
    assert row["nll"] == pytest.approx(float(torch.cat(nlls).mean()), rel=1e-4)
