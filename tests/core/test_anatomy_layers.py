"""Model anatomy and run_layers on five families, against hand-written expectations and the full forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hf_ext.core.anatomy import get_anatomy
from hf_ext.core.inputs import position_ids_from_mask
from hf_ext.core.layers import run_layers
from hf_ext.testing import tiny_causal_lm

# Independent reference: where each family keeps its parts, written down from transformers' modeling files.
EXPECTED = {
    "llama": ("model.layers", "LlamaAttention", "LlamaMLP", "LlamaRMSNorm", "lm_head", False, True),
    "qwen2": ("model.layers", "Qwen2Attention", "Qwen2MLP", "Qwen2RMSNorm", "lm_head", False, True),
    "gpt2": ("transformer.h", "GPT2Attention", "GPT2MLP", "LayerNorm", "lm_head", True, False),
    "gpt_neox": ("gpt_neox.layers", "GPTNeoXAttention", "GPTNeoXMLP", "LayerNorm", "lm_head", False, True),
    "opt": ("model.decoder.layers", "OPTAttention", None, "LayerNorm", "lm_head", True, False),
}


def test_anatomy_matches_module_tree(family, causal_lm):
    path, attn_cls, mlp_cls, norm_cls, _head_name, absolute_pos, rotary = EXPECTED[family]
    anatomy = get_anatomy(causal_lm)
    assert anatomy.family == family
    assert anatomy.layers_path == path
    assert anatomy.layers is causal_lm.get_submodule(path)
    assert anatomy.num_layers == causal_lm.config.num_hidden_layers
    assert [type(a).__name__ for a in anatomy.attentions] == [attn_cls] * anatomy.num_layers
    if mlp_cls is None:
        assert anatomy.mlps == [None] * anatomy.num_layers
        assert all(o is causal_lm.get_submodule(f"{path}.{i}.fc2") for i, o in enumerate(anatomy.mlp_outputs))
    else:
        assert [type(m).__name__ for m in anatomy.mlps] == [mlp_cls] * anatomy.num_layers
        assert anatomy.mlp_outputs == anatomy.mlps
    assert type(anatomy.final_norm).__name__ == norm_cls
    # The head's attribute name differs across transformers releases (GPT-NeoX: embed_out, later lm_head).
    assert anatomy.lm_head is causal_lm.get_output_embeddings()
    assert anatomy.lm_head.out_features == causal_lm.config.vocab_size
    assert anatomy.input_embeddings is causal_lm.get_input_embeddings()
    assert (anatomy.position_embeddings is not None) == absolute_pos
    assert (anatomy.rotary_emb is not None) == rotary
    for i, attn in enumerate(anatomy.attentions):
        assert anatomy.layer_of(attn) == i


def test_resolve_layers_and_errors(causal_lm):
    anatomy = get_anatomy(causal_lm)
    assert anatomy.resolve_layers(None) == [0, 1]
    assert anatomy.resolve_layers([-1, 0, 0]) == [0, 1]
    with pytest.raises(ValueError, match="out of range"):
        anatomy.resolve_layers([2])


def test_unknown_module_tree_gets_clear_error():
    class Cfg:
        num_hidden_layers = 3
        model_type = "mystery"

    class Mystery(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = Cfg()
            self.blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(2)])

    with pytest.raises(ValueError, match="could not find a ModuleList of 3 decoder layers in Mystery"):
        get_anatomy(Mystery())
    with pytest.raises(TypeError, match="expects a torch.nn.Module"):
        get_anatomy("llama")

    class NoAttention(Mystery):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(2, 2)) for _ in range(3)])

    # layers without attention are allowed (state-space stacks); what is missing next is named
    with pytest.raises(ValueError, match="NoAttention has no input embeddings"):
        get_anatomy(NoAttention())


def test_layers_without_attention_or_mlp_are_none_and_named():
    """A hybrid stack: layer 0's attention and MLP replaced by a state-space-like block get ``None``."""

    model = tiny_causal_lm("llama")
    layer = model.model.layers[0]
    real_attn, real_mlp = layer.self_attn, layer.mlp
    try:
        layer.self_attn, layer.mlp = nn.Identity(), None  # an Identity is no attention; no MLP child at all
        del layer.mlp
        anatomy = get_anatomy(model)
        assert anatomy.attentions[0] is None and anatomy.attentions[1] is model.model.layers[1].self_attn
        assert anatomy.mlp_outputs[0] is None and anatomy.attention_layers() == [1]
        with pytest.raises(ValueError, match=r"decoder layers \[0\] of 'llama' \(LlamaForCausalLM\) have no attention"):
            anatomy.attention_layers([0])
    finally:
        layer.self_attn, layer.mlp = real_attn, real_mlp


def _padded_batch(tokenizer):
    enc = tokenizer(["hello there world", "hi you"], padding=True, return_tensors="pt")
    return enc.input_ids, enc.attention_mask, position_ids_from_mask(enc.attention_mask)


@torch.no_grad()
def test_run_layers_resumes_full_forward(causal_lm, tokenizer):
    ids, mask, pos = _padded_batch(tokenizer)
    full = causal_lm(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
    n = get_anatomy(causal_lm).num_layers
    real = mask.bool()
    for layer in range(n):  # hidden_states[n] already carries the final norm in transformers
        logits = run_layers(causal_lm, full.hidden_states[layer], layer, mask, pos, return_logits=True)
        torch.testing.assert_close(logits[real], full.logits[real], atol=1e-5, rtol=1e-5)
        if layer + 1 < n:
            partial = run_layers(causal_lm, full.hidden_states[layer], layer, mask, pos, end_layer=layer + 1)
            torch.testing.assert_close(partial[real], full.hidden_states[layer + 1][real], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_run_layers_defaults_positions_from_mask(causal_lm, tokenizer):
    ids, mask, pos = _padded_batch(tokenizer)
    full = causal_lm(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
    logits = run_layers(causal_lm, full.hidden_states[1], 1, mask, return_logits=True)
    torch.testing.assert_close(logits[mask.bool()], full.logits[mask.bool()], atol=1e-5, rtol=1e-5)


def test_run_layers_bad_input(causal_lm):
    h = torch.zeros(1, 3, causal_lm.config.get_text_config().hidden_size)
    with pytest.raises(ValueError, match=r"start_layer must be an int in \[0, \d+\], got 5"):
        run_layers(causal_lm, h, 5)
    with pytest.raises(ValueError, match="end_layer"):
        run_layers(causal_lm, h, 1, end_layer=0)
    with pytest.raises(ValueError, match="hidden_states must be"):
        run_layers(causal_lm, h[0], 0)
    with pytest.raises(ValueError, match="attention_mask shape"):
        run_layers(causal_lm, h, 0, torch.ones(1, 4))
    with pytest.raises(ValueError, match="return_logits"):
        run_layers(causal_lm, h, 0, end_layer=1, return_logits=True)


def test_run_layers_on_gemma3_local_and_global_rotary():
    """Gemma3 keeps one rotary table per layer type (local base 10k, global 1M): resuming must pick the right one."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention"] * 2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg).eval()
    ids = torch.randint(4, 128, (2, 12))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        for start in range(4):
            got = run_layers(model, out.hidden_states[start], start, return_logits=True)
            assert torch.allclose(got, out.logits, atol=1e-5), start
