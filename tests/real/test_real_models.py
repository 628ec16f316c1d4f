"""The real checkpoints load, answer sensibly, and exercise the core on a real sliding-window model."""

import pytest
import torch

from hf_ext.core.layers import forward_with_layer_inputs, run_layers
from hf_ext.reproduce.models import REAL_MODELS, real_model_info
from hf_ext.testing import real_model, real_tokenizer

PROMPTS = {"smollm2-135m-instruct": ("The capital of France is", "Paris"),
           "gemma3-270m": ("Anna lives in Rome. Ben lives in Oslo. Ben visited Paris.\nQuestion: Where does Ben live?\n"
                           "Answer:", "Oslo")}


def test_converted_from_the_pinned_file(real_name):
    model, tok = real_model(real_name), real_tokenizer(real_name)
    info = real_model_info(real_name)
    assert info["sha256"] == REAL_MODELS[real_name].sha256 and info["dtype"] == "float32"
    assert tok.is_fast and model.config.vocab_size >= len(tok) - 64
    assert not hasattr(model.config, "quantization_config")


def test_greedy_answer(real_name):
    model, tok = real_model(real_name), real_tokenizer(real_name)
    prompt, answer = PROMPTS[real_name]
    enc = tok(prompt, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert answer in tok.decode(out[0, enc["input_ids"].shape[1]:])


def test_run_layers_resumes_the_real_decoder(real_name):
    model, tok = real_model(real_name), real_tokenizer(real_name)
    ids = tok("Resuming the decoder from a middle layer must give the same logits.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out, layer_inputs = forward_with_layer_inputs(model, input_ids=ids)
        start = model.config.num_hidden_layers // 2 + 1  # Gemma: a sliding and a global layer on either side
        resumed = run_layers(model, layer_inputs[start], start, return_logits=True)
    assert torch.allclose(resumed, out.logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("length", [40, 530])
def test_atman_packing_on_gemma_sliding_window(length):
    """Packed suffixes (short prompt) and the unpacked path beyond Gemma's 512-token window equal plain forwards."""
    from hf_ext.atman import AtManExplainer, Unit

    model, tok = real_model("gemma3-270m"), real_tokenizer("gemma3-270m")
    g = torch.Generator().manual_seed(length)
    prompt = torch.randint(300, 20000, (length,), generator=g).tolist()
    target = [236761, 1018]
    units = [Unit("a", [1, 2]), Unit("b", [length // 2]), Unit("c", [length - 3, length - 2])]
    fast = AtManExplainer(model, tok, max_batch_size=4, progress=False).explain_ids(prompt, target, units=units)
    plain = AtManExplainer(model, tok, prefix_reuse=False, pack=False, progress=False).explain_ids(prompt, target,
                                                                                                     units=units)
    assert torch.allclose(fast.delta, plain.delta, atol=2e-4)
    assert fast.delta.abs().max() > 0
