"""Unit-scaled ops of u-μP (Blake et al. 2025, arXiv 2407.17465), re-implemented without ``unit_scaling``.

Two layers:

1. **Reference-compatible ops** with the signatures and semantics of graphcore's ``unit_scaling.functional``
   (v0.3.5): :func:`linear`, :func:`linear_readout`, :func:`embedding`, :func:`matmul`, :func:`add`,
   :func:`scaled_dot_product_attention`, :func:`softmax`, :func:`gelu`, :func:`silu`, :func:`silu_glu`,
   :func:`dropout`, :func:`rms_norm`, :func:`residual_split` / :func:`residual_add` / :func:`residual_apply`,
   :func:`cross_entropy`, plus the primitives :func:`scale_fwd` / :func:`scale_bwd` and the rules
   :func:`attention_scale` and :func:`residual_taus`. ``tests/umup`` checks every one of them against
   ``unit_scaling`` (forward output and input/weight gradients).
2. **Fused primitives** (defined in :mod:`hf_ext.umup.primitives`, re-exported here) used by
   :class:`~hf_ext.umup.modeling_umup.UMupLlamaForCausalLM`:
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

from .primitives import (
    DEPTH_CONVENTIONS,
    FP8_OFF,
    FP8_SCALED_MM,
    FP8_SIMULATE,
    attention_scale,
    cross_entropy_grad_scale,
    glu_scale,
    logarithmic_interpolation,
    residual_merge,
    residual_scales,
    residual_split_norm,
    residual_taus,
    rms,
    scale_bwd,
    scale_fwd,
    scaled_embedding,
    scaled_linear,
    scaled_loss,
)

__all__ = [
    "DEPTH_CONVENTIONS", "FP8_OFF", "FP8_SCALED_MM", "FP8_SIMULATE", "add", "attention_scale", "cross_entropy", "dropout", "embedding", "gelu", "linear",
    "linear_readout", "logarithmic_interpolation", "matmul", "residual_add", "residual_apply", "residual_merge",
    "residual_scales", "residual_split", "residual_split_norm", "residual_taus", "rms_norm", "scale_bwd",
    "scale_fwd", "scaled_dot_product_attention", "scaled_embedding", "scaled_linear", "silu", "silu_glu",
    "softmax", "glu_scale", "cross_entropy_grad_scale", "scaled_loss",
]


# --------------------------------------------------------------------------------------------- reference-compatible ops


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
    out = (input.float() * rms(input, eps)).to(input.dtype)
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
