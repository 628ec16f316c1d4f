"""Configuration of a SCAR adapter (sparse conditioned autoencoder, Härle et al. 2024, arXiv 2411.07122).

A :class:`ScarConfig` describes the TopK sparse autoencoder, where it sits in the base model and which latents are
conditioned on which concepts. It names the base model (Hub id / path and revision) like a PEFT ``adapter_config.json``
names ``base_model_name_or_path``; the base model's weights are never saved with the adapter.

Example:
    >>> cfg = ScarConfig(n_inputs=64, layer=1, site="mlp", concepts=["toxicity"], base_model_name_or_path="gpt2")
    >>> cfg.n_latents, cfg.k, cfg.num_concepts
    (384, 32, 1)
"""

from __future__ import annotations

import os
from typing import Any

from transformers import PretrainedConfig

from hf_ext.utils.loading import require_keys
from hf_ext.utils.validation import (
    check_bool,
    check_choice,
    check_elements,
    check_float,
    check_int,
    check_size,
    check_str,
    check_str_list,
)

#: Where the adapter hooks in decoder layer ``layer``: ``"mlp"`` the MLP's output (before it is added to the
#: residual stream), as the released SCAR checkpoint; ``"block"`` the decoder layer's output (the residual stream after
#: the layer), as G-SAE; ``"residual_post"`` the same position under its residual-stream name; ``"residual_pre"``
#: the layer's input (the residual stream before the layer); ``"attention"`` the self-attention module's output
#: (before the residual add); ``"module"`` the output of any submodule, named by ``site_module``
#: (``model.get_submodule(site_module)``).
SITES: tuple[str, ...] = ("mlp", "block", "residual_post", "residual_pre", "attention", "module")
#: How a steered output is built: ``"replace"`` puts the (steered) reconstruction x̂ in place of the activation
#: (the reference; even α = 1 changes generations), ``"error_preserving"`` adds only the steering change to the
#: original activation, x + x̂(steered) − x̂, so α = 1 is exactly the base model.
STEERING_OUTPUTS: tuple[str, ...] = ("replace", "error_preserving")
#: Keys every saved adapter ``config.json`` must have (:meth:`ScarConfig.from_dict`); the ``base_*`` ones may be
#: ``null`` (an adapter built without a base model), but not missing.
REQUIRED_KEYS: tuple[str, ...] = ("n_inputs", "n_latents", "k", "layer", "site", "concepts", "normalize",
                                  "base_model_type", "base_hidden_size", "base_num_layers")


