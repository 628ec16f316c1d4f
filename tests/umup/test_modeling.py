"""UMupConfig / UMupLlamaForCausalLM: the whole model against a unit_scaling reference graph, init, generate, I/O."""

from __future__ import annotations

import math

import pytest
import torch

from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM, convert_llama_to_umup
from hf_ext.umup import functional as UF

U = pytest.importorskip("unit_scaling.functional")
uu = pytest.importorskip("unit_scaling")

TINY = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2)


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return UMupLlamaForCausalLM(UMupConfig(**{**TINY, "umup_attn_seq_len": 12, **kw}))


def _rope_tables(cfg, seq):
    """cos/sin from transformers' own Llama rotary embedding (an independent RoPE implementation)."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    lcfg = LlamaConfig(hidden_size=cfg.hidden_size, num_attention_heads=cfg.num_attention_heads, head_dim=cfg.head_dim,
                       rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta})
    pos = torch.arange(seq)[None]
    return LlamaRotaryEmbedding(lcfg)(torch.zeros(1, seq, 1), pos)


def reference_loss_and_logits(model, ids, residual_taus):
    """The same network written with unit_scaling.functional ops (the oracle), reading the model's weights."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    cfg = model.config
    b, s = ids.shape
    nh, nkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    cos, sin = _rope_tables(cfg, s)
    x = U.embedding(ids, model.model.embed_tokens.weight)
    for i, layer in enumerate(model.model.layers):
        at, ml = layer.self_attn, layer.mlp
        r, skip = U.residual_split(x, residual_taus[2 * i])
        r = U.rms_norm(r, (cfg.hidden_size,), eps=cfg.rms_norm_eps)
        q = U.linear(r, at.q_proj.weight, None).view(b, s, nh, d).transpose(1, 2)
        k = U.linear(r, at.k_proj.weight, None).view(b, s, nkv, d).transpose(1, 2)
        v = U.linear(r, at.v_proj.weight, None).view(b, s, nkv, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1)
        a = U.scaled_dot_product_attention(q, k, v, is_causal=True, mult=cfg.umup_alpha_attn_softmax)
        a = a.transpose(1, 2).reshape(b, s, nh * d)
        x = U.residual_add(U.linear(a, at.o_proj.weight, None), skip, residual_taus[2 * i])
        r, skip = U.residual_split(x, residual_taus[2 * i + 1])
        r = U.rms_norm(r, (cfg.hidden_size,), eps=cfg.rms_norm_eps)
        z = U.silu_glu(U.linear(r, ml.up_proj.weight, None, constraint=None),
                       U.linear(r, ml.gate_proj.weight, None, constraint=None), mult=cfg.umup_alpha_ffn_act)
        x = U.residual_add(U.linear(z, ml.down_proj.weight, None, constraint=None), skip, residual_taus[2 * i + 1])
    x = U.rms_norm(x, (cfg.hidden_size,), eps=cfg.rms_norm_eps)
    raw = U.linear_readout(x, model.lm_head.weight, None)
    loss = U.cross_entropy(raw[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), mult=cfg.umup_alpha_loss_softmax)
    return loss, raw * cfg.umup_alpha_loss_softmax


