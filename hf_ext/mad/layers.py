"""The layers of MAD's models, all pure PyTorch and CPU-capable: RMSNorm, RoPE attention (full and sliding),
SwiGLU, MLP, Mamba-1 (selective scan) and Hyena (implicit long filters, FFT convolution). See
:mod:`hf_ext.mad.models` for the table of names and shorthands.

Example:
    >>> import torch
    >>> from hf_ext.mad.configuration_mad import MADStackConfig
    >>> layer = build_layer("hyena", MADStackConfig(hidden_size=16, max_position_embeddings=32))
    >>> layer(torch.randn(2, 8, 16)).shape
    torch.Size([2, 8, 16])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_mad import LAYER_TYPES, MADStackConfig

__all__ = ["MLP", "Attention", "Hyena", "HyenaFilter", "Mamba", "RMSNorm", "SwiGLU", "build_layer", "fftconv",
           "make_norm", "selective_scan"]


class RMSNorm(nn.Module):
    """RMS normalisation over the last dimension (``d`` features), learned scale, ``eps`` for stability."""
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, L, d] -> [B, L, d]``."""
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(cfg: MADStackConfig) -> nn.Module:
    """The model's norm layer (``cfg.norm``: RMSNorm or LayerNorm) of width ``hidden_size``."""
    return RMSNorm(cfg.hidden_size, cfg.norm_eps) if cfg.norm == "rmsnorm" else nn.LayerNorm(cfg.hidden_size,
                                                                                             eps=cfg.norm_eps)


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Non-interleaved RoPE over the last dim of ``x [B, H, L, Dh]``."""
    L, dh = x.shape[-2], x.shape[-1]
    half = dh // 2
    inv = 1.0 / (theta ** (torch.arange(0, half, device=x.device, dtype=torch.float32) / half))
    ang = torch.arange(L, device=x.device, dtype=torch.float32)[:, None] * inv[None]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:2 * half]
    rot = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return torch.cat([rot, x[..., 2 * half:]], dim=-1) if dh % 2 else rot


class Attention(nn.Module):
    """Causal multi-head softmax attention with RoPE and qkv/out biases (mad-lab ``MHA``), via SDPA.

    Shapes: ``x [B, L, d] -> [B, L, d]``.
    """

    def __init__(self, cfg: MADStackConfig, heads: int, window: int | None = None):
        super().__init__()
        d = cfg.hidden_size
        self.heads, self.window, self.theta = heads, window, cfg.rope_theta
        self.qkv = nn.Linear(d, 3 * d, bias=True)
        self.out = nn.Linear(d, d, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, L, d] -> [B, L, d]``."""
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = _rope(q, self.theta), _rope(k, self.theta)
        if self.window is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            i = torch.arange(L, device=x.device)
            mask = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < self.window)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(B, L, d))


class SwiGLU(nn.Module):
    """``w3(silu(w1 x) * w2 x)`` with inner ``int(2 * 4d / 3)`` rounded up to a multiple of 16 (352 at d=128)."""

    def __init__(self, cfg: MADStackConfig):
        super().__init__()
        d = cfg.hidden_size
        inner = int(2 * d * 4 / 3)
        inner = 16 * ((inner + 15) // 16)
        self.w1, self.w2 = nn.Linear(d, inner, bias=False), nn.Linear(d, inner, bias=False)
        self.w3 = nn.Linear(inner, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, L, d] -> [B, L, d]``."""
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class MLP(nn.Module):
    """The MLP channel mixer of a MAD stack: ``hidden_size`` → 4·``hidden_size`` (GELU) → ``hidden_size``."""
    def __init__(self, cfg: MADStackConfig):
        super().__init__()
        d = cfg.hidden_size
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, L, d] -> [B, L, d]``."""
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor) -> torch.Tensor:
    """Mamba's selective scan, sequential reference in pure torch.

    Shapes: ``u, delta [b, E, L]``, ``A [E, N]``, ``B, C [b, N, L]``, ``D [E]`` -> ``y [b, E, L]`` with
    ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t h_t + D u_t``.
    """
    b, E, L = u.shape
    dA = torch.exp(delta.unsqueeze(-1) * A[None, :, None, :])  # [b, E, L, N]
    dBu = delta.unsqueeze(-1) * B.transpose(1, 2)[:, None] * u.unsqueeze(-1)  # [b, E, L, N]
    h = u.new_zeros(b, E, A.shape[1])
    ys = []
    for t in range(L):
        h = dA[:, :, t] * h + dBu[:, :, t]
        ys.append((h * C[:, :, t][:, None, :]).sum(-1))
    return torch.stack(ys, dim=-1) + u * D[None, :, None]


