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

The configuration is :mod:`hf_ext.mad.configuration_mad`, the layers :mod:`hf_ext.mad.layers`; both re-exported here.

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

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

from .config import IGNORE_INDEX
from .configuration_mad import LAYER_ALIASES, LAYER_TYPES, SEQUENCE_MIXERS, MADStackConfig, parse_layers
from .layers import (
    MLP,
    Attention,
    Hyena,
    HyenaFilter,
    Mamba,
    RMSNorm,
    SwiGLU,
    build_layer,
    fftconv,
    make_norm,
    selective_scan,
)

__all__ = [
    "LAYER_ALIASES", "LAYER_TYPES", "MLP", "SEQUENCE_MIXERS", "Attention", "CausalLMAutoEncoder", "Hyena", "HyenaFilter",
    "MADAutoEncoder", "MADBlock", "MADStackConfig", "MADStackForCausalLM", "MADStackModel", "MADStackPreTrainedModel",
    "Mamba", "RMSNorm", "SwiGLU", "aligned_cross_entropy", "build_layer", "fftconv", "parse_layers", "selective_scan",
]


class MADStackPreTrainedModel(PreTrainedModel):
    """Base class of the MAD stack models: config class, weight init and the transformers loading hooks."""
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
        self.norm = make_norm(cfg)
        self.layer = build_layer(name, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, d] -> [B, L, d]``."""
        return x + self.layer(self.norm(x))


class MADStackModel(MADStackPreTrainedModel):
    """Embedding + the residual stack (no final norm). ``input_ids [B, L] -> last_hidden_state [B, L, d]``."""

    def __init__(self, config: MADStackConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([MADBlock(n, config) for n in config.layers])
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding (``embed_tokens``)."""
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace the token embedding (transformers' ``resize_token_embeddings``)."""
        self.embed_tokens = value

    def forward(self, input_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
                output_hidden_states: bool = False, **kwargs: Any) -> BaseModelOutput:
        """``input_ids [B, L]`` (or ``inputs_embeds [B, L, d]``, exactly one of them) → ``BaseModelOutput``
        with ``last_hidden_state [B, L, d]`` (and the input of every block plus the last output with
        ``output_hidden_states``). Other keywords (``attention_mask`` …) are accepted and ignored."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        hidden = [x] if output_hidden_states else None
        for block in self.layers:
            x = block(x)
            if hidden is not None:
                hidden.append(x)
        return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(hidden) if hidden else None)


def aligned_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX
                          ) -> torch.Tensor:
    """Mean CE over non-ignored positions, ``logits [B, L, V]`` vs position-aligned ``targets [B, L]`` (no shift)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=ignore_index)


