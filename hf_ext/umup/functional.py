"""Unit-scaled ops of u-μP (Blake et al. 2025, arXiv 2407.17465), re-implemented without ``unit_scaling``.

Two layers:

1. **Reference-compatible ops** with the signatures and semantics of graphcore's ``unit_scaling.functional``
   (v0.3.5): :func:`linear`, :func:`linear_readout`, :func:`embedding`, :func:`matmul`, :func:`add`,
   :func:`scaled_dot_product_attention`, :func:`softmax`, :func:`gelu`, :func:`silu`, :func:`silu_glu`,
   :func:`dropout`, :func:`rms_norm`, :func:`residual_split` / :func:`residual_add` / :func:`residual_apply`,
   :func:`cross_entropy`, plus the primitives :func:`scale_fwd` / :func:`scale_bwd` and the rules
   :func:`attention_scale` and :func:`residual_taus`. ``tests/umup`` checks every one of them against
   ``unit_scaling`` (forward output and input/weight gradients).
2. **Fused primitives** used by :class:`~hf_ext.umup.modeling_umup.UMupLlamaForCausalLM`:
   :func:`scaled_linear` (independent forward / grad-input / grad-weight multipliers folded into the GEMM's
   ``alpha``), :func:`scaled_embedding`, :func:`residual_split_norm` (residual split + non-affine RMSNorm with
   the τ backward scales folded into the norm's backward) and :func:`residual_merge`. Because every
   u-μP multiplier is a constant, the model folds chains of them (attention output scale × residual τ ×
   linear ``1/sqrt(fan_in)``) into one GEMM ``alpha``; there is no extra elementwise pass per multiplier,
   which is what makes the model cheaper than ``unit_scaling``'s one-autograd-node-per-scale modules.

Notation: ``scale_fwd(x, s)`` multiplies by ``s`` in the forward pass only (identity gradient);
``scale_bwd(x, s)`` is the identity forward and multiplies the gradient by ``s``.

Example:
    >>> import torch
    >>> x, w = torch.randn(256, 1024), torch.randn(4096, 1024)
    >>> y = linear(x, w)   # y = x wᵀ / sqrt(1024): unit-scaled output for unit-scaled x and w
    >>> round(float(y.std()), 1)
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: The two residual depth conventions (see :func:`residual_taus`).
DEPTH_CONVENTIONS: tuple[str, ...] = ("blocks", "branches")

__all__ = [
    "DEPTH_CONVENTIONS", "add", "attention_scale", "cross_entropy", "dropout", "embedding", "gelu", "linear",
    "linear_readout", "logarithmic_interpolation", "matmul", "residual_add", "residual_apply", "residual_merge",
    "residual_scales", "residual_split", "residual_split_norm", "residual_taus", "rms_norm", "scale_bwd",
    "scale_fwd", "scaled_dot_product_attention", "scaled_embedding", "scaled_linear", "silu", "silu_glu",
    "softmax", "glu_scale", "cross_entropy_grad_scale", "scaled_loss",
]


# --------------------------------------------------------------------------------------------- rules


def logarithmic_interpolation(alpha: float, lower: float, upper: float) -> float:
    """``exp(α·ln(upper) + (1−α)·ln(lower))``: geometric interpolation between two limiting scales.

    Example:
        >>> logarithmic_interpolation(0.5, 1.0, 4.0)
        2.0
    """
    return math.exp(alpha * math.log(upper) + (1 - alpha) * math.log(lower))


def attention_scale(d_head: int, seq_len: int, *, is_causal: bool = True, mult: float = 1.0,
                    dropout_p: float = 0.0) -> float:
    """The u-μP attention multiplier ``s`` (applied to the output forward and to q, k, v gradients backward).

    ``s = sqrt(1−p) / loginterp(α = 1/(1 + 4·d_head/mult²), lower = sqrt((ln S if causal else 1)/S), upper = 1)``:
    an empirical model of the attention output's std as a function of the key length ``S`` (flat attention
    over ``S`` keys averages ``S`` unit values; the causal average over positions gives ``ln S / S``).

    Example:
        >>> round(attention_scale(64, 256, is_causal=True), 2)
        6.72
    """
    if seq_len < 1 or d_head < 1:
        raise ValueError(f"attention_scale needs seq_len >= 1 and d_head >= 1, got seq_len={seq_len}, d_head={d_head}")
    lower = ((math.log(seq_len) if is_causal else 1.0) / seq_len) ** 0.5
    if lower <= 0:  # causal with S = 1: ln 1 = 0; a single key is copied exactly, scale 1
        lower = 1.0
    return (1 - dropout_p) ** 0.5 / logarithmic_interpolation(1 / (1 + 4 * d_head / mult**2), lower, 1.0)


def glu_scale(mult: float = 1.0) -> float:
    """The gated-SiLU multiplier ``loginterp(1/(1 + 1/mult²), 2, sqrt 2)`` (= 2^0.75 ≈ 1.68 at mult = 1).

    Example:
        >>> round(glu_scale(1.0), 4)
        1.6818
    """
    return logarithmic_interpolation(1 / (1 + 1 / mult**2), 2.0, 2.0**0.5)


def cross_entropy_grad_scale(vocab_size: int) -> float:
    """Backward multiplier ``V / sqrt(V − 1)`` of the unit-scaled cross-entropy (unit-std logit gradients)."""
    return vocab_size / (vocab_size - 1) ** 0.5


def residual_taus(num_layers: int, alpha_res: float = 1.0, alpha_res_attn_ratio: float = 1.0,
                  depth_convention: str = "blocks") -> list[float]:
    """The τ of each residual branch (attention, MLP, attention, MLP …: ``2·num_layers`` values).

    ``α_mlp = α_res·sqrt(2/(1+ρ²))``, ``α_attn = ρ·α_mlp`` (ρ = ``alpha_res_attn_ratio``; ``α_res`` scales the
    *std* of the branches relative to the embedding, unit_scaling's definition), and for branch ``i``

        ``τ_i = α_i / sqrt(D + Σ_{j<i} α_j²)``

    with depth ``D = num_layers`` for ``"blocks"`` (unit_scaling's ``transformer_residual_scaling_rule``) or
    ``D = 2·num_layers`` for ``"branches"`` (Aleph-Alpha/scaling's default: every branch counts). Both keep the
    residual stream unit-scaled (Σ of the squared contributions is 1); ``"branches"`` gives each branch half the
    variance share relative to the embedding.

    Example:
        >>> [round(t, 4) for t in residual_taus(4)][:3]
        [0.5, 0.4472, 0.4082]
    """
    if depth_convention not in DEPTH_CONVENTIONS:
        raise ValueError(f"unknown depth_convention {depth_convention!r}; choose one of {DEPTH_CONVENTIONS}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    alpha_mlp = alpha_res * (2 / (1 + alpha_res_attn_ratio**2)) ** 0.5
    alpha_attn = alpha_res_attn_ratio * alpha_mlp
    depth = num_layers if depth_convention == "blocks" else 2 * num_layers
    taus, seen = [], 0.0
    for i in range(2 * num_layers):
        a = alpha_attn if i % 2 == 0 else alpha_mlp
        taus.append(a / (depth + seen) ** 0.5)
        seen += a * a
    return taus


def residual_scales(tau: float) -> tuple[float, float]:
    """``(branch, skip) = (τ/sqrt(1+τ²), 1/sqrt(1+τ²))``: the residual-add weights (their squares sum to 1)."""
    denom = (1 + tau * tau) ** 0.5
    return tau / denom, 1 / denom


def _constrain(constraint: str | None, *scales: float) -> tuple[float, ...]:
    if constraint is None or constraint == "":
        return scales
    if constraint == "to_output_scale":
        return tuple(scales[0] for _ in scales)
    if constraint == "to_grad_input_scale" and len(scales) == 2:
        return (scales[1], scales[1])
    if constraint == "gmean":
        g = math.prod(scales) ** (1 / len(scales))
        return tuple(g for _ in scales)
    raise ValueError(f"unknown constraint {constraint!r}; use None, 'to_output_scale', 'to_grad_input_scale' or 'gmean'")


# --------------------------------------------------------------------------------------------- primitives


class _Scale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fwd, bwd):
        ctx.bwd = bwd
        return x * fwd if fwd != 1.0 else x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return (g * ctx.bwd if ctx.bwd != 1.0 else g), None, None


def scale_fwd(x: Tensor, scale: float) -> Tensor:
    """``x · scale`` in the forward pass; the gradient passes unscaled.

    Example:
        >>> x = torch.ones(2, requires_grad=True)
        >>> scale_fwd(x, 3.0).sum().backward(); x.grad.tolist()
        [1.0, 1.0]
    """
    return _Scale.apply(x, float(scale), 1.0)


def scale_bwd(x: Tensor, scale: float) -> Tensor:
    """Identity in the forward pass; the gradient is multiplied by ``scale``.

    Example:
        >>> x = torch.ones(2, requires_grad=True)
        >>> scale_bwd(x, 3.0).sum().backward(); x.grad.tolist()
        [3.0, 3.0]
    """
    return _Scale.apply(x, 1.0, float(scale))


# fp8 modes of scaled_linear (see hf_ext.umup.fp8)
FP8_OFF, FP8_SIMULATE, FP8_SCALED_MM = 0, 1, 2


class _ScaledLinear(torch.autograd.Function):
    """``y = s_out·(x Wᵀ + b)``; ``grad_x = s_gx·g W``; ``grad_W = s_gw·gᵀ x``; ``grad_b = s_gw·Σ g``.

    The multipliers go into the GEMMs' ``alpha`` (no extra elementwise pass). ``fp8`` selects the FP8 path.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, s_out, s_gx, s_gw, fp8):
        fan_out, fan_in = weight.shape
        x2 = x.reshape(-1, fan_in)
        if fp8 == FP8_OFF:
            xs, ws = x2, weight
            if bias is None:
                y = torch.addmm(x2.new_zeros(()), x2, weight.t(), beta=0, alpha=s_out)
            else:
                y = torch.addmm(bias.to(x2.dtype), x2, weight.t(), beta=s_out, alpha=s_out)
        else:
            from .fp8 import fp8_linear_forward

            y, xs, ws = fp8_linear_forward(x2, weight, bias, s_out, fp8)
        ctx.save_for_backward(xs, ws)
        ctx.has_bias = bias is not None
        ctx.scales = (s_gx, s_gw)
        ctx.fp8 = fp8
        ctx.in_shape = x.shape
        ctx.dtypes = (x.dtype, weight.dtype)
        return y.reshape(*x.shape[:-1], fan_out)

    @staticmethod
    def backward(ctx, g):
        xs, ws = ctx.saved_tensors
        s_gx, s_gw = ctx.scales
        g2 = g.reshape(-1, g.shape[-1])
        gx = gw = gb = None
        if ctx.fp8 != FP8_OFF:
            from .fp8 import fp8_linear_backward

            gx, gw = fp8_linear_backward(g2, xs, ws, s_gx, s_gw, ctx.fp8, ctx.needs_input_grad[0],
                                         ctx.needs_input_grad[1], ctx.dtypes)
        else:
            zero = g2.new_zeros(())
            if ctx.needs_input_grad[0]:
                gx = torch.addmm(zero, g2, ws, beta=0, alpha=s_gx)
            if ctx.needs_input_grad[1]:
                gw = torch.addmm(zero, g2.t(), xs, beta=0, alpha=s_gw)
        if gx is not None:
            gx = gx.reshape(ctx.in_shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0) * s_gw
        return gx, gw, gb, None, None, None, None


def scaled_linear(x: Tensor, weight: Tensor, bias: Tensor | None, s_out: float, s_gx: float, s_gw: float,
                  fp8: int = FP8_OFF) -> Tensor:
    """A linear layer with independent forward, grad-input and grad-weight multipliers, fused into the GEMMs.

    Args:
        x: ``[..., fan_in]``.
        weight: ``[fan_out, fan_in]``; bias ``[fan_out]`` or ``None``.
        s_out: forward multiplier of ``x Wᵀ + b``.
        s_gx: multiplier of the input gradient ``g W``.
        s_gw: multiplier of the weight (and bias) gradient ``gᵀ x``.
        fp8: 0 off, 1 CPU simulation (E4M3 forward, E5M2 gradients), 2 ``torch._scaled_mm`` (CUDA, sm89+).

    Returns:
        ``[..., fan_out]``.

    Example:
        >>> x, w = torch.randn(8, 16), torch.randn(4, 16)
        >>> torch.allclose(scaled_linear(x, w, None, 0.25, 1.0, 1.0), 0.25 * x @ w.T, atol=1e-6)
        True
    """
    return _ScaledLinear.apply(x, weight, bias, float(s_out), float(s_gx), float(s_gw), fp8)


class _ScaledEmbedding(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ids, weight, s_gw, padding_idx):
        ctx.save_for_backward(ids)
        ctx.meta = (weight.shape, s_gw, padding_idx)
        return F.embedding(ids, weight)

    @staticmethod
    def backward(ctx, g):
        (ids,) = ctx.saved_tensors
        shape, s_gw, padding_idx = ctx.meta
        flat = ids.reshape(-1)
        g2 = g.reshape(-1, shape[1])
        if padding_idx is not None:
            keep = flat != padding_idx
            flat, g2 = flat[keep], g2[keep]
        gw = g2.new_zeros(shape).index_add_(0, flat, g2, alpha=s_gw)
        return None, gw, None, None


def scaled_embedding(ids: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Unit-scaled embedding lookup: forward unchanged; ``grad_W`` × ``sqrt(vocab / tokens)`` (fused in the scatter).

    Args:
        ids: integer ids of any shape; weight ``[vocab, hidden]``.
        padding_idx: rows whose gradient is dropped (like ``nn.Embedding(padding_idx=…)``); ``None`` keeps all.

    Example:
        >>> w = torch.randn(10, 4)
        >>> torch.equal(scaled_embedding(torch.tensor([1, 2]), w), w[[1, 2]])
        True
    """
    s_gw = (weight.shape[0] / max(1, ids.numel())) ** 0.5
    return _ScaledEmbedding.apply(ids, weight, s_gw, padding_idx)


def _rms(x: Tensor, eps: float) -> Tensor:
    return torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)


class _ResidualSplitNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, branch, skip, eps):
        rstd = _rms(x, eps)
        y = (x.float() * rstd).to(x.dtype)
        ctx.save_for_backward(y, rstd)
        ctx.scales = (branch, skip)
        return y, x.view_as(x)

    @staticmethod
    def backward(ctx, g_y, g_skip):
        y, rstd = ctx.saved_tensors
        branch, skip = ctx.scales
        gx = None
        if g_y is not None:
            yf, gf = y.float(), g_y.float()
            m = (gf * yf).mean(-1, keepdim=True)
            gx = torch.addcmul(gf, yf, m, value=-1.0).mul_(rstd * branch)
        if g_skip is not None:
            gx = g_skip * skip if gx is None else gx.add_(g_skip.float(), alpha=skip)
        return (gx.to(y.dtype) if gx is not None else None), None, None, None


def residual_split_norm(x: Tensor, tau: float | None, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """``residual_split(x, τ)`` followed by a non-affine RMSNorm of the branch, in one autograd node.

    Forward: ``(x / rms(x), x)``. Backward: ``grad_x = τ/sqrt(1+τ²)·norm_bwd(g_branch) + 1/sqrt(1+τ²)·g_skip``
    (``tau=None``: plain pre-norm, weights 1 and 1).

    Example:
        >>> y, skip = residual_split_norm(torch.randn(2, 8) * 3, 0.5)
        >>> round(float(y.pow(2).mean()), 3)
        1.0
    """
    branch, skip = residual_scales(tau) if tau is not None else (1.0, 1.0)
    return _ResidualSplitNorm.apply(x, branch, skip, eps)


class _ResidualMerge(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r, s, skip_scale):
        return torch.add(r, s, alpha=skip_scale)

    @staticmethod
    def backward(ctx, g):
        return g, g, None


def residual_merge(branch_scaled: Tensor, skip: Tensor, skip_scale: float) -> Tensor:
    """The second half of a residual add whose branch scale was already folded into the branch's last GEMM.

    Forward ``branch_scaled + skip_scale·skip``; backward passes the gradient unscaled to both (the scales of
    :func:`residual_add` are forward-only; the backward ones sit in the split).
    """
    return _ResidualMerge.apply(branch_scaled, skip, float(skip_scale))


class _LossScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loss_sum, fwd, bwd):
        ctx.bwd = bwd
        return loss_sum * fwd

    @staticmethod
    def backward(ctx, g):
        return g * ctx.bwd, None, None


def scaled_loss(loss_sum: Tensor, fwd: float, bwd: float) -> Tensor:
    """A scalar loss ``loss_sum·fwd`` whose gradient is ``bwd`` (scales every logit gradient by ``bwd``, free)."""
    return _LossScale.apply(loss_sum, float(fwd), float(bwd))


# --------------------------------------------------------------------------------------------- reference-compatible ops


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None, constraint: str | None = "to_output_scale",
           scale_power: tuple[float, float, float] = (0.5, 0.5, 0.5)) -> Tensor:
    """Unit-scaled linear (``unit_scaling.functional.linear``): ``y = (x Wᵀ + b)/fan_in^p0``.

    Gradients: ``grad_x`` × ``1/fan_out^p1`` (constrained to the output scale by default, which u-μP needs for
    correct gradients where the forward and backward paths meet), ``grad_W``/``grad_b`` × ``1/tokens^p2``.

    Args:
        input: ``[..., fan_in]``; weight ``[fan_out, fan_in]``; bias ``[fan_out]`` or ``None``.
        constraint: ``"to_output_scale"`` (default), ``None`` (unconstrained), ``"to_grad_input_scale"``, ``"gmean"``.
        scale_power: powers of (fan_in for the output, fan_out for grad_x, tokens for grad_W).

    Example:
        >>> y = linear(torch.randn(256, 1024), torch.randn(4096, 1024))
        >>> y.shape, round(float(y.std()), 1)
        (torch.Size([256, 4096]), 1.0)
    """
    fan_out, fan_in = weight.shape
    tokens = input.numel() // fan_in
    s_out = fan_in ** -scale_power[0]
    s_gx = fan_out ** -scale_power[1]
    s_gw = tokens ** -scale_power[2]
    s_out, s_gx = _constrain(constraint, s_out, s_gx)
    return scaled_linear(input, weight, bias, s_out, s_gx, s_gw)


def linear_readout(input: Tensor, weight: Tensor, bias: Tensor | None = None, constraint: str | None = None) -> Tensor:
    """The μP readout: :func:`linear` with forward scale ``1/fan_in`` (not ``1/sqrt``), unconstrained by default.

    Example:
        >>> y = linear_readout(torch.randn(256, 1024), torch.randn(4096, 1024))
        >>> round(float(y.std()), 3)  # 1/sqrt(1024)
        0.031
    """
    return linear(input, weight, bias, constraint=constraint, scale_power=(1.0, 0.5, 0.5))


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Unit-scaled embedding: :func:`scaled_embedding` (``grad_W`` × ``sqrt(vocab/tokens)``).

    ``padding_idx`` follows ``F.embedding`` (that row gets no gradient).
    """
    return scaled_embedding(input, weight, padding_idx)


def matmul(left: Tensor, right: Tensor, constraint: str | None = "to_output_scale") -> Tensor:
    """Unit-scaled matmul: output × ``1/sqrt(inner)``; grads × ``1/sqrt(right cols)`` and ``1/sqrt(left rows)``.

    Example:
        >>> round(float(matmul(torch.randn(64, 256), torch.randn(256, 32)).std()), 1)
        1.0
    """
    left_size, inner, right_size = left.shape[-2], left.shape[-1], right.shape[-1]
    s_out, s_l, s_r = _constrain(constraint, inner**-0.5, right_size**-0.5, left_size**-0.5)
    return scale_fwd(torch.matmul(scale_bwd(left, s_l), scale_bwd(right, s_r)), s_out)


def _broadcast_factors(*args: Tensor) -> tuple[int, ...]:
    n = torch.broadcast_shapes(*(a.shape for a in args)).numel()
    return tuple(n // a.shape.numel() for a in args)


def add(input: Tensor | float, other: Tensor | float, constraint: str | None = "to_output_scale") -> Tensor:
    """Unit-scaled addition: ``(a + b)/sqrt(2)`` (plain add when one side is a scalar).

    Example:
        >>> round(float(add(torch.randn(10000), torch.randn(10000)).std()), 1)
        1.0
    """
    if isinstance(input, (int, float)) or isinstance(other, (int, float)):
        return torch.add(input, other)
    fa, fb = _broadcast_factors(input, other)
    scalar = input.numel() == 1 or other.numel() == 1
    s_out, s_a, s_b = _constrain(constraint, 2**-0.5 if not scalar else 1.0, fa**-0.5, fb**-0.5)
    return scale_fwd(torch.add(scale_bwd(input, s_a), scale_bwd(other, s_b)), s_out)


def _elementwise(f: Callable[[Tensor], Tensor], x: Tensor, s_out: float, s_grad: float, constraint: str | None) -> Tensor:
    s_out, s_grad = _constrain(constraint, s_out, s_grad)
    return scale_fwd(f(scale_bwd(x, s_grad)), s_out)


def gelu(input: Tensor, mult: float = 1.0, constraint: str | None = "to_output_scale", approximate: str = "none") -> Tensor:
    """Unit-scaled GELU ``gelu(mult·x)/mult`` × ``loginterp(1/(1+0.25/mult²), 2, sqrt(2/(1−1/π)))``."""
    a = 1 / (1 + 0.25 / mult**2)
    s_out = logarithmic_interpolation(a, 2.0, (2 / (1 - 1 / math.pi)) ** 0.5)
    s_grad = logarithmic_interpolation(a, 2.0, 2**0.5)

    def f(x):
        return F.gelu(x, approximate=approximate) if mult == 1 else F.gelu(x * mult, approximate=approximate) / mult

    return _elementwise(f, input, s_out, s_grad, constraint)


def _silu(x: Tensor, mult: float) -> Tensor:
    return F.silu(x) if mult == 1 else x * torch.sigmoid(x * mult)


def silu(input: Tensor, mult: float = 1.0, constraint: str | None = "to_output_scale") -> Tensor:
    """Unit-scaled SiLU ``x·σ(mult·x)``, output scale as :func:`gelu`; grad α = ``1/(1+1/mult²)``."""
    s_out = logarithmic_interpolation(1 / (1 + 0.25 / mult**2), 2.0, (2 / (1 - 1 / math.pi)) ** 0.5)
    s_grad = logarithmic_interpolation(1 / (1 + 1 / mult**2), 2.0, 2**0.5)
    return _elementwise(lambda x: _silu(x, mult), input, s_out, s_grad, constraint)


def silu_glu(input: Tensor, gate: Tensor, mult: float = 1.0) -> Tensor:
    """Unit-scaled gated SiLU (SwiGLU's gate): ``s·x·g·σ(mult·g)``, grads of ``x`` and ``g`` × ``s`` = :func:`glu_scale`.

    Example:
        >>> x, g = torch.randn(4096, 512), torch.randn(4096, 512)
        >>> round(float(silu_glu(x, g).std()), 1)
        1.0
    """
    s = glu_scale(mult)
    return scale_fwd(scale_bwd(input, s) * _silu(scale_bwd(gate, s), mult), s)


def softmax(input: Tensor, dim: int, dtype: torch.dtype | None = None, constraint: str | None = "to_output_scale",
            mult: float = 1.0) -> Tensor:
    """Unit-scaled softmax ``softmax(mult·x)`` × ``loginterp(1/(1+4/mult²), n, sqrt n)`` (n = size of ``dim``)."""
    n = input.shape[dim]
    a = 1 / (1 + 4 / mult**2)
    s_out = logarithmic_interpolation(a, n, n**0.5)
    s_grad = logarithmic_interpolation(a, n / mult, (n / mult) ** 0.5)
    return _elementwise(lambda x: F.softmax(x * mult, dim=dim, dtype=dtype), input, s_out, s_grad, constraint)


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Unit-scaled dropout: forward and backward × ``sqrt(1−p)`` on top of ``F.dropout``."""
    s = (1 - p) ** 0.5
    return scale_fwd(F.dropout(scale_bwd(input, s), p, training), s)


def rms_norm(input: Tensor, normalized_shape: Sequence[int] | None = None, weight: Tensor | None = None,
             eps: float = 1e-5) -> Tensor:
    """Non-affine (default) RMSNorm ``x / sqrt(mean(x²) + eps)`` over the last dim; an optional weight's gradient is
    scaled by ``sqrt(hidden / numel)`` as unit_scaling does.

    Example:
        >>> round(float(rms_norm(torch.randn(4, 64) * 5).pow(2).mean()), 3)
        1.0
    """
    if normalized_shape is not None and tuple(normalized_shape) != (input.shape[-1],):
        raise ValueError(f"rms_norm normalises the last dim only; normalized_shape={tuple(normalized_shape)} "
                         f"does not equal ({input.shape[-1]},)")
    out = (input.float() * _rms(input, eps)).to(input.dtype)
    if weight is not None:
        out = out * scale_bwd(weight, (input.shape[-1] / input.numel()) ** 0.5)
    return out


def residual_split(input: Tensor, tau: float = 1.0) -> tuple[Tensor, Tensor]:
    """Two copies of ``input`` (residual, skip) whose gradients are scaled ``τ/sqrt(1+τ²)`` and ``1/sqrt(1+τ²)``.

    Use with :func:`residual_add` (same τ); the pair is a residual connection that keeps the residual stream and
    the branch's gradients unit-scaled.
    """
    branch, skip = residual_scales(tau)
    return scale_bwd(input, branch), scale_bwd(input, skip)


def residual_add(residual: Tensor, skip: Tensor, tau: float = 1.0) -> Tensor:
    """``τ/sqrt(1+τ²)·residual + 1/sqrt(1+τ²)·skip`` (forward-only scales)."""
    branch, skip_s = residual_scales(tau)
    return scale_fwd(residual, branch) + scale_fwd(skip, skip_s)


def residual_apply(fn: Callable[[Tensor], Tensor], input: Tensor, tau: float = 1.0) -> Tensor:
    """``residual_add(fn(r), s, τ)`` with ``r, s = residual_split(input, τ)``."""
    r, s = residual_split(input, tau)
    return residual_add(fn(r), s, tau)


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, mult: float = 1.0,
                                 seq_len: int | None = None, causal_rule: bool | None = None,
                                 enable_gqa: bool = False) -> Tensor:
    """Unit-scaled SDPA: softmax temperature ``mult/d_head`` (μP's 1/d), output and q/k/v grads × :func:`attention_scale`.

    Args:
        query: ``[B, H, Sq, d]``; key, value ``[B, H_kv, S, d]`` (``H_kv < H`` needs ``enable_gqa=True``).
        attn_mask: boolean (True = attend) or additive mask broadcastable to ``[B, H, Sq, S]``.
        is_causal: causal masking (``attn_mask`` must be ``None``).
        mult: α_attn-softmax.
        seq_len: ``S`` of the scaling rule (default: the key length, as unit_scaling). The model passes a fixed
            value so that a position's output does not depend on how many tokens follow it.
        causal_rule: use the causal (``ln S / S``) rule; default ``is_causal``.

    Example:
        >>> q = k = v = torch.randn(1, 2, 16, 8)
        >>> scaled_dot_product_attention(q, k, v, is_causal=True).shape
        torch.Size([1, 2, 16, 8])
    """
    d_head = value.shape[-1]
    s = attention_scale(d_head, seq_len or value.shape[-2], is_causal=is_causal if causal_rule is None else causal_rule,
                        mult=mult, dropout_p=dropout_p)
    q, k, v = (scale_bwd(t, s) for t in (query, key, value))
    kwargs = {"enable_gqa": True} if enable_gqa else {}
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                                         scale=mult / d_head, **kwargs)
    return scale_fwd(out, s)


def cross_entropy(input: Tensor, target: Tensor, ignore_index: int = -100, reduction: str = "mean",
                  mult: float = 1.0) -> Tensor:
    """Unit-scaled cross-entropy: the loss *value* equals ``F.cross_entropy(mult·input, target)``; the logit gradient is
    ``(softmax − onehot)·V/sqrt(V−1)`` (unit std), without the ``1/N`` of the mean and without ``mult``.

    Args:
        input: ``[N, V]`` (or ``[V]``) logits; target ``[N]`` class ids.
        ignore_index: targets to skip.
        reduction: ``"mean"`` (over the non-ignored targets) or ``"sum"``.
        mult: α_loss-softmax, a forward-only multiplier of the logits (a softmax temperature).

    Example:
        >>> x, t = torch.randn(8, 16), torch.randint(16, (8,))
        >>> torch.allclose(cross_entropy(x, t), F.cross_entropy(x, t))
        True
    """
    if input.dim() not in (1, 2):
        raise ValueError(f"cross_entropy input must be [N, V] or [V], got shape {tuple(input.shape)}; flatten it first")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction={reduction!r} is not supported; use 'mean' or 'sum'")
    vocab = input.shape[-1]
    logits = input * mult if mult != 1.0 else input
    loss_sum = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    n = int((target != ignore_index).sum()) if reduction == "mean" else 1
    return scaled_loss(loss_sum, 1 / max(n, 1), cross_entropy_grad_scale(vocab) / (mult if mult != 1.0 else 1.0))
