"""Every u-μP op of hf_ext.umup.functional against graphcore's unit_scaling (the oracle) and the spec's table."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hf_ext.umup import functional as UF

U = pytest.importorskip("unit_scaling.functional")
uu = pytest.importorskip("unit_scaling")


def _grads(fn, inputs, grad_out, seed=0):
    """Output and input gradients of ``fn(*inputs)`` for a fixed output gradient."""
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*leaves)
    out.backward(grad_out)
    return out.detach(), [t.grad if t.requires_grad else None for t in leaves]


def _assert_same(ours, ref, inputs, grad_shape=None, atol=1e-5, rtol=1e-4):
    torch.manual_seed(1)
    out_ref = ref(*inputs)
    g = torch.randn(out_ref.shape if grad_shape is None else grad_shape)
    o1, g1 = _grads(ours, inputs, g)
    o2, g2 = _grads(ref, inputs, g)
    torch.testing.assert_close(o1, o2, atol=atol, rtol=rtol)
    for a, b in zip(g1, g2):
        if a is None and b is None:
            continue
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
    return o1, g1


@pytest.mark.parametrize("constraint", ["to_output_scale", None, "gmean"])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_matches_unit_scaling(constraint, bias):
    torch.manual_seed(0)
    x, w = torch.randn(3, 5, 24), torch.randn(40, 24)
    inputs = [x, w] + ([torch.randn(40)] if bias else [])

    def ours(x, w, b=None):
        return UF.linear(x, w, b, constraint=constraint)

    def ref(x, w, b=None):
        return U.linear(x, w, b, constraint=constraint)

    _assert_same(ours, ref, inputs)


def test_linear_readout_and_embedding_match_unit_scaling():
    torch.manual_seed(0)
    _assert_same(UF.linear_readout, lambda x, w: U.linear_readout(x, w, None), [torch.randn(7, 32), torch.randn(50, 32)])
    ids = torch.randint(0, 30, (4, 9))
    w = torch.randn(30, 16)
    g = torch.randn(4, 9, 16)
    w1, w2 = w.clone().requires_grad_(), w.clone().requires_grad_()
    o1, o2 = UF.embedding(ids, w1), U.embedding(ids, w2)
    o1.backward(g)
    o2.backward(g)
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(w1.grad, w2.grad)


@pytest.mark.parametrize("is_causal", [True, False])
@pytest.mark.parametrize("mult", [1.0, 3.0])
def test_attention_matches_unit_scaling(is_causal, mult):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 12, 8) for _ in range(3))
    _assert_same(lambda q, k, v: UF.scaled_dot_product_attention(q, k, v, is_causal=is_causal, mult=mult),
                 lambda q, k, v: U.scaled_dot_product_attention(q, k, v, is_causal=is_causal, mult=mult), [q, k, v])


def test_attention_gqa_equals_repeated_kv_reference():
    """GQA (2 KV heads shared by 4 query heads) equals unit_scaling's SDPA on explicitly repeated k, v."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 10, 8), torch.randn(2, 2, 10, 8), torch.randn(2, 2, 10, 8)

    def ref(q, k, v):
        return U.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True)

    _assert_same(lambda q, k, v: UF.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), ref, [q, k, v])


@pytest.mark.parametrize("mult", [1.0, 0.5, 2.0])
def test_elementwise_ops_match_unit_scaling(mult):
    torch.manual_seed(0)
    x, g = torch.randn(6, 20), torch.randn(6, 20)
    _assert_same(lambda a, b: UF.silu_glu(a, b, mult), lambda a, b: U.silu_glu(a, b, mult), [x, g])
    _assert_same(lambda a: UF.silu(a, mult), lambda a: U.silu(a, mult), [x])
    _assert_same(lambda a: UF.gelu(a, mult), lambda a: U.gelu(a, mult), [x])
    _assert_same(lambda a: UF.softmax(a, -1, mult=mult), lambda a: U.softmax(a, -1, mult=mult), [x])


def test_matmul_add_dropout_rmsnorm_match_unit_scaling():
    torch.manual_seed(0)
    _assert_same(UF.matmul, U.matmul, [torch.randn(5, 16, 24), torch.randn(5, 24, 7)])
    _assert_same(UF.add, U.add, [torch.randn(4, 8), torch.randn(8)])
    _assert_same(lambda x: UF.dropout(x, 0.0), lambda x: U.dropout(x, 0.0), [torch.randn(4, 8)])
    _assert_same(lambda x: UF.rms_norm(x, (8,), eps=1e-5), lambda x: U.rms_norm(x, (8,), eps=1e-5), [torch.randn(4, 8) * 3])
    _assert_same(lambda x, w: UF.rms_norm(x, (8,), w), lambda x, w: U.rms_norm(x, (8,), w), [torch.randn(4, 8), torch.randn(8)])


