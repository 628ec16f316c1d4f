"""Models for MAD: :class:`MADStackForCausalLM` (striped hybrids from a layer-pattern string) and the compression
autoencoders (:class:`MADAutoEncoder`, :class:`CausalLMAutoEncoder` around any transformers causal LM).

A MAD model is mad-lab's ``LanguageModel``: token embedding (N(0, 0.02)), no positional embedding (attention uses
RoPE), per layer ``x = x + layer(norm(x))``, final ``norm -> Linear(d, V)`` (untied). Layers (mad-lab names and
shorthands; all pure PyTorch and CPU-capable):

==========================  =====  ===================================================================================
name                        short  what
==========================  =====  ===================================================================================
``attention``               A      causal softmax attention, 1 head, qkv/out bias, RoPE (base 1e4), SDPA
``mh-attention``            mA     the same with ``num_attention_heads`` heads (mad-lab: 16 heads x 8 at d=128)
``sliding-attention``       SA     attention restricted to the last ``sliding_window`` keys (``mh-sliding-attention``)
``swiglu``                  Sg     ``w3(silu(w1 x) * w2 x)``, inner ``int(8d/3)`` rounded up to a multiple of 16, no bias
``mlp``                     M      ``Linear(d, 4d) -> GELU(tanh) -> Linear(4d, d)``
``mamba``                   Mb     Mamba-1 (d_state 4, d_conv 4, expand 2, dt_rank ceil(d/16)), pure-torch selective scan
``hyena``                   H      Hyena operator (order 2, short conv 3, implicit Sin-MLP filter with exp decay, FFT conv)
``mh-hyena``                mH     multi-head Hyena (per-head k v outer products convolved with per-head long filters)
==========================  =====  ===================================================================================

A pattern is a comma/space separated list, e.g. ``"mh-attention,swiglu,mh-attention,swiglu"`` (mad-lab's default) or
the striped hybrid ``"mH Sg mA Sg"``; ``"(mH Sg mA Sg)x2"`` repeats a group. transformers has no Hyena: this module is
the Hyena of hf_ext.

Example:
    >>> from hf_ext.mad.models import MADStackConfig, MADStackForCausalLM
    >>> cfg = MADStackConfig(layers="mh-attention,swiglu,hyena,swiglu", hidden_size=32, vocab_size=16,
    ...                      num_attention_heads=4, max_position_embeddings=64)
    >>> model = MADStackForCausalLM(cfg)
    >>> import torch
    >>> model(torch.zeros(2, 10, dtype=torch.long)).logits.shape
    torch.Size([2, 10, 16])
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

from .config import IGNORE_INDEX

LAYER_ALIASES: dict[str, str] = {
    "a": "attention", "attention": "attention", "attn": "attention",
    "ma": "mh-attention", "mh-attention": "mh-attention", "mha": "mh-attention",
    "sa": "sliding-attention", "sliding-attention": "sliding-attention",
    "msa": "mh-sliding-attention", "mh-sliding-attention": "mh-sliding-attention",
    "sg": "swiglu", "swiglu": "swiglu",
    "m": "mlp", "mlp": "mlp",
    "mb": "mamba", "mamba": "mamba",
    "h": "hyena", "hyena": "hyena",
    "mh": "mh-hyena", "mh-hyena": "mh-hyena",
}
LAYER_TYPES: tuple[str, ...] = ("attention", "mh-attention", "sliding-attention", "mh-sliding-attention", "swiglu",
                                "mlp", "mamba", "hyena", "mh-hyena")
SEQUENCE_MIXERS = ("attention", "mh-attention", "sliding-attention", "mh-sliding-attention", "mamba", "hyena",
                   "mh-hyena")


def parse_layers(pattern: str | list[str] | tuple[str, ...]) -> list[str]:
    """Canonical layer names of a pattern string or list (case-insensitive names or shorthands; ``(..)xN`` repeats).

    Raises:
        ValueError: an unknown layer name (the message lists the valid names) or an empty pattern.

    Example:
        >>> parse_layers("(mH Sg mA Sg)x2")
        ['mh-hyena', 'swiglu', 'mh-attention', 'swiglu', 'mh-hyena', 'swiglu', 'mh-attention', 'swiglu']
    """
    if isinstance(pattern, (list, tuple)):
        items = [str(p) for p in pattern]
    elif isinstance(pattern, str):
        expanded = re.sub(r"\(([^()]*)\)\s*[xX*]\s*(\d+)", lambda m: " ".join([m.group(1)] * int(m.group(2))), pattern)
        items = [p for p in re.split(r"[\s,;]+", expanded) if p]
    else:
        raise TypeError(f"layers must be a pattern string or a list of layer names, got {type(pattern).__name__}")
    out = []
    for item in items:
        name = LAYER_ALIASES.get(item.lower())
        if name is None:
            raise ValueError(f"unknown MAD layer {item!r}; valid layers: {list(LAYER_TYPES)} (shorthands A, mA, SA, "
                             "mSA, Sg, M, Mb, H, mH). transformers' MoE/GLA/RWKV layers are not wrapped here")
        out.append(name)
    if not out:
        raise ValueError("empty MAD layer pattern; e.g. 'mh-attention,swiglu,mh-attention,swiglu'")
    return out


class MADStackConfig(PreTrainedConfig):
    """Config of :class:`MADStackForCausalLM` / :class:`MADAutoEncoder`.

    Args:
        layers: layer pattern (see :func:`parse_layers`), stored as a list of canonical names.
        hidden_size: width ``d`` (mad-lab 128).
        vocab_size: task vocab.
        max_position_embeddings: longest sequence (sets the Hyena filter length; mad-lab ``max_length``).
        num_attention_heads: heads of the ``mh-*`` layers (mad-lab 16; ``hidden_size`` must be divisible).
        sliding_window: window of the sliding attention layers (mad-lab 32).
        rope_theta: RoPE base. mamba_d_state, mamba_d_conv, mamba_expand: Mamba settings (mad-lab 4, 4, 2).
        hyena_order, hyena_filter_order, hyena_short_filter_order, hyena_inner_factor, hyena_proj_groups: Hyena
            settings (mad-lab ``hyena.yml``: order 2, implicit-filter width 4, short conv 3, inner factor 4 with 4 tied
            projection groups); mh_hyena_filter_order: filter width of ``mh-hyena`` (mad-lab 2; inner factor 1).
        norm: ``"rmsnorm"`` (paper, ``benchmark.py``) or ``"layernorm"`` (mad-lab ``train.py``).
        initializer_range: std of the token embedding (and of linears when ``init="normal"``).
        init: ``"torch"`` (mad-lab after PR #4: Linear default init, zero biases) or ``"normal"`` (before PR #4: every
            Linear N(0, 0.02), which also wipes Mamba's dt bias init).
        global_pool: autoencoder pooling (``"last"`` as mad-lab).
    """

    model_type = "mad_stack"

    def __init__(self, layers: Any = "mh-attention,swiglu,mh-attention,swiglu", hidden_size: int = 128,
                 vocab_size: int = 16, max_position_embeddings: int = 1280, num_attention_heads: int = 16,
                 sliding_window: int = 32, rope_theta: float = 10000.0, mamba_d_state: int = 4, mamba_d_conv: int = 4,
                 mamba_expand: int = 2, hyena_order: int = 2, hyena_filter_order: int = 4,
                 mh_hyena_filter_order: int = 2, hyena_short_filter_order: int = 3, hyena_inner_factor: int = 4,
                 hyena_proj_groups: int = 4, norm: str = "rmsnorm",
                 norm_eps: float = 1e-5, initializer_range: float = 0.02, init: str = "torch",
                 global_pool: str = "last", tie_word_embeddings: bool = False, **kwargs):
        self.layers = parse_layers(layers)
        if norm not in ("rmsnorm", "layernorm"):
            raise ValueError(f"norm must be 'rmsnorm' or 'layernorm', got {norm!r}")
        if init not in ("torch", "normal"):
            raise ValueError(f"init must be 'torch' (mad-lab after PR #4) or 'normal' (before), got {init!r}")
        if any(layer.startswith("mh-") for layer in self.layers) and hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by num_attention_heads={num_attention_heads} "
                             "for the multi-head layers")
        self.hidden_size = hidden_size
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.num_attention_heads = num_attention_heads
        self.sliding_window = sliding_window
        self.rope_theta = rope_theta
        self.mamba_d_state = mamba_d_state
        self.mamba_d_conv = mamba_d_conv
        self.mamba_expand = mamba_expand
        self.hyena_order = hyena_order
        self.hyena_filter_order = hyena_filter_order
        self.hyena_short_filter_order = hyena_short_filter_order
        self.hyena_inner_factor = hyena_inner_factor
        self.hyena_proj_groups = hyena_proj_groups
        self.mh_hyena_filter_order = mh_hyena_filter_order
        if (hyena_inner_factor * (hyena_order + 1)) % hyena_proj_groups:
            raise ValueError(f"hyena_inner_factor * (hyena_order + 1) = {hyena_inner_factor * (hyena_order + 1)} must be "
                             f"divisible by hyena_proj_groups={hyena_proj_groups}")
        self.norm = norm
        self.norm_eps = norm_eps
        self.initializer_range = initializer_range
        self.init = init
        self.global_pool = global_pool
        self.num_hidden_layers = len(self.layers)
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


# ------------------------------------------------------------------------------------------------------- layers
class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _norm(cfg: MADStackConfig) -> nn.Module:
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

    def forward(self, x):
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

    def forward(self, x):
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class MLP(nn.Module):
    def __init__(self, cfg: MADStackConfig):
        super().__init__()
        d = cfg.hidden_size
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def selective_scan(u, delta, A, B, C, D):
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
    def reset_dt(self, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4):
        """Mamba's dt init: bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max] (kept by ``_init_weights``)."""
        dt = torch.exp(torch.rand(self.dt_proj.out_features) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True

    def forward(self, x):
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

    def forward(self, x):
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


# ------------------------------------------------------------------------------------------------------- models
class MADStackPreTrainedModel(PreTrainedModel):
    config_class = MADStackConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["MADBlock"]

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
        elif isinstance(module, nn.Linear):
            if self.config.init == "normal":
                module.weight.normal_(0.0, std)
            if module.bias is not None and not getattr(module.bias, "_no_reinit", False):
                module.bias.zero_()
        elif isinstance(module, (RMSNorm, nn.LayerNorm)):
            module.weight.fill_(1.0)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()


class MADBlock(nn.Module):
    """``x + layer(norm(x))``."""

    def __init__(self, name: str, cfg: MADStackConfig):
        super().__init__()
        self.norm = _norm(cfg)
        self.layer = build_layer(name, cfg)

    def forward(self, x):
        return x + self.layer(self.norm(x))


class MADStackModel(MADStackPreTrainedModel):
    """Embedding + the residual stack (no final norm). ``input_ids [B, L] -> last_hidden_state [B, L, d]``."""

    def __init__(self, config: MADStackConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([MADBlock(n, config) for n in config.layers])
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids=None, inputs_embeds=None, output_hidden_states: bool = False, **kwargs):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        hidden = [x] if output_hidden_states else None
        for block in self.layers:
            x = block(x)
            if hidden is not None:
                hidden.append(x)
        return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(hidden) if hidden else None)


def aligned_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX):
    """Mean CE over non-ignored positions, ``logits [B, L, V]`` vs position-aligned ``targets [B, L]`` (no shift)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=ignore_index)


class MADStackForCausalLM(MADStackPreTrainedModel):
    """mad-lab's ``LanguageModel``: :class:`MADStackModel` + final norm + untied ``Linear(d, V)``.

    ``forward(input_ids, labels=None, shift_labels=None)``: ``shift_labels`` (what :class:`~hf_ext.mad.MADCollator`
    sends, = MAD ``targets``) are position-aligned; ``labels`` alone are shifted as in any transformers causal LM.
    Returns ``CausalLMOutput(loss, logits [B, L, V])``.
    """

    def __init__(self, config: MADStackConfig):
        super().__init__(config)
        self.model = MADStackModel(config)
        self.norm = _norm(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids=None, labels=None, shift_labels=None, inputs_embeds=None,
                output_hidden_states: bool = False, **kwargs):
        out = self.model(input_ids=input_ids, inputs_embeds=inputs_embeds, output_hidden_states=output_hidden_states)
        logits = self.lm_head(self.norm(out.last_hidden_state))
        loss = None
        if shift_labels is not None:
            loss = aligned_cross_entropy(logits, shift_labels)
        elif labels is not None:
            loss = aligned_cross_entropy(logits[:, :-1], labels[:, 1:])
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


def _posemb_sincos_1d(n: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """mad-lab ``posemb_sincos_1d``: ``[n, dim]`` = ``cat(sin(n * omega), cos(n * omega))``."""
    pos = torch.arange(n, dtype=torch.float32)
    omega = 1.0 / (temperature ** (torch.arange(dim // 2, dtype=torch.float32) / (dim // 2 - 1)))
    ang = pos[:, None] * omega[None]
    pe = torch.cat([ang.sin(), ang.cos()], dim=1)
    return F.pad(pe, (0, dim - pe.shape[1]))


class _MADDecoder(nn.Module):
    """mad-lab's hard-coded autoencoder decoder: pooled state + sinusoidal position -> MLP -> norm -> vocab."""

    def __init__(self, cfg: MADStackConfig):
        super().__init__()
        d = cfg.hidden_size
        self.max_len, self.dim = cfg.max_position_embeddings, d
        self.mlp = nn.Sequential(_norm(cfg), nn.Linear(d, d), nn.GELU(), _norm(cfg), nn.Linear(d, d), nn.GELU())
        self.unembed = nn.Sequential(_norm(cfg), nn.Linear(d, cfg.vocab_size))

    def forward(self, code: torch.Tensor, L: int) -> torch.Tensor:
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds the decoder's max_position_embeddings={self.max_len}")
        x = code[:, None, :] + _posemb_sincos_1d(L, self.dim).to(code)[None]
        return self.unembed(self.mlp(x))


