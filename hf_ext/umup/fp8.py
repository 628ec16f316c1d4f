"""FP8 for u-μP linears: plain saturating casts (no amax / delayed scaling: unit scale *is* the scaling).

Recipe (paper §5 / Aleph-Alpha/scaling ``fp8_linear.py``): E4M3 for activations and weights in the forward pass,
E5M2 for gradients; only the non-critical matmuls (q, k, v, gate, up) use FP8, the attention output and FFN
down projections stay in the model dtype. Three GEMMs per linear:

- forward ``x·Wᵀ``: (E4M3, E4M3);
- ``grad_x = g·W``: (E5M2, E4M3);
- ``grad_W = gᵀ·x``: (E5M2, E4M3).

Modes: ``"simulate"`` quantises to the FP8 grid and back (round-to-nearest-even, saturating) and multiplies in the
input dtype on any device (CPU tests); ``"scaled_mm"`` runs ``torch._scaled_mm`` (CUDA, compute capability ≥ 8.9,
dimensions multiples of 16).

Example:
    >>> import torch
    >>> x = torch.tensor([1.0, 300.0, -1e6, 1e-9])
    >>> quantize(x, E4M3).tolist()  # 300 -> 288 (nearest E4M3), -1e6 saturates to -448, 1e-9 flushes to 0
    [1.0, 288.0, -448.0, 0.0]
"""

from __future__ import annotations

import torch
from torch import Tensor

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
SIMULATE, SCALED_MM = 1, 2


def saturating_cast(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast to an FP8 ``dtype`` after clamping to ``±finfo(dtype).max`` (torch's cast alone gives NaN / inf).

    Example:
        >>> saturating_cast(torch.tensor([1e6]), E5M2).float().item()
        57344.0
    """
    big = torch.finfo(dtype).max
    return x.clamp(-big, big).to(dtype)


def quantize(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x`` rounded to the nearest value of the FP8 ``dtype`` (saturating), returned in ``x.dtype``."""
    return saturating_cast(x, dtype).to(x.dtype)


def fp8_error_stats(x: Tensor, dtype: torch.dtype) -> dict[str, float]:
    """Relative RMS error and the share of nonzero values flushed to zero by a saturating cast to ``dtype``.

    Example:
        >>> s = fp8_error_stats(torch.randn(2**16), E4M3)
        >>> s["rel_rms_error"] < 0.05, s["zero_fraction"] < 0.01
        (True, True)
    """
    xf = x.float()
    q = quantize(xf, dtype)
    err = (q - xf).pow(2).mean().sqrt() / xf.pow(2).mean().sqrt().clamp_min(1e-30)
    nz = xf != 0
    zeros = ((q == 0) & nz).float().sum() / nz.float().sum().clamp_min(1)
    return {"rel_rms_error": float(err), "zero_fraction": float(zeros)}


def _scaled_mm(a8: Tensor, b8: Tensor, scale: float, out_dtype: torch.dtype) -> Tensor:
    """``scale · a8 @ b8`` with ``a8`` row-major and ``b8`` column-major (what ``torch._scaled_mm`` requires)."""
    one = torch.ones((), device=a8.device, dtype=torch.float32)
    s = torch.full((), float(scale), device=a8.device, dtype=torch.float32)
    out = torch._scaled_mm(a8, b8, scale_a=s, scale_b=one, out_dtype=out_dtype)
    return out[0] if isinstance(out, tuple) else out


def fp8_linear_forward(x2: Tensor, weight: Tensor, bias: Tensor | None, s_out: float, mode: int):
    """Forward GEMM of an FP8 linear; returns ``(y, saved_x, saved_w)`` (the FP8-rounded operands for backward)."""
    if mode == SIMULATE:
        xq, wq = quantize(x2, E4M3), quantize(weight, E4M3)
        zero = xq.new_zeros(())
        if bias is None:
            y = torch.addmm(zero, xq, wq.t(), beta=0, alpha=s_out)
        else:
            y = torch.addmm(bias.to(xq.dtype), xq, wq.t(), beta=s_out, alpha=s_out)
        return y, xq, wq
    if mode == SCALED_MM:
        if not x2.is_cuda:
            raise RuntimeError("umup_fp8='scaled_mm' needs a CUDA device (compute capability >= 8.9); use 'simulate' "
                               "on CPU")
        x8, w8 = saturating_cast(x2, E4M3), saturating_cast(weight, E4M3)
        y = _scaled_mm(x8, w8.t(), s_out, x2.dtype)  # w8 [out, in] row-major -> .t() is column-major
        if bias is not None:
            y = y + s_out * bias.to(y.dtype)
        return y, x8, w8
    raise ValueError(f"unknown fp8 mode {mode!r}; use 1 (simulate) or 2 (scaled_mm)")


def fp8_linear_backward(g2: Tensor, xs: Tensor, ws: Tensor, s_gx: float, s_gw: float, mode: int,
                        need_x: bool, need_w: bool, dtypes: tuple[torch.dtype, torch.dtype]):
    """Gradient GEMMs of an FP8 linear: ``g`` in E5M2 against the saved E4M3 operands. Returns ``(gx, gw)``."""
    gx = gw = None
    if mode == SIMULATE:
        gq = quantize(g2, E5M2)
        zero = gq.new_zeros(())
        if need_x:
            gx = torch.addmm(zero, gq, ws, beta=0, alpha=s_gx)
        if need_w:
            gw = torch.addmm(zero, gq.t(), xs, beta=0, alpha=s_gw)
        return gx, gw
    g8 = saturating_cast(g2, E5M2)
    if need_x:  # [N, out] @ [out, in]; mat2 column-major
        gx = _scaled_mm(g8, ws.t().contiguous().t(), s_gx, dtypes[0])
    if need_w:  # [out, N] @ [N, in]
        gw = _scaled_mm(g8.t().contiguous(), xs.t().contiguous().t(), s_gw, dtypes[1])
    return gx, gw
