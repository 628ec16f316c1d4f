"""Pipeline components of MultiFusion / M-VADER: the projector into the UNet's cross-attention width and the
MAGMA-style encoder (any causal LM + an image prefix + optional bottleneck adapters).

Both are diffusers ``ModelMixin`` + ``ConfigMixin`` classes, so a :class:`~.pipeline_multifusion.MultiFusionPipeline`
saves them with ``save_pretrained`` (safetensors + ``config.json``) and reloads them with ``from_pretrained``.
``ModelMixin``/``ConfigMixin`` are imported *by name* on purpose: diffusers' component loader looks them up in this
module's namespace (``getattr(importlib.import_module(lib), "ModelMixin")``), and a module that only did
``import diffusers`` would save fine but fail to reload.

Example:
    >>> from hf_ext.testing import tiny_causal_lm
    >>> from transformers import CLIPVisionConfig, CLIPVisionModel
    >>> vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
    ...                          num_attention_heads=4, image_size=32, patch_size=8))
    >>> enc = MagmaEncoder.from_parts(tiny_causal_lm("gpt2"), vision, adapter_downsample=4)
    >>> enc.num_image_tokens
    16
"""

from __future__ import annotations

import contextlib
import copy
from typing import TYPE_CHECKING, Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from hf_ext.core.anatomy import get_anatomy
from hf_ext.core.hooks import register_hooks
from hf_ext.utils.validation import check_int, check_size

if TYPE_CHECKING:
    from transformers.modeling_outputs import BaseModelOutputWithPast

__all__ = ["BottleneckAdapter", "ImagePrefix", "MagmaEncoder", "MultiFusionProjector"]

ADAPTER_LOCATIONS = ("mlp", "attention", "both")


class MultiFusionProjector(ModelMixin, ConfigMixin):
    """``Linear(d_lm → cross_attention_dim)`` then ``LayerNorm``: maps encoder hidden states into the UNet's
    cross-attention width (the alternative to building the UNet with ``encoder_hid_dim_type="text_proj"``).

    Args:
        in_dim: encoder width ``d_lm``.
        out_dim: the UNet's ``cross_attention_dim``.
        layer_norm: apply a LayerNorm after the linear map (default True).

    Shapes: ``[B, L, in_dim] -> [B, L, out_dim]``.

    Example:
        >>> proj = MultiFusionProjector(64, 32)
        >>> proj(torch.zeros(2, 5, 64)).shape
        torch.Size([2, 5, 32])
    """

    @register_to_config
    def __init__(self, in_dim: int, out_dim: int, layer_norm: bool = True):
        super().__init__()
        check_size("in_dim", in_dim)
        check_size("out_dim", out_dim)
        self.linear = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim) if layer_norm else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.shape[-1] != self.config.in_dim:
            raise ValueError(f"the projector expects width {self.config.in_dim}, got hidden states of shape "
                             f"{tuple(hidden_states.shape)}")
        return self.norm(self.linear(hidden_states.to(self.linear.weight.dtype)))


class BottleneckAdapter(nn.Module):
    """MAGMA's sequential bottleneck adapter: ``x + W_up(ReLU(W_down x))`` (``magma/adapters.py``).

    Initialised near identity as in MAGMA: weights ~ N(0, 1e-3) clamped to ±2e-3, biases 0.

    Example:
        >>> a = BottleneckAdapter(64, 4)
        >>> x = torch.randn(2, 3, 64)
        >>> (a(x) - x).abs().max() < 1e-3
        tensor(True)
    """

    def __init__(self, dim: int, downsample: int = 4):
        super().__init__()
        hidden = max(1, dim // downsample)
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        for layer in (self.down, self.up):
            with torch.no_grad():
                layer.weight.normal_(0.0, 1e-3).clamp_(-2e-3, 2e-3)
                layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.relu(self.down(x)))