class MADAutoEncoder(MADStackPreTrainedModel):
    """mad-lab's ``AutoEncoder`` backbone for the compression task.

    The encoder runs the layer stack over the sequence, ``global_pool="last"`` takes the state at the compression
    token, and a decoder reconstructs every position from it. ``input_ids [B, L] -> logits [B, L, V]``; the loss is
    CE against ``targets``/``shift_labels`` (position-aligned, = the inputs for compression).
    """

    def __init__(self, config: MADStackConfig):
        super().__init__(config)
        if config.global_pool not in ("last", "avg"):
            raise ValueError(f"global_pool must be 'last' or 'avg', got {config.global_pool!r}")
        self.model = MADStackModel(config)
        self.decoder = _MADDecoder(config)
        self.post_init()

    def forward(self, input_ids=None, labels=None, shift_labels=None, targets=None, **kwargs):
        h = self.model(input_ids=input_ids).last_hidden_state
        code = h[:, -1] if self.config.global_pool == "last" else h.mean(1)
        logits = self.decoder(code, input_ids.shape[1])
        t = shift_labels if shift_labels is not None else targets if targets is not None else labels
        loss = aligned_cross_entropy(logits, t) if t is not None else None
        return CausalLMOutput(loss=loss, logits=logits)


class CausalLMAutoEncoder(nn.Module):
    """The compression autoencoder around **any** transformers causal LM (incl. u-μP): the LM's last hidden state at
    the final (compression) token is decoded by mad-lab's decoder. ``input_ids [B, L] -> logits [B, L, V]``.

    Raises:
        ValueError: the model does not return hidden states (``output_hidden_states``), naming its class.

    Example:
        >>> from hf_ext.testing import tiny_causal_lm
        >>> ae = CausalLMAutoEncoder(tiny_causal_lm("gpt2"), vocab_size=16, max_length=32)  # doctest: +SKIP
    """

    def __init__(self, lm: nn.Module, vocab_size: int, max_length: int):
        super().__init__()
        cfg = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
        d = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None)
        if d is None:
            raise ValueError(f"{type(lm).__name__}: its config has no hidden_size; cannot build the compression decoder")
        self.lm = lm
        self.decoder = _MADDecoder(MADStackConfig(layers="mlp", hidden_size=d, vocab_size=vocab_size,
                                                  max_position_embeddings=max_length))

    def forward(self, input_ids=None, shift_labels=None, targets=None, labels=None, **kwargs):
        out = self.lm(input_ids=input_ids, output_hidden_states=True)
        hs = getattr(out, "hidden_states", None)
        if not hs:
            raise ValueError(f"{type(self.lm).__name__} returned no hidden_states; the compression task needs a backbone "
                             "that supports output_hidden_states=True")
        logits = self.decoder(hs[-1][:, -1], input_ids.shape[1])
        t = shift_labels if shift_labels is not None else targets if targets is not None else labels
        loss = aligned_cross_entropy(logits, t) if t is not None else None
        return CausalLMOutput(loss=loss, logits=logits)
