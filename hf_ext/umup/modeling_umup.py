"""A Llama-style causal LM in u-μP (unit-scaled maximal update parametrization), as a transformers model.

Every weight is initialised ``N(0, 1)`` and the scale lives in the ops (:mod:`hf_ext.umup.functional`):

- embedding: forward unchanged, ``grad_W`` × ``sqrt(V / tokens)``;
- hidden linears: ``y = x Wᵀ / sqrt(fan_in)``; attention projections constrain ``grad_x`` to the forward scale,
  the gated-SiLU MLP's are unconstrained (``grad_x`` × ``1/sqrt(fan_out)``), as unit_scaling's ``MHSA``/``MLP``;
  ``grad_W`` × ``1/sqrt(tokens)``;
- attention: softmax temperature ``α_attn/d_head``, output and q/k/v gradients × ``attention_scale``, RoPE, GQA,
  causal;
- gated SiLU ``x·g·σ(α_ffn·g)`` × ``2^0.75`` (at α = 1);
- residual split/add with the τ of :func:`~hf_ext.umup.functional.residual_taus`, non-affine RMSNorm;
- untied readout ``y = x Wᵀ · α_loss / fan_in`` (α_loss-softmax folded into the returned logits);
- loss: cross-entropy whose logit gradient is ``(softmax − onehot)·V/sqrt(V−1)``.

The constant multipliers are folded: the attention output scale and the residual branch weight go into the
``alpha`` of the following GEMM, the q/k/v and gated-SiLU backward scales into the preceding GEMM's gradient GEMMs,
the residual split's backward weights into the RMSNorm backward. The result is numerically the unit_scaling
graph (tested against it) at the cost of a plain Llama.

Example:
    >>> import torch
    >>> from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM
    >>> cfg = UMupConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    ...                  num_attention_heads=4, umup_attn_seq_len=32)
    >>> model = UMupLlamaForCausalLM(cfg)
    >>> ids = torch.randint(256, (2, 32))
    >>> out = model(ids, labels=ids)
    >>> out.logits.shape, round(float(model.lm_head.weight.std()), 1)
    (torch.Size([2, 32, 256]), 1.0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from hf_ext.core.inputs import check_in_vocabulary
from hf_ext.utils.saving import AtomicSaveMixin

from ..compat import cache_field

if TYPE_CHECKING:
    from transformers import Cache, PretrainedConfig
from . import functional as UF
from .configuration_umup import UMupConfig

_FP8_CODES = {None: UF.FP8_OFF, "simulate": UF.FP8_SIMULATE, "scaled_mm": UF.FP8_SCALED_MM}
# transformers renamed the cache argument/output field past_key_values -> cache (5.2x): see hf_ext.compat.
_CACHE_FIELD = cache_field()

#: Module roles used by :func:`hf_ext.umup.umup_param_groups` (``module._umup_role``).
ROLES: tuple[str, ...] = ("embedding", "hidden", "readout", "norm")


class UMupLinear(nn.Module):
    """A unit-scaled linear layer (weight ``N(0,1)``, bias zeros) with role ``"hidden"`` or ``"readout"``.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        constrain_grad_input: ``grad_x`` scale = forward scale (unit_scaling's ``to_output_scale``) instead of
            ``1/sqrt(fan_out)``.
        readout: μP readout (forward ``1/fan_in``, unconstrained).
        depth: the depth ``D`` whose ``1/sqrt(D)`` multiplies this layer's LR (set for layers inside the decoder).
        fp8: FP8 mode code of :mod:`hf_ext.umup.functional` (0 off).

    ``forward(x, fwd_mult=1, bwd_mult=1, gw_mult=1)``: extra multipliers folded into the GEMMs: ``fwd_mult`` on the
    output (forward only), ``bwd_mult`` on the gradient arriving at the output (both gradient GEMMs), ``gw_mult`` on
    the weight gradient only (for a forward-only scale that the reference applies to this layer's input).

    Shapes: ``x [..., in_features] -> [..., out_features]``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *, constrain_grad_input: bool = True,
                 readout: bool = False, depth: int | None = None, fp8: int = UF.FP8_OFF,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        self._umup_role = "readout" if readout else "hidden"
        self._umup_depth = depth
        self.fp8 = fp8
        if readout:
            self.s_out, self.s_gx = 1.0 / in_features, out_features ** -0.5
        else:
            self.s_out = in_features ** -0.5
            self.s_gx = self.s_out if constrain_grad_input else out_features ** -0.5
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Unit-variance init (u-μP: weights ~ N(0, 1), bias 0; scales live in the forward); not on meta."""
        if self.weight.device.type != "meta":
            nn.init.normal_(self.weight, 0.0, 1.0)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, fwd_mult: float = 1.0, bwd_mult: float = 1.0,
                gw_mult: float = 1.0) -> torch.Tensor:
        tokens = max(1, x.numel() // self.in_features)
        return UF.scaled_linear(x, self.weight, self.bias, self.s_out * fwd_mult, self.s_gx * bwd_mult,
                                tokens ** -0.5 * bwd_mult * gw_mult, self.fp8)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"role={self._umup_role}, s_out={self.s_out:.4g}, s_gx={self.s_gx:.4g}")


class UMupEmbedding(nn.Module):
    """Unit-scaled embedding (weight ``N(0,1)``, ``[vocab, hidden]``); role ``"embedding"`` (LR ``1/sqrt(hidden)``)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        self._umup_role = "embedding"
        self._umup_depth = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Unit-variance init (u-μP: weights ~ N(0, 1); the scales live in the forward); not on meta."""
        if self.weight.device.type != "meta":
            nn.init.normal_(self.weight, 0.0, 1.0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():  # a clear error instead of IndexError / a device assert
            check_in_vocabulary(ids, None, self.num_embeddings, "input_ids")
        return UF.scaled_embedding(ids, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, role=embedding"


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class UMupAttention(nn.Module):
    """Causal multi-head attention (RoPE, GQA) with u-μP scaling; q/k/v/o are :class:`UMupLinear`."""

    def __init__(self, config: UMupConfig, layer_idx: int, depth: int, tau: float) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = (config.num_attention_heads, config.num_key_value_heads,
                                                            config.head_dim)
        h, fp8 = config.hidden_size, _FP8_CODES[config.umup_fp8]
        kw = dict(bias=config.attention_bias, constrain_grad_input=True, depth=depth)
        self.q_proj = UMupLinear(h, self.num_heads * self.head_dim, fp8=fp8, **kw)
        self.k_proj = UMupLinear(h, self.num_kv_heads * self.head_dim, fp8=fp8, **kw)
        self.v_proj = UMupLinear(h, self.num_kv_heads * self.head_dim, fp8=fp8, **kw)
        self.o_proj = UMupLinear(self.num_heads * self.head_dim, h, **kw)  # critical matmul: never FP8
        self.mult = float(config.umup_alpha_attn_softmax)
        self.attn_scale = UF.attention_scale(self.head_dim, config.attn_seq_len, is_causal=True, mult=self.mult)
        self.tau = tau
        self.branch_scale, self.skip_scale = UF.residual_scales(tau)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                is_causal: bool, cache: Any = None) -> torch.Tensor:
        b, s, _ = x.shape
        sa = self.attn_scale
        q = self.q_proj(x, bwd_mult=sa).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x, bwd_mult=sa).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x, bwd_mult=sa).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        if self.num_kv_heads != self.num_heads:
            rep = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                                         scale=self.mult / self.head_dim)
        out = out.transpose(1, 2).reshape(b, s, self.num_heads * self.head_dim)
        # attention's forward-only output scale and the residual branch weight fold into o_proj's forward alpha;
        # o_proj's weight gradient sees the scaled input of the reference graph (gw_mult).
        return self.o_proj(out, fwd_mult=sa * self.branch_scale, gw_mult=sa)


class UMupMLP(nn.Module):
    """Gated-SiLU MLP ``down(silu_glu(up(x), gate(x)))`` with u-μP scaling (unconstrained linears, as ``uu.MLP``)."""

    def __init__(self, config: UMupConfig, depth: int, tau: float) -> None:
        super().__init__()
        h, i, fp8 = config.hidden_size, config.intermediate_size, _FP8_CODES[config.umup_fp8]
        kw = dict(bias=config.mlp_bias, constrain_grad_input=False, depth=depth)
        self.gate_proj = UMupLinear(h, i, fp8=fp8, **kw)
        self.up_proj = UMupLinear(h, i, fp8=fp8, **kw)
        self.down_proj = UMupLinear(i, h, **kw)  # critical matmul: never FP8
        self.mult = float(config.umup_alpha_ffn_act)
        self.glu_scale = UF.glu_scale(self.mult)
        self.tau = tau
        self.branch_scale, self.skip_scale = UF.residual_scales(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.glu_scale
        gate = self.gate_proj(x, bwd_mult=s)
        up = self.up_proj(x, bwd_mult=s)
        act = nn.functional.silu(gate) if self.mult == 1.0 else gate * torch.sigmoid(gate * self.mult)
        return self.down_proj(up * act, fwd_mult=s * self.branch_scale, gw_mult=s)


class UMupDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: ``x → split(τ_attn) → RMSNorm → attention → add``, then the same with the MLP (τ_mlp).

    A ``GradientCheckpointingLayer``: after ``model.gradient_checkpointing_enable()`` its activations are recomputed
    in the backward pass (the unit-scaled autograd functions are deterministic, so loss and gradients are unchanged).
    """

    def __init__(self, config: UMupConfig, layer_idx: int, depth: int, taus: tuple[float, float]) -> None:
        super().__init__()
        self.self_attn = UMupAttention(config, layer_idx, depth, taus[0])
        self.mlp = UMupMLP(config, depth, taus[1])
        self.eps = config.rms_norm_eps

    def forward(self, x, cos, sin, mask, is_causal, cache=None):
        a = self.self_attn
        branch, skip = UF.residual_split_norm(x, a.tau, self.eps)
        x = UF.residual_merge(a(branch, cos, sin, mask, is_causal, cache), skip, a.skip_scale)
        m = self.mlp
        branch, skip = UF.residual_split_norm(x, m.tau, self.eps)
        return UF.residual_merge(m(branch), skip, m.skip_scale)


class UMupPreTrainedModel(AtomicSaveMixin, PreTrainedModel):
    """Base class: unit init (``_init_weights`` draws ``N(0, 1)``), SDPA, no tied weights."""

    config_class = UMupConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["UMupDecoderLayer"]
    _supports_sdpa = True
    _tied_weights_keys: dict = {}
    supports_gradient_checkpointing = True
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (UMupLinear, UMupEmbedding)):
            if not getattr(module.weight, "_is_hf_initialized", False):
                with torch.no_grad():
                    module.weight.normal_(0.0, 1.0)
            bias = getattr(module, "bias", None)
            if bias is not None and not getattr(bias, "_is_hf_initialized", False):
                with torch.no_grad():
                    bias.zero_()


def _depth(config: UMupConfig) -> int:
    return config.num_hidden_layers * (2 if config.umup_depth_convention == "branches" else 1)


class UMupLlamaModel(UMupPreTrainedModel):
    """The decoder: embedding, ``L`` u-μP blocks, final non-affine RMSNorm. Returns the normalised hidden states."""

    def __init__(self, config: UMupConfig) -> None:
        super().__init__(config)
        taus = UF.residual_taus(config.num_hidden_layers, config.umup_alpha_res, config.umup_alpha_res_attn_ratio,
                                config.umup_depth_convention)
        depth = _depth(config)
        self.embed_tokens = UMupEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(UMupDecoderLayer(config, i, depth, (taus[2 * i], taus[2 * i + 1]))
                                    for i in range(config.num_hidden_layers))
        self.post_init()  # embedding accessors: transformers' defaults over ``embed_tokens``

    def _rope_tables(self, position_ids: torch.Tensor, dtype: torch.dtype):
        d = self.config.head_dim
        inv_freq = 1.0 / (self.config.rope_theta ** (torch.arange(0, d, 2, device=position_ids.device,
                                                                   dtype=torch.float32) / d))
        freqs = position_ids.float()[..., None] * inv_freq  # [B, S, d/2]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, S, d]
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, past_key_values: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, use_cache: bool | None = None, cache: Cache | None = None,
                **kwargs: Any) -> BaseModelOutputWithPast:
        """``input_ids [B, S]`` (or ``inputs_embeds [B, S, h]``) → ``last_hidden_state [B, S, h]`` (unit RMS)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        cache = cache if cache is not None else past_key_values
        use_cache = self.config.use_cache if use_cache is None else use_cache
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if use_cache and cache is None and not self.training:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.config)
        b, s = x.shape[:2]
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = (torch.arange(s, device=x.device) + past).unsqueeze(0).expand(b, s)
        cos, sin = self._rope_tables(position_ids, x.dtype)
        mask, is_causal = _attention_mask(attention_mask, b, s, past, x.device)
        want_hidden = kwargs.get("output_hidden_states")
        want_hidden = self.config.output_hidden_states if want_hidden is None else want_hidden
        hidden = [x] if want_hidden else None
        for layer in self.layers:
            x = layer(x, cos, sin, mask, is_causal, cache)
            if hidden is not None:
                hidden.append(x)
        x = UF.rms_norm(x, eps=self.config.rms_norm_eps)
        return BaseModelOutputWithPast(last_hidden_state=x, hidden_states=tuple(hidden) if hidden else None,
                                       **{_CACHE_FIELD: cache if use_cache else None})


def _attention_mask(attention_mask: torch.Tensor | None, b: int, s: int, past: int, device) -> tuple[Any, bool]:
    """``(mask, is_causal)`` for SDPA: ``None, True`` without padding or cache; else a boolean ``[B, 1, S, past+S]``."""
    padded = attention_mask is not None and not bool(attention_mask.bool().all())
    if not padded:
        if past == 0:
            return None, s > 1
        if s == 1:
            return None, False
    kv = past + s
    q_pos = torch.arange(s, device=device)[:, None] + past
    k_pos = torch.arange(kv, device=device)[None, :]
    mask = (k_pos <= q_pos)[None, None].expand(b, 1, s, kv)
    if padded:
        valid = attention_mask[:, -kv:].bool()[:, None, None, :]
        mask = (mask & valid) | (k_pos == q_pos)[None, None]  # a padded query attends to itself: no NaN rows
    return mask, False


class UMupLlamaForCausalLM(UMupPreTrainedModel, GenerationMixin):
    """u-μP Llama with an untied unit-scaled readout; returns α_loss-scaled logits and the unit-scaled loss.

    ``forward(input_ids, attention_mask=None, position_ids=None, labels=None, ...)``:

    - ``logits [B, S, V] = α_loss · lm_head(h) / hidden`` (what the loss and ``generate()`` use);
    - ``loss``: mean next-token cross-entropy over the labels that are not ``-100`` (the same *value* as
      ``LlamaForCausalLM``'s loss on these logits); its gradient wrt each logit is
      ``(softmax − onehot)·V/sqrt(V−1)``, unit-scaled rather than ``1/N``-scaled. Adam is invariant to that
      constant, the unit scale is what makes FP8 gradients representable.

    Train it with :class:`hf_ext.umup.UMupTrainer` or an optimizer over :func:`hf_ext.umup.umup_param_groups`:
    a plain optimizer over ``model.parameters()`` gives every tensor the same LR, which is not u-μP.
    """

    _tied_weights_keys: dict = {}

    def __init__(self, config: UMupConfig) -> None:
        super().__init__(config)
        self.model = UMupLlamaModel(config)
        self.lm_head = UMupLinear(config.hidden_size, config.vocab_size, readout=True)
        # embeddings, LM head and decoder accessors: transformers' defaults (``model.embed_tokens``, ``lm_head``,
        # ``model``)
        self.post_init()

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, past_key_values: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, labels: torch.LongTensor | None = None,
                use_cache: bool | None = None, cache: Cache | None = None, logits_to_keep: int | torch.Tensor = 0,
                return_dict: bool | None = None, **kwargs: Any) -> CausalLMOutputWithPast:
        """See the class docstring. Shapes: ``input_ids [B, S]``, ``labels [B, S]`` (shifted inside)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, cache=cache, inputs_embeds=inputs_embeds,
                         use_cache=use_cache, output_hidden_states=kwargs.get("output_hidden_states"))
        h = out.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            h = h[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            h = h[:, logits_to_keep]
        logits = self.lm_head(h, fwd_mult=float(self.config.umup_alpha_loss_softmax))
        loss = None
        if labels is not None:
            loss = umup_causal_lm_loss(logits, labels, self.config.vocab_size)
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                      **{_CACHE_FIELD: getattr(out, _CACHE_FIELD, None)})