class Mamba(nn.Module):
    """Mamba-1 mixer (Gu & Dao 2023) with a pure-torch selective scan; mad-lab settings d_state 4, d_conv 4, expand 2."""

    def __init__(self, cfg: MADStackConfig):
        super().__init__()
        d, N, E = cfg.hidden_size, cfg.mamba_d_state, cfg.mamba_expand * cfg.hidden_size
        self.dt_rank = math.ceil(d / 16)
        self.in_proj = nn.Linear(d, 2 * E, bias=False)
        self.conv = nn.Conv1d(E, E, cfg.mamba_d_conv, groups=E, padding=cfg.mamba_d_conv - 1, bias=True)
        self.x_proj = nn.Linear(E, self.dt_rank + 2 * N, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, E, bias=True)
        self.out_proj = nn.Linear(E, d, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self.N = N
        self.reset_dt()

    @torch.no_grad()
    def reset_dt(self, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4) -> None:
        """Mamba's dt init: bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max] (kept by ``_init_weights``)."""
        dt = torch.exp(torch.rand(self.dt_proj.out_features) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, L, d] -> [B, L, d]``."""
        L = x.shape[1]
        xz = self.in_proj(x).transpose(1, 2)  # [b, 2E, L]
        u, z = xz.chunk(2, dim=1)
        u = F.silu(self.conv(u)[..., :L])
        dbc = self.x_proj(u.transpose(1, 2))  # [b, L, r + 2N]
        dt, Bm, Cm = dbc.split([self.dt_rank, self.N, self.N], dim=-1)
        delta = F.softplus(self.dt_proj(dt)).transpose(1, 2)  # [b, E, L]
        y = selective_scan(u, delta, -torch.exp(self.A_log.float()), Bm.transpose(1, 2), Cm.transpose(1, 2), self.D)
        y = y * F.silu(z)
        return self.out_proj(y.transpose(1, 2))


class _Sin(nn.Module):
    def __init__(self, dim: int, w: float = 1.0):
        super().__init__()
        self.freq = nn.Parameter(w * torch.ones(1, dim))

    def forward(self, x):
        return torch.sin(self.freq * x)


class HyenaFilter(nn.Module):
    """Implicit long filter: ``h(t) = MLP(pos_emb(t)) * exp(-alpha_c t)`` (Poli et al. 2023), ``[channels, L]``."""

    def __init__(self, channels: int, max_len: int, order: int = 64, emb_dim: int = 5, fast: float = 0.3,
                 slow: float = 1.5, target: float = 1e-2):
        super().__init__()
        self.emb_dim, self.max_len = emb_dim, max_len
        self.mlp = nn.Sequential(nn.Linear(emb_dim, order), _Sin(order), nn.Linear(order, order), _Sin(order),
                                 nn.Linear(order, channels, bias=False))
        # decay rates (fixed, recomputed: no buffer, so from_pretrained's meta-device loading cannot leave it empty)
        self.decay_range = (math.log(target) / slow, math.log(target) / fast)
        self.channels = channels

    def forward(self, L: int) -> torch.Tensor:
        dev = self.mlp[0].weight.device
        deltas = torch.linspace(*self.decay_range, self.channels, device=dev)[None]
        t = torch.linspace(0, 1, self.max_len, device=dev)[:L, None]
        bands = (self.emb_dim - 1) // 2
        f = torch.linspace(1e-4, bands - 1, bands, device=dev)[None]
        w = 2 * math.pi * torch.arange(L, device=dev)[:, None] / self.max_len
        z = torch.cat([t, torch.cos(f * w), torch.sin(f * w)], dim=-1)  # [L, emb_dim]
        h = self.mlp(z) * torch.exp(-t * deltas.abs())  # [L, C]
        return h.transpose(0, 1)


def fftconv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal long convolution via FFT: ``u [..., C, L]``, ``k [C, L]`` -> ``[..., C, L]``."""
    L = u.shape[-1]
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u.float(), n=n) * torch.fft.rfft(k.float(), n=n), n=n)[..., :L]
    return y.to(u.dtype)