@pytest.mark.parametrize("alphas", [
    {},
    {"umup_alpha_ffn_act": 1.7, "umup_alpha_attn_softmax": 0.6, "umup_alpha_res": 1.3,
     "umup_alpha_res_attn_ratio": 0.5, "umup_alpha_loss_softmax": 2.0},
])
def test_model_forward_and_every_weight_gradient_match_unit_scaling(alphas):
    model = tiny(**alphas)
    cfg = model.config
    ids = torch.randint(0, cfg.vocab_size, (3, 12))
    out = model(ids, labels=ids)
    out.loss.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    rule = uu.transformer_residual_scaling_rule(cfg.umup_alpha_res, cfg.umup_alpha_res_attn_ratio)
    taus = [rule(i, 2 * cfg.num_hidden_layers) for i in range(2 * cfg.num_hidden_layers)]
    ref_loss, ref_logits = reference_loss_and_logits(model, ids, taus)
    ref_loss.backward()
    torch.testing.assert_close(out.logits, ref_logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.loss, ref_loss, atol=1e-5, rtol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_branches_convention_uses_depth_2L_taus():
    model = tiny(umup_depth_convention="branches")
    L = model.config.num_hidden_layers
    got = [t for layer in model.model.layers for t in (layer.self_attn.tau, layer.mlp.tau)]
    expected = [1 / math.sqrt(2 * L + i) for i in range(2 * L)]  # α = 1: τ_i = 1/sqrt(2L + i)
    assert got == pytest.approx(expected)
    blocks = [t for layer in tiny().model.layers for t in (layer.self_attn.tau, layer.mlp.tau)]
    assert blocks == pytest.approx([1 / math.sqrt(L + i) for i in range(2 * L)])


@pytest.mark.parametrize("width", [64, 256])
def test_unit_scaled_at_init(width):
    """Weights N(0,1); residual stream, normalised hidden and weight gradients O(1) at widths 64 and 256."""
    torch.manual_seed(0)
    cfg = UMupConfig(vocab_size=256, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                     num_attention_heads=width // 32, umup_attn_seq_len=64)
    model = UMupLlamaForCausalLM(cfg)
    for name, p in model.named_parameters():
        assert float(p.detach().std()) == pytest.approx(1.0, abs=0.1), name
    acts = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: acts.__setitem__(k, o.detach()))
             for k, layer in enumerate(model.model.layers)]
    ids = torch.randint(0, 256, (8, 64))
    out = model(ids, labels=ids, output_hidden_states=True)
    out.loss.backward()
    for h in hooks:
        h.remove()
    assert len(out.hidden_states) == 3 and torch.equal(out.hidden_states[2], acts[1])
    for k, a in acts.items():
        assert 0.8 < float(a.pow(2).mean().sqrt()) < 1.5, f"layer {k} output RMS"
    assert float(out.loss.detach()) == pytest.approx(math.log(256), abs=0.15)  # readout 1/fan_in: near-uniform
    for name, p in model.named_parameters():
        rms = float(p.grad.pow(2).mean().sqrt())
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            # the spec's causal-attention oracle: q/k gradients ≈ 0.11 (softmax saturation at 1/d temperature)
            assert rms == pytest.approx(0.11, abs=0.06), f"{name} grad RMS {rms}"
        else:
            assert 0.6 < rms < 1.8, f"{name} grad RMS {rms}"


def test_init_weights_keeps_unit_init_and_from_config():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(UMupConfig(**TINY))
    assert isinstance(model, UMupLlamaForCausalLM)
    model.model.layers[0].mlp.up_proj.weight.data.fill_(0.0)
    model.model.layers[0].mlp.up_proj.weight._is_hf_initialized = False
    model._init_weights(model.model.layers[0].mlp.up_proj)
    assert float(model.model.layers[0].mlp.up_proj.weight.std()) == pytest.approx(1.0, abs=0.15)
    assert float(model.lm_head.weight.std()) == pytest.approx(1.0, abs=0.1)


def test_generate_equals_manual_argmax_loop_with_cache_and_alpha_loss():
    model = tiny(umup_alpha_loss_softmax=3.0).eval()
    prompt = torch.tensor([[5, 17, 3, 44], [9, 9, 60, 2]])
    gen = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    ids = prompt
    with torch.no_grad():
        for _ in range(8):
            raw = model.lm_head(model.model(ids, use_cache=False).last_hidden_state)  # readout without α_loss
            logits = raw * 3.0
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(gen, ids)
    with torch.no_grad():  # α_loss is in the returned logits (a temperature: changes sampling, not the argmax)
        full = model(ids).logits
        raw = model.lm_head(model.model(ids, use_cache=False).last_hidden_state)
    torch.testing.assert_close(full, 3.0 * raw)