@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_residual_split_add_match_unit_scaling(tau):
    torch.manual_seed(0)

    def block(split, add_):
        def f(x, w):
            r, s = split(x, tau)
            return add_(torch.tanh(r @ w), s, tau)
        return f

    _assert_same(block(UF.residual_split, UF.residual_add), block(U.residual_split, U.residual_add),
                 [torch.randn(6, 8), torch.randn(8, 8)])
    _assert_same(lambda x: UF.residual_apply(torch.sin, x, tau), lambda x: U.residual_apply(torch.sin, x, tau),
                 [torch.randn(6, 8)])


@pytest.mark.parametrize("tau", [0.4, 1.7])
def test_fused_residual_split_norm_and_merge_equal_the_reference_graph(tau):
    """The model's fused split+RMSNorm / merge equal U.residual_split → U.rms_norm → … → U.residual_add."""
    torch.manual_seed(0)
    branch_w, skip_w = UF.residual_scales(tau)

    def ours(x, w):
        y, s = UF.residual_split_norm(x, tau, eps=1e-5)
        return UF.residual_merge(UF.scale_fwd(torch.tanh(y @ w), branch_w), s, skip_w)

    def ref(x, w):
        r, s = U.residual_split(x, tau)
        r = U.rms_norm(r, (x.shape[-1],), eps=1e-5)
        return U.residual_add(torch.tanh(r @ w), s, tau)

    _assert_same(ours, ref, [torch.randn(6, 16) * 2, torch.randn(16, 16)])


@pytest.mark.parametrize("mult", [1.0, 0.7])
def test_cross_entropy_matches_unit_scaling(mult):
    torch.manual_seed(0)
    logits, target = torch.randn(32, 50), torch.randint(0, 50, (32,))
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    la, lb = UF.cross_entropy(a, target, mult=mult), U.cross_entropy(b, target, mult=mult)
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb)
    torch.testing.assert_close(la, F.cross_entropy(mult * logits, target))
    torch.testing.assert_close(a.grad, b.grad)


def test_scaled_linear_independent_scales_formula():
    torch.manual_seed(0)
    x, w, b, g = torch.randn(5, 8, requires_grad=True), torch.randn(3, 8, requires_grad=True), torch.randn(3, requires_grad=True), torch.randn(5, 3)
    y = UF.scaled_linear(x, w, b, 0.5, 2.0, 3.0)
    y.backward(g)
    torch.testing.assert_close(y, 0.5 * (x @ w.T + b))
    torch.testing.assert_close(x.grad, 2.0 * g @ w)
    torch.testing.assert_close(w.grad, 3.0 * g.T @ x)
    torch.testing.assert_close(b.grad, 3.0 * g.sum(0))


# --------------------------------------------------------------------------------------------- spec oracle table


def test_oracle_linear_and_readout_scales():
    torch.manual_seed(0)
    x, w = torch.randn(256, 1024, requires_grad=True), torch.randn(4096, 1024, requires_grad=True)
    y = UF.linear(x, w)
    y.backward(torch.randn_like(y))
    assert float(y.std()) == pytest.approx(1.0, abs=0.1)
    assert float(w.grad.std()) == pytest.approx(1.0, abs=0.1)
    assert float(x.grad.std()) == pytest.approx(2.0, abs=0.1)  # sqrt(fan_out/fan_in): grad constrained to fwd scale
    x.grad = w.grad = None
    y = UF.linear_readout(x, w)
    y.backward(torch.randn_like(y))
    assert float(y.std()) == pytest.approx(1 / math.sqrt(1024), abs=0.005)
    assert float(w.grad.std()) == pytest.approx(1.0, abs=0.1)