class ImagePrefix(nn.Module):
    """MAGMA's image prefix: vision tower → ``Linear(d_vision → d_lm)`` → dropout → ``LayerNorm`` (``N`` tokens).

    Args:
        vision_model: a transformers vision model returning ``last_hidden_state`` ``[n, T, d_vision]``
            (e.g. ``CLIPVisionModel``).
        lm_dim: the language model's width.
        drop_cls: drop the first output token (CLIP's class token), keeping the patch tokens.
        image_seq_len: if given and different from the tower's token count, adaptive average pooling over the token
            axis gives exactly this many tokens.
        dropout: MAGMA's ``image_embed_dropout_prob`` (0.1 there; active in train mode only).

    Shapes: ``pixel_values [n, C, H, W] -> [n, N, lm_dim]``.
    """

    def __init__(self, vision_model: nn.Module, lm_dim: int, *, drop_cls: bool = True, image_seq_len: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        self.vision_model = vision_model
        vcfg = vision_model.config
        self.drop_cls = drop_cls
        self.image_seq_len = image_seq_len
        self.proj = nn.Linear(vcfg.hidden_size, lm_dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(lm_dim)

    def tower_tokens(self) -> int:
        """Tokens per image before pooling (patches, plus the class token unless dropped)."""
        vcfg = self.vision_model.config
        n = (vcfg.image_size // vcfg.patch_size) ** 2 + 1
        return n - 1 if self.drop_cls else n

    @property
    def num_tokens(self) -> int:
        """Image tokens per image: ``image_seq_len`` if set, else the vision tower's token count."""
        return self.image_seq_len or self.tower_tokens()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.proj.weight.dtype
        feats = self.vision_model(pixel_values=pixel_values.to(dtype)).last_hidden_state
        if self.drop_cls:
            feats = feats[:, 1:]
        if self.image_seq_len is not None and feats.shape[1] != self.image_seq_len:
            feats = nn.functional.adaptive_avg_pool1d(feats.transpose(1, 2), self.image_seq_len).transpose(1, 2)
        return self.norm(self.dropout(self.proj(feats)))


def _auto_model_from_config(config: dict[str, Any]) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    config = dict(config)
    model_type = config.pop("model_type", None)
    if model_type is None:
        raise ValueError("a MagmaEncoder sub-config needs a 'model_type' key (use PreTrainedConfig.to_dict())")
    cfg = AutoConfig.for_model(model_type, **config)
    return AutoModel.from_config(cfg)


class MagmaEncoder(ModelMixin, ConfigMixin):
    """MAGMA/S-MAGMA-style multimodal encoder: a causal LM's decoder, an :class:`ImagePrefix` and optional
    :class:`BottleneckAdapter` s in every block, as a diffusers component (safetensors round trip).

    The language model is the *bare decoder* (``AutoModel``: ``LlamaModel``, ``GPT2Model``, ``GPTNeoXModel`` …): only
    hidden states are needed. Build it from an existing model with :meth:`from_parts`.

    Args:
        text_config: ``PreTrainedConfig.to_dict()`` of the language model (any transformers causal-LM family).
        vision_config: ``to_dict()`` of the vision tower config (e.g. ``CLIPVisionConfig``).
        drop_cls, image_seq_len, image_dropout: see :class:`ImagePrefix`.
        adapter_downsample: bottleneck ratio ``d / d_hidden`` of the adapters; ``None`` = no adapters.
        adapter_location: ``"mlp"`` (after each MLP, MAGMA v1), ``"attention"`` or ``"both"``.

    Forward: see :meth:`forward`. The vision tower is never touched by token weighting (weights act in the LM only).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(self, text_config: dict, vision_config: dict, drop_cls: bool = True, image_seq_len: int | None = None,
                 image_dropout: float = 0.0, adapter_downsample: int | None = None, adapter_location: str = "mlp"):
        super().__init__()
        if adapter_location not in ADAPTER_LOCATIONS:
            raise ValueError(f"adapter_location={adapter_location!r} is not one of {ADAPTER_LOCATIONS}")
        check_int("adapter_downsample", adapter_downsample, min=1, allow_none=True)
        self.language_model = _auto_model_from_config(text_config)
        vision_model = _auto_model_from_config(vision_config)
        hidden = self.language_model.config.hidden_size
        self.image_prefix = ImagePrefix(vision_model, hidden, drop_cls=drop_cls, image_seq_len=image_seq_len,
                                        dropout=image_dropout)
        n_layers = self.language_model.config.num_hidden_layers
        self.mlp_adapters = self.attn_adapters = None
        if adapter_downsample is not None:
            if adapter_location in ("mlp", "both"):
                self.mlp_adapters = nn.ModuleList(BottleneckAdapter(hidden, adapter_downsample) for _ in range(n_layers))
            if adapter_location in ("attention", "both"):
                self.attn_adapters = nn.ModuleList(BottleneckAdapter(hidden, adapter_downsample) for _ in range(n_layers))
        self._adapter_hooks = None  # HookHandle of the bottleneck adapters (hf_ext.core.hooks)
        self._install_adapter_hooks()

    # ---------------------------------------------------------------------------------------------- building
    @classmethod
    def from_parts(cls, language_model: nn.Module, vision_model: nn.Module, **kwargs: Any) -> MagmaEncoder:
        """Wrap an existing causal LM (with or without head) and vision tower; their weights are kept (shared).

        Args:
            language_model: e.g. ``AutoModelForCausalLM.from_pretrained(...)`` or a bare ``LlamaModel``; its
                ``base_model`` (the decoder) is used.
            vision_model: e.g. ``CLIPVisionModel.from_pretrained(...)``.
            **kwargs: the other ``__init__`` arguments (``adapter_downsample`` …).

        Example:
            >>> from hf_ext.testing import tiny_causal_lm
            >>> from transformers import CLIPVisionConfig, CLIPVisionModel
            >>> v = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
            ...                     num_attention_heads=4, image_size=32, patch_size=8))
            >>> MagmaEncoder.from_parts(tiny_causal_lm("llama"), v).language_model.__class__.__name__
            'LlamaModel'
        """
        base = getattr(language_model, "base_model", language_model)
        if not hasattr(base, "config") or not hasattr(vision_model, "config"):
            raise TypeError(f"from_parts needs transformers models, got {type(language_model).__name__} and "
                            f"{type(vision_model).__name__}")
        text_cfg = base.config.to_dict()
        vision_cfg = vision_model.config.to_dict()
        try:
            from accelerate import init_empty_weights
            ctx = init_empty_weights()
        except ImportError:  # pragma: no cover - accelerate is a core dependency
            ctx = contextlib.nullcontext()
        with ctx:
            encoder = cls(text_config=text_cfg, vision_config=vision_cfg, **kwargs)
        # adapters / projection / norm were created empty: materialise them on CPU with their proper init
        encoder.language_model = base
        encoder.image_prefix.vision_model = vision_model
        dim = base.config.hidden_size
        prefix = encoder.image_prefix
        prefix.proj = nn.Linear(vision_model.config.hidden_size, dim)
        prefix.norm = nn.LayerNorm(dim)
        ratio = kwargs.get("adapter_downsample")
        for name in ("mlp_adapters", "attn_adapters"):
            if getattr(encoder, name) is not None:
                setattr(encoder, name, nn.ModuleList(BottleneckAdapter(dim, ratio) for _ in range(base.config.num_hidden_layers)))
        device = next(base.parameters()).device
        dtype = next(base.parameters()).dtype
        for module in (prefix.proj, prefix.norm, encoder.mlp_adapters, encoder.attn_adapters):
            if module is not None:
                module.to(device=device, dtype=dtype)
        encoder._install_adapter_hooks()
        return encoder.train(base.training)

    def _install_adapter_hooks(self) -> None:
        if self._adapter_hooks is not None:
            self._adapter_hooks.remove()
        self._adapter_hooks = None
        if self.mlp_adapters is None and self.attn_adapters is None:
            return
        anatomy = get_anatomy(self.language_model)
        for kind, modules in (("mlp_adapters", anatomy.mlp_outputs), ("attn_adapters", anatomy.attentions)):
            missing = [i for i, m in enumerate(modules) if m is None]
            if getattr(self, kind) is not None and missing:
                raise ValueError(f"MAGMA {kind} need an {'MLP' if kind == 'mlp_adapters' else 'attention'} in every "
                                 f"decoder layer, but layers {missing} of {anatomy.family!r} "
                                 f"({type(self.language_model).__name__}) have none")
        hooks = {}
        for i in range(anatomy.num_layers):
            if self.mlp_adapters is not None:
                hooks[anatomy.mlp_outputs[i]] = self._make_hook("mlp_adapters", i)
            if self.attn_adapters is not None:
                hooks[anatomy.attentions[i]] = self._make_hook("attn_adapters", i)
        self._adapter_hooks = register_hooks(hooks)

    def _make_hook(self, name: str, index: int):
        def hook(module, args, output):
            adapter = getattr(self, name)[index]
            if isinstance(output, tuple):
                return (adapter(output[0]),) + tuple(output[1:])
            return adapter(output)

        return hook

    def __deepcopy__(self, memo):  # hooks close over ``self``: re-install them on the copy
        cls = self.__class__
        new = cls.__new__(cls)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key != "_adapter_hooks":
                new.__dict__[key] = copy.deepcopy(value, memo)
        new.__dict__["_adapter_hooks"] = None
        if self._adapter_hooks is not None:  # the copied modules carry this encoder's hook functions
            self._adapter_hooks.remove_from(new.language_model)
        new._install_adapter_hooks()
        return new

    # ---------------------------------------------------------------------------------------------- properties
    @property
    def num_image_tokens(self) -> int:
        """Prefix tokens per image (``N``)."""
        return self.image_prefix.num_tokens

    @property
    def hidden_size(self) -> int:
        """Hidden size of the language model (the width of the encoder's outputs)."""
        return self.language_model.config.hidden_size

    def get_input_embeddings(self) -> nn.Module:
        """The language model's token embedding module."""
        return self.language_model.get_input_embeddings()

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[n, C, H, W] -> [n, N, d_lm]`` image prefix embeddings."""
        return self.image_prefix(pixel_values)

    # ---------------------------------------------------------------------------------------------- forward
    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, pixel_values: torch.Tensor | None = None,
                image_mask: torch.Tensor | None = None, output_hidden_states: bool = True) -> BaseModelOutputWithPast:
        """Embed text ids, scatter the image prefixes into the ``image_mask`` slots (row-major, images in order) and
        run the decoder.

        Args:
            input_ids: ``[B, L]`` (values at image slots are ignored).
            attention_mask: ``[B, L]`` 1 real / 0 padding.
            position_ids: ``[B, L]``.
            pixel_values: ``[n_images, C, H, W]``.
            image_mask: ``[B, L]`` bool, ``N`` slots per image.

        Returns:
            The decoder's ``BaseModelOutputWithPast`` (``hidden_states`` = embeddings + every layer).
        """
        embed = self.get_input_embeddings()
        ids = input_ids
        if image_mask is not None:
            ids = input_ids.masked_fill(image_mask, 0)
        embeds = embed(ids)
        if image_mask is not None and bool(image_mask.any()):
            if pixel_values is None:
                raise ValueError("image_mask has image slots but no pixel_values were given")
            prefix = self.embed_images(pixel_values).to(embeds.dtype)
            n_slots = int(image_mask.sum())
            if prefix.shape[0] * prefix.shape[1] != n_slots:
                raise ValueError(f"{prefix.shape[0]} images × {prefix.shape[1]} tokens do not fill the {n_slots} image slots")
            embeds = embeds.masked_scatter(image_mask.unsqueeze(-1).expand_as(embeds), prefix.reshape(-1, prefix.shape[-1]))
        return self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                                   output_hidden_states=output_hidden_states, use_cache=False)