class MADStackForCausalLM(MADStackPreTrainedModel, GenerationMixin):
    """mad-lab's ``LanguageModel``: :class:`MADStackModel` + final norm + untied ``Linear(d, V)``.

    ``forward(input_ids, labels=None, shift_labels=None, targets=None)``: ``shift_labels`` (what
    :class:`~hf_ext.mad.MADCollator` sends) and ``targets`` (the MAD dataset column) are position-aligned;
    ``labels`` alone are shifted as in any transformers causal LM. Returns ``CausalLMOutput(loss, logits [B, L, V])``.

    Because ``targets`` is a ``forward`` argument, a plain ``Trainer`` with default ``TrainingArguments``
    (``remove_unused_columns=True``) keeps a MAD dataset's ``targets`` column and trains on it; for ``evaluate`` to
    report ``eval_loss`` pass ``label_names=["targets"]`` (Trainer's default label names are ``labels``-like).

    ``generate()`` works (``GenerationMixin``) without a KV cache: every step re-runs the whole prefix (Hyena's FFT
    convolution and Mamba's scan have no incremental state here), so it is O(L^2) in the generated length. The
    layers do not read ``attention_mask``: generate from unpadded (equal-length) prompts.

    Example:
        >>> import torch
        >>> cfg = MADStackConfig(layers="hyena,swiglu", hidden_size=16, vocab_size=12, max_position_embeddings=32)
        >>> model = MADStackForCausalLM(cfg).eval()
        >>> model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False).shape
        torch.Size([1, 7])
    """

    _supports_cache_class = False

    def __init__(self, config: MADStackConfig):
        super().__init__(config)
        self.model = MADStackModel(config)
        self.norm = make_norm(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding of the inner :class:`MADStackModel`."""
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        """The LM head (``lm_head``), for transformers' weight tying and resizing."""
        return self.lm_head

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, inputs_embeds: torch.Tensor | None = None,
                                      **kwargs: Any) -> dict[str, torch.Tensor]:
        """The whole prefix at every step (no cache); ``inputs_embeds`` only before the first generated token."""
        if inputs_embeds is not None and input_ids.shape[1] == 0:
            return {"inputs_embeds": inputs_embeds}
        return {"input_ids": input_ids}

    def forward(self, input_ids: torch.LongTensor | None = None, labels: torch.LongTensor | None = None,
                shift_labels: torch.LongTensor | None = None, targets: torch.LongTensor | None = None,
                inputs_embeds: torch.Tensor | None = None, output_hidden_states: bool = False,
                **kwargs: Any) -> CausalLMOutput:
        """``input_ids [B, L]`` → ``CausalLMOutput(logits [B, L, V], loss)``; the loss uses ``shift_labels`` or
        ``targets`` (position-aligned, ``-100`` ignored), else ``labels`` shifted by one."""
        out = self.model(input_ids=input_ids, inputs_embeds=inputs_embeds, output_hidden_states=output_hidden_states)
        logits = self.lm_head(self.norm(out.last_hidden_state))
        loss = None
        aligned = shift_labels if shift_labels is not None else targets
        if aligned is not None:
            loss = aligned_cross_entropy(logits, aligned)
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
        self.mlp = nn.Sequential(make_norm(cfg), nn.Linear(d, d), nn.GELU(), make_norm(cfg), nn.Linear(d, d), nn.GELU())
        self.unembed = nn.Sequential(make_norm(cfg), nn.Linear(d, cfg.vocab_size))

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

    def forward(self, input_ids: torch.LongTensor | None = None, labels: torch.LongTensor | None = None,
                shift_labels: torch.LongTensor | None = None, targets: torch.LongTensor | None = None,
                **kwargs: Any) -> CausalLMOutput:
        """``input_ids [B, L]`` (required) → ``CausalLMOutput(logits [B, L, V], loss)``; the loss is CE against the
        first of ``shift_labels``, ``targets``, ``labels`` given (all position-aligned, ``-100`` ignored)."""
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
        >>> ae = CausalLMAutoEncoder(tiny_causal_lm("gpt2"), vocab_size=16, max_length=32)
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

    def forward(self, input_ids: torch.LongTensor | None = None, shift_labels: torch.LongTensor | None = None,
                targets: torch.LongTensor | None = None, labels: torch.LongTensor | None = None,
                **kwargs: Any) -> CausalLMOutput:
        """``input_ids [B, L]`` (required) → ``CausalLMOutput(logits [B, L, V], loss)``; the loss is CE against the
        first of ``shift_labels``, ``targets``, ``labels`` given (all position-aligned, ``-100`` ignored)."""
        out = self.lm(input_ids=input_ids, output_hidden_states=True)
        hs = getattr(out, "hidden_states", None)
        if not hs:
            raise ValueError(f"{type(self.lm).__name__} returned no hidden_states; the compression task needs a backbone "
                             "that supports output_hidden_states=True")
        logits = self.decoder(hs[-1][:, -1], input_ids.shape[1])
        t = shift_labels if shift_labels is not None else targets if targets is not None else labels
        loss = aligned_cross_entropy(logits, t) if t is not None else None
        return CausalLMOutput(loss=loss, logits=logits)