def test_oracle_embedding_attention_glu_ce():
    torch.manual_seed(0)
    w = torch.randn(1000, 256, requires_grad=True)
    out = UF.embedding(torch.randint(0, 1000, (64, 128)), w)
    out.backward(torch.randn_like(out))
    assert float(out.std()) == pytest.approx(1.0, abs=0.1) and float(w.grad.std()) == pytest.approx(1.0, abs=0.1)

    q, k, v = (torch.randn(8, 4, 256, 64, requires_grad=True) for _ in range(3))
    out = UF.scaled_dot_product_attention(q, k, v, is_causal=True)
    out.backward(torch.randn_like(out))
    assert float(out.std()) == pytest.approx(1.06, abs=0.1)
    assert float(v.grad.std()) == pytest.approx(1.05, abs=0.1)
    assert float(q.grad.std()) == pytest.approx(0.11, abs=0.05)

    x, g = torch.randn(4096, 512, requires_grad=True), torch.randn(4096, 512, requires_grad=True)
    out = UF.silu_glu(x, g)
    out.backward(torch.randn_like(out))
    assert float(out.std()) == pytest.approx(1.0, abs=0.1) and float(x.grad.std()) == pytest.approx(1.0, abs=0.1)

    logits = torch.randn(4096, 256, requires_grad=True)
    target = torch.randint(0, 256, (4096,))
    loss = UF.cross_entropy(logits, target)
    loss.backward()
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits, target)), rel=1e-6)
    assert float(logits.grad.std()) == pytest.approx(1.0, abs=0.1)


def test_residual_taus_blocks_match_unit_scaling_and_spec():
    L = 4
    rule = uu.transformer_residual_scaling_rule()
    assert UF.residual_taus(L) == pytest.approx([rule(i, 2 * L) for i in range(2 * L)])
    assert UF.residual_taus(L) == pytest.approx([0.5, 0.4472, 0.4082, 0.378, 0.3536, 0.3333, 0.3162, 0.3015], abs=1e-4)
    assert UF.residual_taus(L, alpha_res_attn_ratio=0.25) == pytest.approx(
        [0.1715, 0.6761, 0.14, 0.5547, 0.1213, 0.4815, 0.1085, 0.4313], abs=1e-4)
    rule = uu.transformer_residual_scaling_rule(residual_mult=1.7, residual_attn_ratio=0.6)
    assert UF.residual_taus(3, 1.7, 0.6) == pytest.approx([rule(i, 6) for i in range(6)])


@pytest.mark.parametrize("alpha_res, ratio", [(1.0, 1.0), (2.0, 0.5)])
def test_residual_taus_branches_match_aleph_alpha_formula(alpha_res, ratio):
    """'branches' = Aleph-Alpha/scaling's rule with depth 2L: r_i = α_i/sqrt(2L), τ_i² = r_i²/(1 + Σ_{j<i} r_j²)."""
    L = 3
    a_mlp = alpha_res * math.sqrt(2 / (1 + ratio**2))
    alphas = [ratio * a_mlp if i % 2 == 0 else a_mlp for i in range(2 * L)]
    r = [a / math.sqrt(2 * L) for a in alphas]
    expected = [math.sqrt(r[i] ** 2 / (1 + sum(x * x for x in r[:i]))) for i in range(2 * L)]
    assert UF.residual_taus(L, alpha_res, ratio, "branches") == pytest.approx(expected)
    # the residual stream stays unit-scaled: the squared contributions of embedding and branches sum to 1
    for conv in ("blocks", "branches"):
        taus = UF.residual_taus(L, alpha_res, ratio, conv)
        contributions = [1.0]
        for t in taus:
            b, s = UF.residual_scales(t)
            contributions = [c * s * s for c in contributions] + [b * b]
        assert sum(contributions) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="depth_convention"):
        UF.residual_taus(L, depth_convention="layers")


def test_attention_scale_rule_value():
    # independent formula: s = 1/exp(a·ln 1 + (1−a)·ln sqrt(ln S/S)), a = 1/(1 + 4 d/mult²)
    d, S = 64, 256
    a = 1 / (1 + 4 * d)
    expected = 1 / math.exp((1 - a) * math.log(math.sqrt(math.log(S) / S)))
    assert UF.attention_scale(d, S) == pytest.approx(expected)
    assert UF.attention_scale(d, 1) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="seq_len"):
        UF.attention_scale(d, 0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="constraint"):
        UF.linear(torch.randn(2, 4), torch.randn(3, 4), constraint="nope")
    with pytest.raises(ValueError, match=r"\[N, V\]"):
        UF.cross_entropy(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        UF.cross_entropy(torch.randn(2, 4), torch.zeros(2, dtype=torch.long), reduction="none")
    with pytest.raises(ValueError, match="normalized_shape"):
        UF.rms_norm(torch.randn(2, 4), (2, 4))
