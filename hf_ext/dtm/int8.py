"""Int8 absmax (per output row) weight quantization: the fake-quant math and a real int8 weight-only Linear.

Scheme (the paper's "naive" LLM.int8() without the outlier path, weights only): for each output row ``i`` of the
weight ``W [out, in]``, ``s_i = max_j |W_ij| / 127`` and ``q_ij = round(W_ij / s_i)`` clamped to ``[-127, 127]``; a row of
zeros gets ``s_i = 1``. The dequantized weight is ``q * s``.

:class:`Int8WeightOnlyLinear` stores ``weight_int8`` (int8 ``[out, in]``) and ``scales`` (``[out]``) and computes
``y = x (q * s)ᵀ + b`` with ``torch._weight_int8pack_mm`` (CPU/CUDA kernel, activations fp32/bf16/fp16) where torch has
it, else by dequantize-then-matmul. transformers' GPT-2 ``Conv1D`` (weight ``[in, out]``) is converted too.

Example:
    >>> import torch
    >>> lin = torch.nn.Linear(16, 8)
    >>> q = Int8WeightOnlyLinear.from_linear(lin)
    >>> x = torch.randn(2, 16)
    >>> bool(torch.allclose(q(x), torch.nn.functional.linear(x, q.dequantize(), lin.bias), atol=1e-5))
    True
"""

from __future__ import annotations

import torch
from torch import nn

from hf_ext.utils.validation import check_int

__all__ = ["Int8WeightOnlyLinear", "dequantize_absmax", "fake_quantize_absmax", "has_int8pack_mm", "is_linear_like",
           "linear_weight", "quantize_absmax"]


def has_int8pack_mm() -> bool:
    """Whether this torch has the ``torch._weight_int8pack_mm`` kernel."""
    return hasattr(torch, "_weight_int8pack_mm")


def is_linear_like(module: nn.Module) -> bool:
    """``nn.Linear`` or transformers' ``Conv1D`` (GPT-2: weight stored ``[in, out]``)."""
    return isinstance(module, nn.Linear) or (type(module).__name__ == "Conv1D" and hasattr(module, "nf"))


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The weight of a linear-like module as ``[out, in]`` (a transposed view for ``Conv1D``)."""
    return module.weight if isinstance(module, nn.Linear) else module.weight.t()


def quantize_absmax(weight: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax quantization per output row.

    Args:
        weight: ``[out, in]`` float.
        bits: 2..8 (8 = int8, levels ±127).

    Returns:
        ``(q [out, in] int8, scales [out] float32)`` with ``weight ≈ q * scales[:, None]``.
    """
    check_int("bits", bits, min=2, max=8)
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    absmax = w.abs().amax(dim=1)
    scales = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
    q = torch.round(w / scales[:, None]).clamp_(-qmax, qmax).to(torch.int8)
    return q, scales


def dequantize_absmax(q: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``q * scales[:, None]`` in ``dtype`` (``[out, in]``)."""
    return (q.float() * scales.float()[:, None]).to(dtype)


def fake_quantize_absmax(weight: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Quantize-dequantize ``weight [out, in]`` per row (same dtype and shape)."""
    q, s = quantize_absmax(weight, bits)
    return dequantize_absmax(q, s, weight.dtype)


class Int8WeightOnlyLinear(nn.Module):
    """A Linear with int8 weights (absmax per output row) and float activations.

    Buffers (saved in the state dict, safetensors-friendly): ``weight_int8`` int8 ``[out, in]``, ``scales`` float32
    ``[out]``; ``bias`` ``[out]`` (if any) in the original dtype.

    Args:
        in_features, out_features: sizes.
        bias: whether there is a bias.
        dtype: dtype of the bias / compute dtype for the fallback path.
        use_kernel: use ``torch._weight_int8pack_mm`` when available (else dequantize-then-matmul).

    Example:
        >>> q = Int8WeightOnlyLinear.from_linear(torch.nn.Linear(32, 4))
        >>> q(torch.randn(3, 5, 32)).shape
        torch.Size([3, 5, 4])
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: torch.dtype = torch.float32,
                 use_kernel: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.use_kernel = use_kernel
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(out_features, dtype=torch.float32))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype), requires_grad=False)
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_linear(cls, module: nn.Module, *, use_kernel: bool = True) -> Int8WeightOnlyLinear:
        """Quantize an ``nn.Linear`` (or GPT-2 ``Conv1D``) into a new module on the same device."""
        if not is_linear_like(module):
            raise TypeError(f"can only quantize nn.Linear or transformers Conv1D modules, got {type(module).__name__}")
        weight = linear_weight(module)
        out_f, in_f = weight.shape
        bias = getattr(module, "bias", None)
        new = cls(in_f, out_f, bias=bias is not None, dtype=weight.dtype, use_kernel=use_kernel).to(weight.device)
        q, s = quantize_absmax(weight)
        new.weight_int8.copy_(q)
        new.scales.copy_(s)
        if bias is not None:
            new.bias.data.copy_(bias.detach())
        return new

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The dequantized weight ``[out, in]``."""
        dtype = dtype or (self.bias.dtype if self.bias is not None else torch.float32)
        return dequantize_absmax(self.weight_int8, self.scales, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        kernel_ok = (self.use_kernel and has_int8pack_mm() and x2.dtype in (torch.float32, torch.bfloat16, torch.float16)
                     and x2.device.type in ("cpu", "cuda") and x2.shape[0] > 0)
        if kernel_ok:
            y = torch._weight_int8pack_mm(x2.contiguous(), self.weight_int8, self.scales.to(x2.dtype))
        else:
            y = x2 @ self.dequantize(x2.dtype).t()
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8 absmax/row"
