"""The T-FREE backbone for a config ``AutoModel`` misses (issue 17): transformers registers ``EvollaConfig`` under two
names, so ``AutoModel.from_config`` refuses it although ``evolla`` lists a base model. The backbone is then the class
transformers lists for the model type; generation is checked against a naive argmax loop, as for every family."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers import AutoModel
from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

from hf_ext.tfree import TFreeConfig, TFreeForCausalLM, TFreeTokenizer
from tests.conformance.shrink import shrink_config

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "home"]


def _wrapped(text_config):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TFreeForCausalLM(TFreeConfig(text_config=text_config, hash_vocab_size=512, num_activations=4)).eval()
    tok = TFreeTokenizer(words=WORDS, hash_vocab_size=512, num_activations=4)
    model.set_decode_dictionary(tok)
    return model, tok


@pytest.mark.parametrize("config_cls", [transformers.EvollaConfig, transformers.LlamaConfig], ids=["evolla", "llama"])
@torch.no_grad()
def test_backbone_is_the_types_base_model_and_generation_equals_a_naive_loop(config_cls):
    text = shrink_config(config_cls)
    model, tok = _wrapped(text)
    assert type(model.model).__name__ == MODEL_MAPPING_NAMES[text.model_type]
    ids = tok(["the cat sat"], return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=0)
    seq = ids
    for _ in range(4):  # no cache: the full sequence each step
        seq = torch.cat([seq, model(input_ids=seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert out.tolist() == seq.tolist()


def test_automodel_itself_still_refuses_evolla():
    """The case the fallback exists for (if transformers fixes its mapping, AutoModel's own path is taken)."""
    config = shrink_config(transformers.EvollaConfig)
    if type(config) in AutoModel._model_mapping:
        pytest.skip("this transformers maps EvollaConfig for AutoModel itself")
    with pytest.raises(ValueError, match="Unrecognized configuration class"):
        AutoModel.from_config(config)

