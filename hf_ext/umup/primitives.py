"""The fused primitives and scaling rules of u-μP (Blake et al. 2025, arXiv 2407.17465), without ``unit_scaling``.

* **Rules**: the multipliers u-μP prescribes (:func:`attention_scale`, :func:`glu_scale`,
  :func:`cross_entropy_grad_scale`, :func:`residual_taus` / :func:`residual_scales`).
* **Primitives** used by :class:`~hf_ext.umup.modeling_umup.UMupLlamaForCausalLM`: :func:`scale_fwd` /
  :func:`scale_bwd`, :func:`scaled_linear` (independent forward / grad-input / grad-weight multipliers folded into
  the GEMM's ``alpha``), :func:`scaled_embedding`, :func:`residual_split_norm` (residual split + non-affine RMSNorm
  with the τ backward scales folded into the norm's backward), :func:`residual_merge` and :func:`scaled_loss`.
  Because every u-μP multiplier is a constant, the model folds chains of them into one GEMM ``alpha``: no extra
  elementwise pass per multiplier.

The reference-compatible ops (``unit_scaling.functional``'s signatures) are in :mod:`hf_ext.umup.functional`, which
re-exports everything here.

Example:
    >>> import torch
    >>> x = torch.ones(2, 3, requires_grad=True)
    >>> scale_fwd(x, 2.0).sum().backward()    # forward ×2, gradient untouched
    >>> x.grad.tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: The two residual depth conventions (see :func:`residual_taus`).
DEPTH_CONVENTIONS: tuple[str, ...] = ("blocks", "branches")

__all__ = [
    "DEPTH_CONVENTIONS", "FP8_OFF", "FP8_SCALED_MM", "FP8_SIMULATE", "attention_scale", "cross_entropy_grad_scale", "glu_scale", "logarithmic_interpolation",
    "residual_merge", "residual_scales", "residual_split_norm", "residual_taus", "rms", "scale_bwd", "scale_fwd",
    "scaled_embedding", "scaled_linear", "scaled_loss",
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
        6.74
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


def rms(x: Tensor, eps: float) -> Tensor:
    """``sqrt(mean(x²) + eps)`` over the last dim (kept), in ``x``'s dtype."""
    return torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)


class _ResidualSplitNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, branch, skip, eps):
        rstd = rms(x, eps)
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