class ScarConfig(PretrainedConfig):
    """Hyper-parameters and placement of a SCAR adapter.

    Args:
        n_inputs: width ``D`` of the hooked activation (the base model's hidden size).
        n_latents: number of SAE latents ``L`` (default ``6 * n_inputs``, the released expansion factor).
        k: latents kept by TopK per token (default ``n_latents // 12``, the released ratio 2048 / 24576).
        layer: 0-based decoder layer (the released checkpoint uses 25 of Llama-3-8B's 32); negative counts from the end.
        site: ``"mlp"`` (MLP output, reference), ``"block"`` / ``"residual_post"`` (decoder-layer output = residual
            stream after the layer), ``"residual_pre"`` (the layer's input), ``"attention"`` (self-attention output)
            or ``"module"`` (the output of the submodule named by ``site_module``); see :data:`SITES`.
        site_module: with ``site="module"``: the dotted name of the hooked submodule, relative to the model the
            adapter is attached to (``model.get_submodule(site_module)``, e.g. ``"model.layers.1.self_attn.o_proj"``);
            its output's last dimension must be ``n_inputs``. ``None`` for the other sites.
        concepts: names of the conditioned latents; latent ``i`` is trained as the logit of concept ``i``
            (``0..C-1``). Default ``["concept"]``.
        normalize: per-token layer normalisation of the input and de-normalisation of the output (the reference
            hard-codes ``True`` whatever its config says; here the flag is honoured).
        eps: added to the standard deviation in the normaliser (1e-5 as the reference).
        steering_output: ``"replace"`` (reference) or ``"error_preserving"``; the default of :meth:`ScarAdapter.steer`.
        bce_weight: weight of the concept BCE term in the training loss (reference: 1).
        pos_grad_scale: multiplier of the BCE gradient on positive tokens (the reference's ``cond_loss_scaling``;
            1 = plain BCE, the G-SAE setting).
        tied_init: initialise ``W_dec = W_encᵀ`` (the reference; the weights are not tied afterwards).
        base_model_name_or_path: Hub id or local path of the base model the adapter was trained on.
        base_model_revision: optional revision (commit / tag) of the base model.
        base_model_type: ``model_type`` of the base model (checked on attach and load).
        base_hidden_size: hidden size of the base model (checked on attach and load).
        base_num_layers: number of decoder layers of the base model (checked on attach and load).

    Raises:
        ValueError: an unknown site or steering output, ``k`` outside ``[1, n_latents]``, fewer latents than
            concepts, non-positive sizes, duplicate concept names.
    """

    model_type = "scar"

    def __init__(
        self,
        n_inputs: int = 64,
        n_latents: int | None = None,
        k: int | None = None,
        layer: int = 0,
        site: str = "mlp",
        site_module: str | None = None,
        concepts: list[str] | None = None,
        normalize: bool = True,
        eps: float = 1e-5,
        steering_output: str = "replace",
        bce_weight: float = 1.0,
        pos_grad_scale: float = 1.0,
        tied_init: bool = True,
        base_model_name_or_path: str | None = None,
        base_model_revision: str | None = None,
        base_model_type: str | None = None,
        base_hidden_size: int | None = None,
        base_num_layers: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.n_inputs = check_size("ScarConfig.n_inputs", n_inputs)  # the defaults below are computed from it
        self.n_latents = 6 * n_inputs if n_latents is None else check_size("ScarConfig.n_latents", n_latents)
        self.k = max(1, self.n_latents // 12) if k is None else k
        self.layer = layer
        self.site = site
        self.site_module = site_module
        self.concepts = ["concept"] if concepts is None else list(concepts) if isinstance(concepts, (list, tuple)) else concepts
        self.normalize = normalize
        self.eps = eps
        self.steering_output = steering_output
        self.bce_weight = bce_weight
        self.pos_grad_scale = pos_grad_scale
        self.tied_init = tied_init
        self.base_model_name_or_path = base_model_name_or_path
        self.base_model_revision = base_model_revision
        self.base_model_type = base_model_type
        self.base_hidden_size = base_hidden_size
        self.base_num_layers = base_num_layers
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)
        self.validate_scar()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> ScarConfig:
        """``PretrainedConfig.from_pretrained`` whose missing-key errors name the folder."""
        kwargs.setdefault("_config_path", f"{pretrained_model_name_or_path}/config.json")
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> ScarConfig:
        """Like ``PretrainedConfig.from_dict``, but a *saved* config (one with ``model_type``) must have every key of
        :data:`REQUIRED_KEYS`: a missing one would silently load a default (layer 0, another ``k``) and turn the
        base-model check off.

        Raises:
            hf_ext.utils.loading.ArtifactError: a saved config without a required key (a ``ValueError``).
        """
        if config_dict.get("model_type") == cls.model_type:
            require_keys(config_dict, REQUIRED_KEYS, kwargs.get("_config_path", "the SCAR config"))
        kwargs.pop("_config_path", None)
        return super().from_dict(config_dict, **kwargs)

    @property
    def num_concepts(self) -> int:
        """Number ``C`` of conditioned latents (``len(concepts)``)."""
        return len(self.concepts)

    def validate_scar(self) -> None:
        """Check the SCAR fields (called by ``__init__``; call again after editing fields by hand)."""
        for name in ("n_inputs", "n_latents", "k"):
            check_size(f"ScarConfig.{name}", getattr(self, name))
        check_elements("the SAE encoder weight [n_latents, n_inputs]", (self.n_latents, self.n_inputs))
        if self.k > self.n_latents:
            raise ValueError(f"ScarConfig.k={self.k} exceeds n_latents={self.n_latents}; TopK keeps at most n_latents "
                             "latents, choose k in [1, n_latents]")
        check_choice("ScarConfig.site", self.site, SITES)  # see the SITES comment
        if self.site == "module" and (not isinstance(self.site_module, str) or not self.site_module):
            raise ValueError(f"site='module' needs site_module, the dotted name of a submodule (e.g. "
                             f"'model.layers.1.self_attn.o_proj'), got site_module={self.site_module!r}")
        if self.site != "module" and self.site_module is not None:
            raise ValueError(f"site_module={self.site_module!r} is only used with site='module', not site={self.site!r}")
        check_choice("ScarConfig.steering_output", self.steering_output, STEERING_OUTPUTS)
        check_int("ScarConfig.layer", self.layer)
        check_str_list("ScarConfig.concepts", self.concepts, unique=True)
        for name in ("normalize", "tied_init"):
            check_bool(f"ScarConfig.{name}", getattr(self, name))
        if self.num_concepts > self.n_latents:
            raise ValueError(f"{self.num_concepts} concepts need at least as many latents, n_latents={self.n_latents}")
        for name in ("base_hidden_size", "base_num_layers"):
            check_size(f"ScarConfig.{name}", getattr(self, name), allow_none=True)
        check_str("ScarConfig.base_model_type", self.base_model_type, allow_none=True)
        for name in ("eps", "bce_weight", "pos_grad_scale"):
            check_float(f"ScarConfig.{name}", getattr(self, name), min=0)

    def concept_index(self, concept: int | str) -> int:
        """Latent index of ``concept`` (a name from :attr:`concepts` or an index ``0..C-1``).

        Raises:
            ValueError: an unknown name or an index outside ``[0, C)``.
        """
        if isinstance(concept, str):
            if concept not in self.concepts:
                raise ValueError(f"unknown concept {concept!r}; this adapter's conditioned concepts are {self.concepts}")
            return self.concepts.index(concept)
        try:
            return check_int("concept", concept, min=0, max=self.num_concepts - 1)
        except ValueError as err:
            raise type(err)(f"concept {concept!r} does not exist: {err} (an index) or a name from {self.concepts}") \
                from None
