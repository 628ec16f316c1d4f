"""T-FREE ``generate`` on backbones whose state does not come back through ``inputs_embeds`` forwards, or that
ignore the attention mask (Mamba, RWKV: recurrent), with a left-padded batch: each row equals a naive greedy loop
of the wrapper's own full forwards on the unpadded row (issue 17, silently-wrong cases)."""

from __future__ import annotations

import pytest
import torch
import transformers

from hf_ext.tfree import TFreeConfig, TFreeForCausalLM, TFreeTokenizer
from hf_ext.tfree.cache_check import _CACHE_EXACT
from tests.conformance.shrink import shrink_config

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "home"]


def _wrapped(config_class: str, **overrides):
    tok = TFreeTokenizer(words=WORDS, hash_vocab_size=512, num_activations=4)
    text = shrink_config(getattr(transformers, config_class), **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TFreeForCausalLM(TFreeConfig(text_config=text, hash_vocab_size=512, num_activations=4)).eval()
    model.set_decode_dictionary(tok)
    return model, tok


@pytest.mark.parametrize("config_class", ["MambaConfig", "RwkvConfig", "LlamaConfig"])
@torch.no_grad()
def test_left_padded_generate_equals_a_naive_loop_per_row(config_class):
    model, tok = _wrapped(config_class)
    enc = tok(["the cat sat on", "a dog"], return_tensors="pt", padding=True, padding_side="left")
    assert (enc["attention_mask"] == 0).any()
    out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=5,
                         do_sample=False, eos_token_id=None, pad_token_id=0)
    width = enc["input_ids"].shape[1]
    assert torch.equal(out[:, :width], enc["input_ids"])
    for b in range(2):
        cur = enc["input_ids"][b][enc["attention_mask"][b].bool()][None]
        for _ in range(5):
            nxt = model(input_ids=cur, use_cache=False).logits[0, -1].argmax()
            cur = torch.cat([cur, nxt.view(1, 1)], dim=1)
        assert out[b, width:].tolist() == cur[0, -5:].tolist(), f"row {b}"


@torch.no_grad()
def test_backbone_with_a_cache_class_of_its_own_decodes_like_a_naive_loop():
    """xLSTM keeps a cache class of its own. Where generate() lets the backbone's class decide whether it may build
    a DynamicCache (transformers 5.25) the one-off check passes and decoding uses xLSTM's cache; where generate()
    hands it a DynamicCache it cannot use (the oldest supported release) the check fails and decoding runs without
    a cache. Either way the tokens equal a naive loop (width 128: at 64 the tiny xLSTM's cache and layers
    disagree on the state size)."""
    model, tok = _wrapped("xLSTMConfig", hidden_size=128)
    enc = tok(["the cat sat on", "a dog"], return_tensors="pt", padding=True, padding_side="left")
    out = model.generate(**enc, max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert model in _CACHE_EXACT  # the check ran on this model
    width = enc["input_ids"].shape[1]
    for b in range(2):
        cur = enc["input_ids"][b][enc["attention_mask"][b].bool()][None]
        for _ in range(4):
            cur = torch.cat([cur, model(input_ids=cur, use_cache=False).logits[0, -1].argmax().view(1, 1)], dim=1)
        assert out[b, width:].tolist() == cur[0, -4:].tolist(), f"row {b}"


@torch.no_grad()
def test_attention_backbone_keeps_its_cache_and_a_recurrent_one_decodes_without():
    llama, tok = _wrapped("LlamaConfig")
    mamba, _ = _wrapped("MambaConfig")
    enc = tok(["the cat sat"], return_tensors="pt")
    for model in (llama, mamba):
        model.generate(**enc, max_new_tokens=2, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert _CACHE_EXACT[llama] is True
    assert _CACHE_EXACT[mamba] is False


@torch.no_grad()
def test_padded_rows_one_at_a_time_refuse_beams_naming_the_backbone():
    # RWKV ignores the attention mask: its padded batches are generated one row at a time
    model, tok = _wrapped("RwkvConfig")
    enc = tok(["the cat sat on", "a dog"], return_tensors="pt", padding=True, padding_side="left")
    with pytest.raises(NotImplementedError, match="'rwkv'"):
        model.generate(**enc, max_new_tokens=2, num_beams=2, do_sample=False, eos_token_id=None, pad_token_id=0)