def test_left_padding_matches_unpadded_rows():
    model = tiny().eval()
    a = torch.tensor([[7, 8, 9, 10, 11]])
    padded = torch.tensor([[0, 0, 7, 8, 9, 10, 11]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1]])
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        ref = model(a).logits[:, -1]
        got = model(padded, attention_mask=mask, position_ids=pos).logits[:, -1]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    g1 = model.generate(a, max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=None)
    g2 = model.generate(padded, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0,
                        eos_token_id=None)
    assert torch.equal(g1[0, -5:], g2[0, -5:])


def test_save_load_roundtrip_and_dtype(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    model = tiny(umup_alpha_res=1.5, umup_depth_convention="branches").eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    cfg = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(cfg, UMupConfig) and cfg.umup_alpha_res == 1.5 and cfg.umup_depth_convention == "branches"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), loaded.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    bf16 = AutoModelForCausalLM.from_pretrained(tmp_path, torch_dtype=torch.bfloat16, device_map="cpu")
    assert bf16.lm_head.weight.dtype == torch.bfloat16
    with torch.no_grad():
        logits = bf16(ids).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    # roles survive loading (they live on modules): the optimizer groups are still built
    from hf_ext.umup import umup_param_groups

    assert {g["name"] for g in umup_param_groups(loaded, 1.0)} >= {"embedding", "readout"}


@pytest.mark.parametrize("kwargs, match", [
    ({"umup_depth_convention": "layers"}, "umup_depth_convention"),
    ({"umup_alpha_res": 0.0}, "umup_alpha_res"),
    ({"umup_alpha_attn_softmax": -1.0}, "umup_alpha_attn_softmax"),
    ({"umup_alpha_loss_softmax": float("nan")}, "umup_alpha_loss_softmax"),
    ({"hidden_size": 30, "num_attention_heads": 4}, "not divisible"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ({"tie_word_embeddings": True}, "untied"),
    ({"hidden_act": "gelu"}, "silu"),
    ({"umup_fp8": "e4m3"}, "umup_fp8"),
    ({"umup_attn_seq_len": 0}, "umup_attn_seq_len"),
])
def test_config_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UMupConfig(**{**TINY, **kwargs})


def test_convert_llama_to_umup():
    from transformers import LlamaConfig

    lcfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=8,
                       num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
                       rope_parameters={"rope_type": "default", "rope_theta": 5e5}, tie_word_embeddings=True)
    cfg = convert_llama_to_umup(lcfg, umup_alpha_ffn_act=2.0)
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.num_attention_heads,
            cfg.num_key_value_heads, cfg.head_dim, cfg.max_position_embeddings) == (100, 64, 96, 3, 8, 2, 8, 256)
    assert cfg.rope_theta == 5e5 and cfg.rms_norm_eps == 1e-5 and not cfg.tie_word_embeddings
    assert cfg.umup_alpha_ffn_act == 2.0
    model = UMupLlamaForCausalLM(cfg)
    assert model(torch.randint(0, 100, (1, 5))).logits.shape == (1, 5, 100)
    with pytest.raises(ValueError, match="rope"):
        convert_llama_to_umup(LlamaConfig(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}))


def test_fp8_simulation_in_the_model_only_touches_non_critical_linears():
    model = tiny(umup_fp8="simulate")
    at, ml = model.model.layers[0].self_attn, model.model.layers[0].mlp
    assert [m.fp8 for m in (at.q_proj, at.k_proj, at.v_proj, ml.gate_proj, ml.up_proj)] == [UF.FP8_SIMULATE] * 5
    assert [m.fp8 for m in (at.o_proj, ml.down_proj, model.lm_head)] == [UF.FP8_OFF] * 3
    ref = tiny()
    ids = torch.randint(0, 97, (2, 12))
    a, b = model(ids, labels=ids), ref(ids, labels=ids)
    assert float(a.loss) == pytest.approx(float(b.loss), rel=0.02)
    assert not torch.equal(a.logits, b.logits)  # the FP8 rounding is really applied
