"""MADStack layers and models: parameter counts of the spec, causality, the selective scan and FFT conv against naive
loops, save/load, Auto classes, the compression autoencoders on three transformers families, bad input."""

from __future__ import annotations

import pytest
import torch

from hf_ext.mad.models import (
    CausalLMAutoEncoder,
    HyenaFilter,
    MADAutoEncoder,
    MADStackConfig,
    MADStackForCausalLM,
    fftconv,
    parse_layers,
    selective_scan,
)


def _cfg(layers, **kw):
    base = dict(hidden_size=32, vocab_size=16, num_attention_heads=4, max_position_embeddings=64)
    base.update(kw)
    return MADStackConfig(layers=layers, **base)


def test_parse_layers():
    assert parse_layers("mh-attention,swiglu mA;Sg") == ["mh-attention", "swiglu"] * 2
    assert parse_layers("(H Sg)x2") == ["hyena", "swiglu"] * 2
    assert parse_layers(["Mb", "mlp"]) == ["mamba", "mlp"]
    with pytest.raises(ValueError, match="unknown MAD layer 'moe'"):
        parse_layers("moe")
    with pytest.raises(ValueError, match="empty"):
        parse_layers(" ")


def test_parameter_counts_match_madlab_at_d128():
    """Spec §4.1: mh-attention 66,048, SwiGLU 135,168, Mamba (d_state 4, expand 2, dt_rank 8) 107,264."""
    model = MADStackForCausalLM(MADStackConfig(layers="mA Sg Mb", hidden_size=128, max_position_embeddings=128))
    counts = [sum(p.numel() for p in b.layer.parameters()) for b in model.model.layers]
    assert counts == [66048, 135168, 107264]


@pytest.mark.parametrize("pattern", ["mA Sg mA Sg", "H Sg mA Sg", "mH Sg Mb M", "SA Sg A Sg", "mSA Mb"])
def test_causal_and_trainable(pattern):
    torch.manual_seed(0)
    model = MADStackForCausalLM(_cfg(pattern))
    x = torch.randint(0, 16, (2, 24))
    out = model(x, shift_labels=x)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    x2 = x.clone()
    x2[:, 12:] = (x2[:, 12:] + 1) % 16
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits[:, :12], model(x2).logits[:, :12], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(model(x).logits[:, 12:], model(x2).logits[:, 12:])


def test_sliding_window_limits_the_receptive_field():
    model = MADStackForCausalLM(_cfg("SA", sliding_window=4))
    x = torch.randint(0, 16, (1, 20))
    x2 = x.clone()
    x2[:, 0] = (x2[:, 0] + 1) % 16
    with torch.no_grad():  # one layer, window 4: position >= 4 cannot see position 0
        torch.testing.assert_close(model(x).logits[:, 4:], model(x2).logits[:, 4:])


def test_selective_scan_matches_naive_recurrence():
    g = torch.Generator().manual_seed(0)
    b, E, L, N = 2, 3, 7, 4
    u, delta = torch.randn(b, E, L, generator=g), torch.rand(b, E, L, generator=g)
    A, B, C, D = -torch.rand(E, N, generator=g), torch.randn(b, N, L, generator=g), torch.randn(b, N, L, generator=g), \
        torch.randn(E, generator=g)
    y = selective_scan(u, delta, A, B, C, D)
    for bi in range(b):
        for e in range(E):
            h = [0.0] * N
            for t in range(L):
                out = 0.0
                for n in range(N):
                    h[n] = float(torch.exp(delta[bi, e, t] * A[e, n])) * h[n] + float(delta[bi, e, t] * B[bi, n, t] * u[bi, e, t])
                    out += h[n] * float(C[bi, n, t])
                assert abs(float(y[bi, e, t]) - (out + float(D[e] * u[bi, e, t]))) < 1e-4


def test_fftconv_matches_direct_causal_convolution():
    g = torch.Generator().manual_seed(1)
    u, k = torch.randn(2, 3, 9, generator=g), torch.randn(3, 9, generator=g)
    y = fftconv(u, k)
    direct = torch.zeros_like(u)
    for t in range(9):
        for s in range(t + 1):
            direct[..., t] += k[:, s] * u[..., t - s]
    torch.testing.assert_close(y, direct, atol=1e-5, rtol=1e-5)
    assert HyenaFilter(5, 16)(10).shape == (5, 10)


def test_save_load_roundtrip_and_auto_classes(tmp_path):
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    torch.manual_seed(0)
    model = MADStackForCausalLM(_cfg("mH Sg Mb Sg")).eval()
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).layers == ["mh-hyena", "swiglu", "mamba", "swiglu"]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is MADStackForCausalLM
    x = torch.randint(0, 16, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)
    assert type(AutoModel.from_config(model.config)).__name__ == "MADStackModel"


def test_mamba_dt_bias_init_survives_post_init():
    """mad-lab PR #4: a blanket bias re-init wiped Mamba's dt init; here the dt bias = softplus^-1(dt in [1e-3, 0.1])."""
    model = MADStackForCausalLM(_cfg("Mb"))
    dt = torch.nn.functional.softplus(model.model.layers[0].layer.dt_proj.bias)
    assert (dt > 0.9e-3).all() and (dt < 0.11).all()


def test_autoencoders(tmp_path):
    from hf_ext.testing import tiny_causal_lm

    x = torch.randint(0, 15, (2, 16))
    ae = MADAutoEncoder(_cfg("mA Sg"))
    out = ae(x, targets=x)
    assert out.logits.shape == (2, 16, 16) and out.loss is not None
    ae.save_pretrained(tmp_path / "ae")
    assert type(MADAutoEncoder.from_pretrained(tmp_path / "ae")) is MADAutoEncoder
    for family in ("llama", "gpt2", "gpt_neox"):
        wrapped = CausalLMAutoEncoder(tiny_causal_lm(family), vocab_size=16, max_length=32)
        o = wrapped(x, targets=x)
        o.loss.backward()
        assert o.logits.shape == (2, 16, 16)
        assert wrapped.lm.get_input_embeddings().weight.grad is not None  # gradient reaches the backbone


def test_bad_config():
    with pytest.raises(ValueError, match="divisible"):
        MADStackConfig(layers="mA", hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="norm"):
        MADStackConfig(norm="batchnorm")
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        MADStackForCausalLM(_cfg("H", max_position_embeddings=8))(torch.zeros(1, 9, dtype=torch.long))