def umup_causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, vocab_size: int,
                        ignore_index: int = -100) -> torch.Tensor:
    """Next-token loss of the (already α_loss-scaled) logits ``[B, S, V]`` and ``labels [B, S]``.

    Value: the mean cross-entropy over non-ignored shifted labels. Gradient wrt each logit:
    ``(softmax − onehot)·V/sqrt(V−1)`` (the unit-scaled rule of ``unit_scaling.functional.cross_entropy``).
    """
    # shift the labels, not the logits (a [B, S-1, V] slice would be a full copy of the logits)
    flat_logits = logits.reshape(-1, logits.shape[-1])
    if flat_logits.dtype != torch.float32:
        flat_logits = flat_logits.float()
    shift_labels = nn.functional.pad(labels, (0, 1), value=ignore_index)[:, 1:].reshape(-1).to(flat_logits.device)
    loss_sum = nn.functional.cross_entropy(flat_logits, shift_labels, ignore_index=ignore_index, reduction="sum")
    n = int((shift_labels != ignore_index).sum())
    return UF.scaled_loss(loss_sum, 1.0 / max(n, 1), UF.cross_entropy_grad_scale(vocab_size))


def convert_llama_to_umup(config: PretrainedConfig, **overrides: Any) -> UMupConfig:
    """A :class:`UMupConfig` with the architecture of a ``LlamaConfig`` (or any Llama-like config).

    Copies vocab/hidden/intermediate sizes, layers, heads, KV heads, head_dim, positions, RMSNorm eps, RoPE theta
    (default RoPE only), biases and special token ids; sets ``tie_word_embeddings=False``. Weights are not
    converted: u-μP trains from its own unit init. ``**overrides`` set any UMupConfig field (e.g. the α's or
    ``umup_attn_seq_len``).

    Raises:
        ValueError: a RoPE scaling type other than default, an activation other than SiLU.

    Example:
        >>> from transformers import LlamaConfig
        >>> cfg = convert_llama_to_umup(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        ...                                         num_attention_heads=4, vocab_size=100), umup_alpha_res=2.0)
        >>> cfg.model_type, cfg.hidden_size, cfg.umup_alpha_res
        ('umup_llama', 64, 2.0)
    """
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if rope_type not in ("default", None):
        raise ValueError(f"convert_llama_to_umup supports the default RoPE only, got rope_type={rope_type!r}")
    theta = (rope.get("rope_theta") if isinstance(rope, dict) else None) or getattr(config, "rope_theta", 10000.0)
    act = getattr(config, "hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"{type(config).__name__}.hidden_act={act!r}: u-μP's MLP is a gated SiLU; only 'silu' converts")
    fields = dict(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        head_dim=getattr(config, "head_dim", None), max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=getattr(config, "rms_norm_eps", 1e-6), rope_theta=float(theta),
        attention_bias=bool(getattr(config, "attention_bias", False)), mlp_bias=bool(getattr(config, "mlp_bias", False)),
        pad_token_id=getattr(config, "pad_token_id", None), bos_token_id=getattr(config, "bos_token_id", None),
        eos_token_id=getattr(config, "eos_token_id", None), tie_word_embeddings=False,
    )
    fields.update(overrides)
    return UMupConfig(**fields)
