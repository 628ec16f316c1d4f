"""SCAR: a TopK sparse conditioned autoencoder attached to any causal LM, for concept detection and steering.

The adapter (:class:`ScarAdapter`) is a PEFT-style module: it is created for, or loaded onto, a base model and hooks
one site of one decoder layer (``site="mlp"``: the MLP output before the residual add, as the released checkpoint;
``site="block"``: the decoder layer's output). It is split along peft's lines: the autoencoder's math
(:mod:`hf_ext.scar.sae`), what the hook does in each mode (:mod:`hf_ext.scar.steering`), detection
(:mod:`hf_ext.scar.detection`) and Hub I/O (:mod:`hf_ext.scar.persistence`); this module places the adapter in a
model and holds :class:`ScarModel`.

Modes, chosen per call through ``contextvars`` (never a mutable attribute, so threads and requests do not interfere):

* **off** (no context active): the hook returns ``None``, the base model's outputs are bit-identical;
* **reconstruct** (:meth:`ScarAdapter.reconstruct`): the activation is replaced by ``x̂``;
* **steer** (:meth:`ScarAdapter.steer`): conditioned latents are scaled (``h_c ← α h_c``) or replaced
  (``h_c ← α``), with ``α`` a scalar or one value per batch row; the output is the steered reconstruction
  (``"replace"``, the reference) or ``x + x̂(steered) − x̂ = x + Σ_c (h'_c − h_c) σ W_dec[:, c]``
  (``"error_preserving"``: the SAE error term is kept, so ``α = 1`` is exactly the base model).

Example:
    >>> import torch
    >>> from hf_ext.testing import tiny_causal_lm
    >>> model = tiny_causal_lm("llama")
    >>> scar = ScarAdapter.for_model(model, layer=1, concepts=["toxicity"], seed=0).attach(model)
    >>> ids = torch.tensor([[1, 5, 6, 7], [1, 8, 9, 10]])
    >>> with scar.steer({"toxicity": torch.tensor([-100.0, 1.0])}, output="error_preserving"):
    ...     steered = model(ids).logits
    >>> torch.equal(steered[1], model(ids).logits[1])  # α = 1 with the error term kept: row 1 is the base model
    True
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import ModelOutput

from hf_ext.utils.logging import get_logger

from ..compat import requested_attn_implementation, split_loading_kwargs
from ..core.anatomy import get_anatomy
from ..core.hooks import activate, current_params, register_hooks
from .configuration_scar import ScarConfig
from .detection import ScarDetection, detect_concepts
from .latent_report import LatentReport, latent_report
from .persistence import ADAPTER_WEIGHTS_NAME, CONFIG_NAME, ScarHubMixin, load_base_model
from .sae import ScarOutput, TopKSAE, nmse
from .sites import site_module
from .steering import (
    STEERING_OPS,
    Steering,
    StopForward,
    parse_steering,
    steering_params,
    transform_activations,
)

logger = get_logger(__name__)

__all__ = [
    "ADAPTER_WEIGHTS_NAME", "CONFIG_NAME", "STEERING_OPS", "ScarAdapter", "ScarDetection", "ScarModel", "ScarOutput",
    "load_reference_checkpoint", "nmse",
]


class ScarAdapter(TopKSAE, ScarHubMixin):
    """A TopK sparse (conditioned) autoencoder (:class:`~hf_ext.scar.sae.TopKSAE`) plus the hook that places it in a
    causal LM, steering, detection and Hub I/O (:class:`~hf_ext.scar.persistence.ScarHubMixin`).

    Args:
        config: a :class:`ScarConfig`.
        seed: seed of the initial weights (encoder: PyTorch's Linear init; decoder = encoderᵀ with ``tied_init``;
            biases zero, as the reference).

    Example:
        >>> scar = ScarAdapter(ScarConfig(n_inputs=16, n_latents=64, k=8), seed=0)
        >>> out = scar(torch.randn(5, 16))
        >>> out.reconstruction.shape, int((out.latents > 0).sum(-1).max()) <= 8
        (torch.Size([5, 16]), True)
    """

    def __init__(self, config: ScarConfig, *, seed: int = 0) -> None:
        super().__init__(config, seed=seed)
        self._token = object()
        self._hooks = None
        object.__setattr__(self, "_attached_to", None)

    # ------------------------------------------------------------------------------------------- construction

    @classmethod
    def for_model(cls, model: nn.Module, *, layer: int, site: str = "mlp", concepts: Sequence[str] | None = None,
                  n_latents: int | None = None, k: int | None = None, seed: int = 0, **config_kwargs: Any) -> ScarAdapter:
        """A fresh adapter sized for ``model`` (``n_inputs`` = its hidden size), naming it as the base model.

        Args:
            model: any causal LM :func:`hf_ext.core.get_anatomy` supports.
            layer: decoder layer (negative counts from the end).
            site: one of :data:`~hf_ext.scar.configuration_scar.SITES` (``"mlp"``, ``"block"``,
                ``"residual_pre"``, ``"attention"``, ``"module"`` …); ``"module"`` takes ``site_module=`` (a name for
                ``model.get_submodule``) among ``config_kwargs``.
            concepts: names of the conditioned latents (default ``["concept"]``).
            n_latents, k: SAE width and TopK (defaults ``6·D`` and ``n_latents // 12``).
            seed: initial weights.
            **config_kwargs: other :class:`ScarConfig` fields (``normalize``, ``steering_output`` …).

        Raises:
            ValueError: layer out of range, unknown site, ``k > n_latents`` …
        """
        anatomy = get_anatomy(model)
        text = anatomy.text_config
        hidden = getattr(text, "hidden_size", None) or getattr(text, "n_embd", None)
        layer = anatomy.resolve_layers(layer)[0] if isinstance(layer, int) and not isinstance(layer, bool) else layer
        name = getattr(text, "_name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
        config = ScarConfig(n_inputs=hidden, n_latents=n_latents, k=k, layer=layer, site=site, concepts=concepts,
                            base_model_name_or_path=name or None, base_model_type=anatomy.family,
                            base_hidden_size=hidden, base_num_layers=anatomy.num_layers, **config_kwargs)
        return cls(config, seed=seed)

    # ------------------------------------------------------------------------------------------- placement

    def _target(self, model: nn.Module) -> nn.Module:
        anatomy = get_anatomy(model)
        n = anatomy.num_layers
        layer = self.config.layer
        if not -n <= layer < n:
            raise ValueError(f"layer {layer} is out of range for {type(model).__name__} with {n} decoder layers; "
                             f"use 0..{n - 1} (or a negative index)")
        text = anatomy.text_config
        hidden = getattr(text, "hidden_size", None) or getattr(text, "n_embd", None)
        # a named module's output may have any width: the SAE's first forward checks it
        if hidden is not None and hidden != self.config.n_inputs and self.config.site != "module":
            raise ValueError(f"base model mismatch: {type(model).__name__} has hidden size {hidden} but this SCAR adapter "
                             f"has n_inputs={self.config.n_inputs} (trained on {self.config.base_model_name_or_path!r}, "
                             f"{self.config.base_model_type}); load it onto the base model named in its config")
        expected = self.config.base_model_type
        if expected is not None and expected != anatomy.family:
            raise ValueError(f"base model mismatch: this SCAR adapter was trained on a {expected!r} model "
                             f"({self.config.base_model_name_or_path!r}) but {type(model).__name__} is {anatomy.family!r}")
        if self.config.base_hidden_size is not None and self.config.base_hidden_size != hidden:
            raise ValueError(f"base model mismatch: the adapter's base model has hidden size "
                             f"{self.config.base_hidden_size}, {type(model).__name__} has {hidden}")
        if self.config.base_num_layers is not None and self.config.base_num_layers != n:
            raise ValueError(f"base model mismatch: the adapter's base model has {self.config.base_num_layers} layers, "
                             f"{type(model).__name__} has {n}")
        return site_module(model, anatomy, self.config.site, layer % n, self.config.site_module)

    def hooked_module(self, model: nn.Module) -> nn.Module:
        """The module of ``model`` whose output (or, for ``"residual_pre"``, input) the adapter hooks."""
        return self._target(model)

    @property
    def is_attached(self) -> bool:
        """Whether the adapter's hooks are on a base model (:meth:`attach`)."""
        return self._hooks is not None

    def attach(self, model: nn.Module) -> ScarAdapter:
        """Register the (dormant) hook on ``model``'s site and move the adapter to the site's device.

        The hook does nothing until :meth:`steer`, :meth:`reconstruct` or :meth:`detect` activates it in the calling
        context, so ``model`` stays bit-identical. The adapter keeps its own dtype (e.g. fp32 on a bf16 base: it
        computes in its dtype and casts the result back); call ``adapter.to(torch.bfloat16)`` to change it.

        Raises:
            ValueError: the layer is out of range, the base model does not match the config, or the adapter is
                already attached (call :meth:`detach` first).
        """
        if self._hooks is not None:
            raise ValueError("this SCAR adapter is already attached; call detach() before attaching it again")
        target = self._target(model)
        param = next(target.parameters(), None)
        if param is not None and param.device != self.encoder.weight.device:
            self.to(param.device)
        if self.config.site == "residual_pre":
            self._hooks = register_hooks(pre_hooks={target: self._pre_hook}, with_kwargs=True)
        else:
            self._hooks = register_hooks({target: self._hook})
        object.__setattr__(self, "_attached_to", model)  # a plain reference: never a submodule, never saved
        return self

    def detach(self) -> ScarAdapter:
        """Remove the hook (idempotent)."""
        if self._hooks is not None:
            self._hooks.remove()
        self._hooks = None
        object.__setattr__(self, "_attached_to", None)
        return self

    def require_attached(self, model: nn.Module | None = None) -> nn.Module:
        """``model``, or the model the adapter is attached to.

        Raises:
            ValueError: the adapter is not attached.
        """
        model = model if model is not None else self._attached_to
        if model is None or self._hooks is None:
            raise ValueError("the SCAR adapter is not attached to a model; call adapter.attach(model) first")
        return model

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> Any:
        params = current_params(self._token)
        if params is None:
            return None
        x = output[0] if isinstance(output, tuple) else output
        new = transform_activations(self, x, params)
        if new is None:
            return None
        if isinstance(output, tuple):
            return (new, *output[1:])
        return new

    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        """The ``residual_pre`` site: the layer's input hidden states (positional or ``hidden_states=``)."""
        params = current_params(self._token)
        if params is None:
            return None
        if args:
            new = transform_activations(self, args[0], params)
            return None if new is None else ((new, *args[1:]), kwargs)
        if "hidden_states" not in kwargs:
            raise ValueError(f"{type(module).__name__} was called without hidden states as its first argument or "
                             "hidden_states=; site='residual_pre' cannot hook it (use site='block' of the layer before)")
        new = transform_activations(self, kwargs["hidden_states"], params)
        return None if new is None else (args, {**kwargs, "hidden_states": new})

    # ------------------------------------------------------------------------------------------- modes

    def parse_steering(self, strengths: Steering, op: str | Mapping = "scale") -> list[tuple[int, torch.Tensor | float, str]]:
        """Normalise a steering request to ``[(latent index, strength, op)]`` (see
        :func:`hf_ext.scar.steering.parse_steering`)."""
        return parse_steering(self.config, strengths, op)

    @contextmanager
    def steer(self, strengths: Steering, *, op: str | Mapping = "scale", output: str | None = None) -> Iterator[ScarAdapter]:
        """Steer conditioned latents inside the ``with`` block (this context only; other threads see the base model).

        Args:
            strengths: ``{concept: α}`` with ``α`` a float or per-row ``[B]`` tensor (``generate()`` repeats rows for
                beams / ``num_return_sequences``), or a bare ``α`` for concept 0. Several concepts at once are applied
                together (unlike the reference, whose list indexing silently does nothing).
            op: ``"scale"`` or ``"replace"`` (or per concept ``{concept: op}``).
            output: ``"replace"`` (the activation becomes the steered reconstruction, reference) or
                ``"error_preserving"`` (``x + x̂(steered) − x̂``); default ``config.steering_output``.

        Example:
            >>> model, tok = tiny_causal_lm("llama", seed=0), tiny_tokenizer()
            >>> scar = ScarAdapter.for_model(model, layer=1, concepts=["toxicity"]).attach(model)
            >>> inputs = tok(["You are"], return_tensors="pt")
            >>> with scar.steer({"toxicity": -100.0}):
            ...     out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
            >>> out.shape[1] <= inputs["input_ids"].shape[1] + 5
            True
        """
        self.require_attached()  # else the base model would run unsteered without a word
        with activate(self._token, steering_params(self, strengths, op, output)):
            yield self

    @contextmanager
    def reconstruct(self) -> Iterator[ScarAdapter]:
        """Replace the hooked activation by the SAE reconstruction ``x̂`` inside the ``with`` block."""
        self.require_attached()
        with activate(self._token, {"mode": "reconstruct"}):
            yield self

    @contextmanager
    def _capture(self, *, activations: bool = False, stop: bool = False) -> Iterator[list]:
        captured: list[torch.Tensor] = []
        with activate(self._token, {"mode": "capture", "captured": captured, "activations": activations, "stop": stop}):
            yield captured

    def run_capture(self, model: nn.Module | None, inputs: Mapping[str, torch.Tensor], *, activations: bool = False
                    ) -> torch.Tensor:
        """Run ``model(**inputs)`` up to the hooked site and return ``[B, T, C]`` concept logits (or ``[B, T, D]``
        activations with ``activations=True``). The rest of the forward is skipped."""
        model = self.require_attached(model)
        ids = inputs["input_ids"]
        with torch.no_grad(), self._capture(activations=activations, stop=True) as captured:
            try:
                model(**inputs, use_cache=False)
            except StopForward:
                pass
        if not captured:
            raise RuntimeError("the SCAR hook did not run; is the adapter attached to this model?")
        return captured[0].reshape(ids.shape[0], ids.shape[1], -1)

    def detect(self, texts: str | Sequence[str] | torch.Tensor, tokenizer: PreTrainedTokenizerBase | None = None, *,
               model: nn.Module | None = None, attention_mask: torch.Tensor | None = None, batch_size: int = 16,
               max_length: int | None = None, progress: bool = False) -> ScarDetection:
        """Per-token and per-sequence concept probabilities ``σ(z_c)`` (see
        :func:`hf_ext.scar.detection.detect_concepts` for the arguments).

        Example:
            >>> model, tok = tiny_causal_lm("llama", seed=0), tiny_tokenizer()
            >>> scar = ScarAdapter.for_model(model, layer=1, concepts=["toxicity"]).attach(model)
            >>> det = scar.detect(["you are awful", "have a nice day"], tok, progress=False)
            >>> det.sequence_probs.shape  # [B, C]; a trained adapter gives the first text the higher probability
            torch.Size([2, 1])
        """
        return detect_concepts(self, texts, tokenizer, model=model, attention_mask=attention_mask,
                               batch_size=batch_size, max_length=max_length, progress=progress)

    def latent_report(self, texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, *,
                      model: nn.Module | None = None, latents: Sequence[int | str] | int | str | None = None,
                      top_k: int = 10, **kwargs: Any) -> LatentReport:
        """Top-activating contexts of ``latents`` (default: the conditioned ones) over ``texts`` (see
        :func:`hf_ext.scar.latent_report.latent_report` for the arguments).

        Example:
            >>> model, tok = tiny_causal_lm("llama", seed=0), tiny_tokenizer()
            >>> scar = ScarAdapter.for_model(model, layer=1, concepts=["toxicity"]).attach(model)
            >>> texts = ["you are awful", "have a nice day"]
            >>> report = scar.latent_report(texts, tok, latents=["toxicity", 17], top_k=5)
            >>> path = report.save("toxicity_latent.html")
        """
        return latent_report(self, texts, tokenizer, model=model, latents=latents, top_k=top_k, **kwargs)

    def extra_repr(self) -> str:
        c = self.config
        return (f"n_inputs={c.n_inputs}, n_latents={c.n_latents}, k={c.k}, layer={c.layer}, site={c.site!r}, "
                f"concepts={c.concepts}, attached={self.is_attached}")


class ScarModel(PreTrainedModel, GenerationMixin):
    """A base causal LM with a SCAR adapter, for ``from_pretrained`` / ``generate`` users.

    ``save_pretrained`` writes only the adapter (config naming the base model + adapter weights); ``from_pretrained``
    loads the base model named in the config (or the one passed as ``model=``) and attaches the adapter.
    ``generate(..., steering={"toxicity": -100})`` steers one call; ``steering`` values may be per-row tensors.

    Example:
        >>> from hf_ext.testing import tiny_causal_lm
        >>> base = tiny_causal_lm("gpt2")
        >>> scar = ScarAdapter.for_model(base, layer=0, concepts=["toxicity"])
        >>> sm = ScarModel(scar.config, model=base, adapter=scar)
        >>> out = sm.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=3, do_sample=False,
        ...                   steering={"toxicity": -100.0})
        >>> out.shape
        torch.Size([1, 6])
    """

    config_class = ScarConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def __init__(self, config: ScarConfig, model: nn.Module | None = None, adapter: ScarAdapter | None = None,
                 **base_kwargs: Any) -> None:
        super().__init__(config)
        if model is None:
            if not config.base_model_name_or_path:
                raise ValueError("ScarModel needs a base model: pass model=... or set config.base_model_name_or_path")
            model = load_base_model(config, **base_kwargs)
        self.model = model
        if adapter is None:
            adapter = ScarAdapter(config)
        if adapter.config is not config:
            adapter.config = config
        self.scar = adapter
        if not adapter.is_attached:
            adapter.attach(model)
        self.generation_config = getattr(model, "generation_config", None)
        self.post_init()

    def init_weights(self) -> None:  # the base model is pretrained and the adapter initialises itself
        return None

    def _init_weights(self, module: nn.Module) -> None:
        return None

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module | None:
        """The base model's LM head."""
        return self.model.get_output_embeddings()

    def get_decoder(self) -> nn.Module:
        return self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model

    @contextmanager
    def _mode(self, steering: Any, steering_op: Any, steering_output: str | None, reconstruct: bool):
        if steering is not None and reconstruct:
            raise ValueError("pass either steering=... or reconstruct=True, not both")
        if steering is not None:
            with self.scar.steer(steering, op=steering_op, output=steering_output):
                yield
        elif reconstruct:
            with self.scar.reconstruct():
                yield
        else:
            yield

    def forward(self, *args: Any, steering: Steering | None = None, steering_op: str | Mapping = "scale",
                steering_output: str | None = None,
                reconstruct: bool = False, **kwargs: Any) -> ModelOutput:
        """The base model's forward; with ``steering`` / ``reconstruct`` the adapter is active for this call."""
        with self._mode(steering, steering_op, steering_output, reconstruct):
            return self.model(*args, **kwargs)

    def generate(self, *args: Any, steering: Steering | None = None, steering_op: str | Mapping = "scale",
                 steering_output: str | None = None,
                 reconstruct: bool = False, **kwargs: Any) -> torch.LongTensor | ModelOutput:
        """``base.generate(...)`` with the adapter steering (or reconstructing) for this call only.

        Args:
            steering: ``{concept: α}`` (float or ``[B]`` per-row tensor), as :meth:`ScarAdapter.steer`.
            steering_op: ``"scale"`` or ``"replace"``.
            steering_output: ``"replace"`` or ``"error_preserving"`` (default: the config's).
            reconstruct: replace the activation by the plain reconstruction.
        """
        with self._mode(steering, steering_op, steering_output, reconstruct):
            return self.model.generate(*args, **kwargs)

    def detect(self, texts: str | Sequence[str] | torch.Tensor, tokenizer: PreTrainedTokenizerBase | None = None,
               **kwargs: Any) -> ScarDetection:
        """:meth:`ScarAdapter.detect` on the wrapped base model."""
        return self.scar.detect(texts, tokenizer, model=self.model, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> Path:  # type: ignore[override]
        """Save the adapter only (see :meth:`ScarAdapter.save_pretrained`)."""
        card_context = {k: v for k, v in kwargs.items() if k in ("description", "evaluation_details", "training_details",
                                                                 "intended_use", "limitations", "repo_id")}
        return self.scar.save_pretrained(save_directory, **card_context)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:  # type: ignore[override]
        """Upload the adapter (see :meth:`ScarAdapter.push_to_hub`)."""
        return self.scar.push_to_hub(repo_id, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any,
                        model: nn.Module | None = None, adapter_dtype: torch.dtype | None = None,
                        revision: str | None = None, adapter_revision: str | None = None,
                        base_model_revision: str | None = None, **kwargs: Any) -> ScarModel:
        """Load the base model named in the adapter's config (or use ``model=``) and attach the adapter.

        ``AutoModelForCausalLM.from_pretrained(<adapter folder or repo>)`` lands here. The base model then loads
        through its own class (``AutoModelForCausalLM`` resolves it from the base's config) with the caller's
        public loading options only: the Auto class's private bookkeeping about the adapter folder
        (``_from_auto``, ``config``, ``adapter_kwargs`` …, see :func:`hf_ext.compat.split_loading_kwargs`) is dropped.

        Args:
            pretrained_model_name_or_path: adapter folder or Hub id.
            model: an already loaded base model (e.g. in bf16, or with a peft LoRA); its family and size must match.
            adapter_dtype: dtype of the adapter (default fp32).
            revision, adapter_revision: revision of the adapter repo (``revision`` is what the Auto classes pass).
            base_model_revision: revision of the base repo (default: the adapter config's ``base_model_revision``).
            **kwargs: download options (``token``, ``cache_dir``, ``local_files_only`` …) for both repos, and base
                loading options (``dtype``, ``device_map``, ``attn_implementation`` …) for the base model.
        """
        if revision is not None and adapter_revision is not None and revision != adapter_revision:
            raise ValueError(f"revision={revision!r} and adapter_revision={adapter_revision!r} both name the adapter's "
                             "revision; pass one (base_model_revision= names the base model's)")
        hub, base_kwargs, dropped = split_loading_kwargs(kwargs)
        attn = requested_attn_implementation(dropped.get("config"))
        if attn is not None:  # the Auto class folded attn_implementation= into the adapter's config
            base_kwargs.setdefault("attn_implementation", attn)
        if dropped.get("subfolder"):
            raise ValueError(f"subfolder={dropped['subfolder']!r} is not supported for SCAR adapters; pass the "
                             "adapter folder itself")
        adapter = ScarAdapter.from_pretrained(pretrained_model_name_or_path, revision=adapter_revision or revision,
                                              dtype=adapter_dtype, **hub)
        cfg = adapter.config
        if model is None:
            if not cfg.base_model_name_or_path:
                raise ValueError(f"{pretrained_model_name_or_path} names no base model (base_model_name_or_path); "
                                 "pass model=<the base causal LM>")
            model = load_base_model(cfg, *model_args, revision=base_model_revision, **hub, **base_kwargs)
        elif base_kwargs or model_args:
            logger.warning(f"ScarModel.from_pretrained(model=...) ignores base-model arguments "
                           f"{sorted(base_kwargs) + [repr(a) for a in model_args]}")
        adapter.attach(model)
        return cls(cfg, model=model, adapter=adapter)


def load_reference_checkpoint(source: str | os.PathLike | Mapping[str, torch.Tensor], model: nn.Module | None = None, **kwargs: Any) -> ScarAdapter:
    """:meth:`ScarAdapter.from_reference_checkpoint` as a function (the same arguments)."""
    return ScarAdapter.from_reference_checkpoint(source, model, **kwargs)