class Hyena(nn.Module):
    """Hyena operator of order ``o``: projections + short causal conv give ``x_1..x_o, v``; then
    ``v <- x_i * (h_i * v + b_i v)`` with implicit long filters ``h_i`` (FFT conv), output projection.

    With ``heads > 1`` (``mh-hyena``, order 2): per head of size ``Dh``, the outer product ``k v^T`` is convolved
    with a per-head long filter and read out by ``q`` (mad-lab's ``fftconv_heads``).

    Shapes: ``x [B, L, d] -> [B, L, d]``.
    """

    def __init__(self, cfg: MADStackConfig, heads: int = 1):
        super().__init__()
        d = cfg.hidden_size
        self.order, self.heads = cfg.hyena_order, heads
        if heads > 1 and self.order != 2:
            raise ValueError(f"mh-hyena supports hyena_order=2 only, got {self.order}")
        self.inner = d * (cfg.hyena_inner_factor if heads == 1 else 1)
        width = self.inner * (self.order + 1)
        self.groups = cfg.hyena_proj_groups if heads == 1 else 1  # tied projection groups (mad-lab proj_groups)
        self.in_proj = nn.Linear(d, width // self.groups)
        s = cfg.hyena_short_filter_order
        self.short = nn.Conv1d(width, width, s, groups=width, padding=s - 1)
        channels = self.inner * (self.order - 1) if heads == 1 else heads
        self.filter = HyenaFilter(channels, cfg.max_position_embeddings,
                                  order=cfg.hyena_filter_order if heads == 1 else cfg.mh_hyena_filter_order)
        self.bias = nn.Parameter(torch.randn(channels))
        self.bias._no_reinit = True
        self.out_proj = nn.Linear(self.inner, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, L, d] -> [B, L, d]``."""
        B, L, _ = x.shape
        if L > self.filter.max_len:
            raise ValueError(f"sequence length {L} exceeds max_position_embeddings={self.filter.max_len} of the Hyena filter")
        u = self.in_proj(x)
        if self.groups > 1:
            u = u.repeat(1, 1, self.groups)
        u = self.short(u.transpose(1, 2))[..., :L]  # [B, width, L]
        *xs, v = u.split(self.inner, dim=1)
        k = self.filter(L)  # [channels, L]
        if self.heads == 1:
            ks = k.split(self.inner, dim=0)
            bs = self.bias.split(self.inner, dim=0)
            for i in range(self.order - 1):
                v = v * xs[-(i + 1)]
                v = fftconv(v, ks[i]) + v * bs[i][:, None]
            y = v * xs[0]
        else:
            H, Dh = self.heads, self.inner // self.heads
            q, kk = xs[0].view(B, H, Dh, L), xs[1].view(B, H, Dh, L)
            vv = v.view(B, H, Dh, L)
            kv = kk[:, :, :, None, :] * vv[:, :, None, :, :]  # [B, H, Dh, Dh, L]
            kv = fftconv(kv.transpose(1, 3), k).transpose(1, 3) + kv * self.bias.view(1, H, 1, 1, 1)
            y = (q[:, :, :, None, :] * kv).sum(2).reshape(B, self.inner, L)
        return self.out_proj(y.transpose(1, 2))


def build_layer(name: str, cfg: MADStackConfig) -> nn.Module:
    """One MAD layer by canonical name (see :data:`LAYER_TYPES`)."""
    h = cfg.num_attention_heads
    if name == "attention":
        return Attention(cfg, 1)
    if name == "mh-attention":
        return Attention(cfg, h)
    if name == "sliding-attention":
        return Attention(cfg, 1, window=cfg.sliding_window)
    if name == "mh-sliding-attention":
        return Attention(cfg, h, window=cfg.sliding_window)
    if name == "swiglu":
        return SwiGLU(cfg)
    if name == "mlp":
        return MLP(cfg)
    if name == "mamba":
        return Mamba(cfg)
    if name == "hyena":
        return Hyena(cfg, 1)
    if name == "mh-hyena":
        return Hyena(cfg, h)
    raise ValueError(f"unknown MAD layer {name!r}; valid: {list(LAYER_TYPES)}")
