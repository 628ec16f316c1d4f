"""The layer stack is found where ``get_decoder()`` returns a module without one (issue 17).

transformers' default ``get_decoder()`` returns any attribute named ``decoder``: ModernBERT-decoder's is its output
``Linear``. Reference: the model's own module tree and full forward (``run_layers`` logits from every layer).
"""

from __future__ import annotations

import re

import pytest
import torch
import transformers

from hf_ext.core.anatomy import get_anatomy
from hf_ext.core.layers import run_layers
from tests.conformance.catalog import build
from tests.conformance.shrink import shrink_config


@torch.no_grad()
def test_modernbert_decoder_layers_are_the_base_models():
    config = shrink_config(transformers.ModernBertDecoderConfig)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.ModernBertDecoderForCausalLM(config).eval()
    assert isinstance(model.get_decoder(), torch.nn.Linear)  # the premise: transformers' lookup finds the head
    anatomy = get_anatomy(model)
    assert anatomy.layers is model.model.layers and anatomy.decoder is model.model
    assert anatomy.lm_head is model.get_output_embeddings()
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    out = model(input_ids=ids, output_hidden_states=True)
    for layer in range(anatomy.num_layers + 1):
        logits = run_layers(model, out.hidden_states[layer], layer, return_logits=True, input_ids=ids)
        torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=1e-4)


def _build(model_type: str):
    try:
        return build(model_type)  # the conformance shrinker with its per-family overrides
    except ValueError as exc:  # transformers 5.17's DiffusionGemma has no AutoModel mapping for its text config
        pytest.skip(f"{model_type} does not build on transformers {transformers.__version__}: {str(exc)[:80]}")


def test_a_stack_that_does_not_read_the_input_is_refused():
    # DiffusionGemma embeds the prompt in its encoder and refines a sampled canvas with its decoder stack: its
    # logits are not one per input token, which the premise below shows with the model's own forward
    model = _build("diffusion_gemma")
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape[1] != ids.shape[1]
    with pytest.raises(ValueError, match=r"'diffusion_gemma.*DiffusionGemmaForBlockDiffusion.*does not read the input"):
        get_anatomy(model)


@pytest.mark.parametrize(("model_type", "class_name", "lists"), [
    ("hrm_text", "HrmTextForCausalLM", "L_module.layers (2), H_module.layers (2)"),  # stacks run in cycles
    ("longcat_flash", "LongcatFlashForCausalLM", "layers.0.self_attn (2)"),  # two attentions per layer
])
def test_layer_stacks_hf_ext_cannot_address_are_refused_by_name(model_type, class_name, lists):
    with pytest.raises(ValueError, match=rf"'{model_type}' \({class_name}\).*{re.escape(lists)}"):
        get_anatomy(_build(model_type))
