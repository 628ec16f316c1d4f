"""SCAR: a TopK sparse conditioned autoencoder attached to any causal LM, for concept detection and steering.

The adapter (:class:`ScarAdapter`) is a PEFT-style module: it is created for, or loaded onto, a base model and hooks
one site of one decoder layer (``site="mlp"``: the MLP output before the residual add, as the released checkpoint;
``site="block"``: the decoder layer's output). Per token ``x ∈ R^D`` (reference ``ml-research/SCAR``, spec §3):

1. ``μ = mean(x)``, ``σ = std(x)`` (unbiased), ``x̃ = (x − μ) / (σ + ε)`` (only with ``normalize=True``);
2. ``z = W_enc (x̃ − b_pre) + b_lat`` (``[L]``); latents ``0..C-1`` are trained as concept logits, ``p_c = σ(z_c)``;
3. ``h = ReLU(TopK_k(z))`` (``h ≥ 0``, at most ``k`` non-zeros);
4. ``x̂ = (W_dec h + b_pre) · σ + μ`` (the decoder multiplies by ``σ``, the encoder divided by ``σ + ε``).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from hf_ext.utils.logging import get_logger

from ..compat import requested_attn_implementation, split_loading_kwargs
from ..core.anatomy import get_anatomy
from ..core.hooks import activate, current_params, rows
from .configuration_scar import STEERING_OUTPUTS, ScarConfig

logger = get_logger(__name__)

__all__ = ["ADAPTER_WEIGHTS_NAME", "ScarAdapter", "ScarDetection", "ScarModel", "ScarOutput", "nmse"]

#: File name of the adapter weights (safetensors) next to ``config.json``.
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "config.json"
_SNAPSHOT_KWARGS = ("token", "cache_dir", "local_files_only", "force_download")
STEERING_OPS: tuple[str, ...] = ("scale", "replace")


def nmse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-token normalised MSE ``mean_d((x̂ − x)²) / mean_d(x²)`` (``[...]``, last dim reduced).

    Example:
        >>> x = torch.randn(3, 8)
        >>> nmse(x, x).tolist(), nmse(torch.zeros_like(x), x).tolist()
        ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    """
    return (x_hat - x).pow(2).mean(-1) / x.pow(2).mean(-1).clamp_min(torch.finfo(x.dtype).tiny)


@dataclass
class ScarOutput(ModelOutput):
    """Result of :meth:`ScarAdapter.forward` on ``N`` activations.

    Attributes:
        loss: scalar ``nmse + bce_weight * bce`` (``nmse`` alone without labels).
        nmse: scalar mean NMSE.
        bce: scalar BCE of the conditioned logits (``None`` without labels).
        reconstruction: ``[N, D]`` ``x̂``.
        latents: ``[N, L]`` ``h`` (post TopK + ReLU).
        pre_activations: ``[N, L]`` ``z``.
    """

    loss: torch.Tensor | None = None
    nmse: torch.Tensor | None = None
    bce: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    latents: torch.Tensor | None = None
    pre_activations: torch.Tensor | None = None


@dataclass
class ScarDetection:
    """Concept probabilities ``σ(z_c)`` from :meth:`ScarAdapter.detect`.

    Attributes:
        token_probs: ``[B, T, C]`` float32 per-token probabilities (0 on padding).
        mask: ``[B, T]`` bool, True on real tokens (prompts are left-padded).
        sequence_probs: ``[B, C]`` mean of ``token_probs`` over real tokens.
        input_ids: ``[B, T]`` the token ids.
        concepts: the concept names (``C``).
    """

    token_probs: torch.Tensor
    mask: torch.Tensor
    sequence_probs: torch.Tensor
    input_ids: torch.Tensor
    concepts: list[str]

    def for_concept(self, concept: int | str = 0) -> torch.Tensor:
        """``[B]`` sequence probabilities of one concept (name or index)."""
        index = concept if isinstance(concept, int) else self.concepts.index(concept)
        return self.sequence_probs[:, index]


class _StopForward(Exception):
    """Raised by a capture hook to skip the rest of the base model once the hooked site has run."""


def _check_strength(value: Any, name: str) -> torch.Tensor | float:
    if isinstance(value, bool):
        raise TypeError(f"steering strength for {name} must be a number or a 1-D tensor of per-row values, got a bool")
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"steering strength for {name} must be finite, got {value!r}")
        return float(value)
    if isinstance(value, (list, tuple)):
        value = torch.tensor(value, dtype=torch.float32)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"steering strength for {name} must be a float, a list or a 1-D tensor (one per batch row), "
                        f"got {type(value).__name__}")
    if value.dim() > 1 or value.numel() == 0:
        raise ValueError(f"steering strength for {name} must be a scalar or 1-D (one value per batch row), got shape "
                         f"{tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise ValueError(f"steering strengths for {name} must be finite, got {value.tolist()}")
    return value.float()


class ScarAdapter(nn.Module):
    """A TopK sparse (conditioned) autoencoder plus the hook that places it in a causal LM.

    Parameters (state-dict keys as the reference's ``SAE`` module): ``encoder.weight`` ``[L, D]``,
    ``decoder.weight`` ``[D, L]``, ``pre_bias`` ``[D]``, ``latent_bias`` ``[L]``.

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
        super().__init__()
        if not isinstance(config, ScarConfig):
            raise TypeError(f"ScarAdapter needs a ScarConfig, got {type(config).__name__}")
        config.validate_scar()
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = nn.Linear(config.n_inputs, config.n_latents, bias=False)
            self.decoder = nn.Linear(config.n_latents, config.n_inputs, bias=False)
        self.pre_bias = nn.Parameter(torch.zeros(config.n_inputs))
        self.latent_bias = nn.Parameter(torch.zeros(config.n_latents))
        with torch.no_grad():
            if config.tied_init:
                self.decoder.weight.copy_(self.encoder.weight.t())
        self._token = object()
        self._handle = None
        object.__setattr__(self, "_attached_to", None)

    # ------------------------------------------------------------------------------------------- construction

    @classmethod
    def for_model(cls, model: nn.Module, *, layer: int, site: str = "mlp", concepts: Sequence[str] | None = None,
                  n_latents: int | None = None, k: int | None = None, seed: int = 0, **config_kwargs: Any) -> ScarAdapter:
        """A fresh adapter sized for ``model`` (``n_inputs`` = its hidden size), naming it as the base model.

        Args:
            model: any causal LM :func:`hf_ext.core.get_anatomy` supports.
            layer: decoder layer (negative counts from the end).
            site: ``"mlp"`` or ``"block"``.
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

    # ------------------------------------------------------------------------------------------- the SAE

    @property
    def num_concepts(self) -> int:
        return self.config.num_concepts

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x̃, μ, σ)`` with ``x̃ = (x − μ) / (σ + ε)`` per token (identity, 0, 1 with ``normalize=False``)."""
        if not self.config.normalize:
            one = torch.ones((), dtype=x.dtype, device=x.device)
            return x, torch.zeros((), dtype=x.dtype, device=x.device), one
        mu = x.mean(-1, keepdim=True)
        sd = x.std(-1, keepdim=True)
        return (x - mu) / (sd + self.config.eps), mu, sd

    def pre_activations(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z, μ, σ)``: ``z = W_enc (x̃ − b_pre) + b_lat``, ``[..., L]``."""
        xn, mu, sd = self.normalize(x)
        return F.linear(xn - self.pre_bias, self.encoder.weight) + self.latent_bias, mu, sd

    def topk(self, z: torch.Tensor) -> torch.Tensor:
        """``h = ReLU(TopK_k(z))``: the ``k`` largest entries of ``z`` through a ReLU, zeros elsewhere."""
        values, indices = z.topk(self.config.k, dim=-1)
        return torch.zeros_like(z).scatter(-1, indices, values.relu())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(h, z, μ, σ)`` for activations ``x`` ``[..., D]`` (computed in the adapter's dtype)."""
        z, mu, sd = self.pre_activations(x)
        return self.topk(z), z, mu, sd

    def decode(self, h: torch.Tensor, mu: torch.Tensor | float = 0.0, sd: torch.Tensor | float = 1.0) -> torch.Tensor:
        """``x̂ = (W_dec h + b_pre) · σ + μ`` (``[..., D]``)."""
        return (F.linear(h, self.decoder.weight) + self.pre_bias) * sd + mu

    def _decoder_rows(self) -> torch.Tensor:
        """``W_decᵀ`` ``[L, D]`` contiguous (cached until the decoder weight changes), for the sparse decode."""
        w = self.decoder.weight
        key = (w.data_ptr(), w._version, w.device, w.dtype)
        cached = self.__dict__.get("_dec_rows")
        if cached is None or cached[0] != key:
            cached = (key, w.detach().t().contiguous())
            self.__dict__["_dec_rows"] = cached
        return cached[1]

    def decode_topk(self, values: torch.Tensor, indices: torch.Tensor, mu: torch.Tensor | float = 0.0,
                    sd: torch.Tensor | float = 1.0) -> torch.Tensor:
        """:meth:`decode` of ``h = ReLU(TopK(z))`` given the top-k ``values``/``indices`` ``[N, k]`` (inference only).

        Reads only the ``k`` decoder columns each token uses (``embedding_bag`` over ``W_decᵀ``): ``k·D`` instead of
        ``L·D`` multiply-adds; equal to the dense decode up to float summation order.
        """
        if torch.is_grad_enabled() and self.decoder.weight.requires_grad or 2 * self.config.k > self.config.n_latents:
            h = torch.zeros(values.shape[0], self.config.n_latents, dtype=values.dtype, device=values.device)
            return self.decode(h.scatter(-1, indices, values.relu()), mu, sd)
        rows_ = self._decoder_rows()
        out = F.embedding_bag(indices, rows_, per_sample_weights=values.relu().to(rows_.dtype), mode="sum")
        return (out + self.pre_bias) * sd + mu

    def concept_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., C]`` the conditioned pre-activations ``z_0..z_{C-1}`` (concept logits) of activations ``x``."""
        return self.pre_activations(x.to(self.encoder.weight.dtype))[0][..., : self.num_concepts]

    def forward(self, activations: torch.Tensor, labels: torch.Tensor | None = None) -> ScarOutput:
        """Reconstruct ``activations`` ``[N, D]`` and, with ``labels``, compute the SCAR training loss.

        Loss (spec §4): ``NMSE(x̂, x) + bce_weight · BCE(z_{0..C-1}, y)`` averaged over tokens, NMSE in the
        original (un-normalised) space, BCE in logits form. Labels ``[N]`` (one concept) or ``[N, C]``; negative
        labels (the reference's "no label" −1 of Wikitext tokens) count as 0, as ``toxicity * (toxicity >= 0)`` does.
        With ``pos_grad_scale = s`` (the reference's ``cond_loss_scaling``) the BCE gradient of positive tokens is
        multiplied by ``s`` (only the BCE path, not the reconstruction's).

        Args:
            activations: ``[N, D]`` (or ``[..., D]``) activations at the hooked site.
            labels: optional ``[N]`` / ``[N, C]`` concept labels in ``{−1, 0, 1}`` (or probabilities).

        Returns:
            :class:`ScarOutput`.

        Raises:
            ValueError: a last dim other than ``n_inputs``, or labels whose shape does not match.
        """
        if activations.shape[-1] != self.config.n_inputs:
            raise ValueError(f"activations have width {activations.shape[-1]} but the adapter expects "
                             f"n_inputs={self.config.n_inputs}")
        x = activations.to(self.encoder.weight.dtype).reshape(-1, self.config.n_inputs)
        h, z, mu, sd = self.encode(x)
        x_hat = self.decode(h, mu, sd)
        rec = nmse(x_hat, x).mean()
        loss, bce = rec, None
        if labels is not None:
            y = labels.to(z.dtype).reshape(x.shape[0], -1)
            if y.shape[1] != self.num_concepts:
                raise ValueError(f"labels have {y.shape[1]} columns per token but the adapter has {self.num_concepts} "
                                 f"concepts {self.config.concepts}; pass [N] or [N, C] labels")
            y = y * (y >= 0)
            logits = z[:, : self.num_concepts]
            scale = self.config.pos_grad_scale
            if scale != 1.0 and logits.requires_grad:
                factor = torch.where(y > 0, torch.full_like(y, scale), torch.ones_like(y))
                logits.register_hook(lambda grad: grad * factor)
            bce = F.binary_cross_entropy_with_logits(logits, y)
            loss = rec + self.config.bce_weight * bce
        return ScarOutput(loss=loss, nmse=rec.detach(), bce=None if bce is None else bce.detach(), reconstruction=x_hat,
                          latents=h, pre_activations=z)

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
        if hidden is not None and hidden != self.config.n_inputs:
            raise ValueError(f"base model mismatch: {type(model).__name__} has hidden size {hidden} but this SCAR adapter "
                             f"has n_inputs={self.config.n_inputs} (trained on {self.config.base_model_name_or_path!r}, "
                             f"{self.config.base_model_type}); load it onto the base model named in its config")
        expected = self.config.base_model_type
        if expected is not None and expected != anatomy.family:
            raise ValueError(f"base model mismatch: this SCAR adapter was trained on a {expected!r} model "
                             f"({self.config.base_model_name_or_path!r}) but {type(model).__name__} is {anatomy.family!r}")
        if self.config.base_num_layers is not None and self.config.base_num_layers != n:
            raise ValueError(f"base model mismatch: the adapter's base model has {self.config.base_num_layers} layers, "
                             f"{type(model).__name__} has {n}")
        index = layer % n
        if self.config.site == "mlp" and anatomy.mlp_outputs[index] is None:
            raise ValueError(f"decoder layer {index} of {anatomy.family!r} ({type(model).__name__}) has no MLP "
                             f"({type(anatomy.layers[index]).__name__}); use site='block' for this layer")
        return anatomy.mlp_outputs[index] if self.config.site == "mlp" else anatomy.layers[index]

    @property
    def is_attached(self) -> bool:
        return self._handle is not None

    def attach(self, model: nn.Module) -> ScarAdapter:
        """Register the (dormant) hook on ``model``'s site and move the adapter to the site's device.

        The hook does nothing until :meth:`steer`, :meth:`reconstruct` or :meth:`detect` activates it in the calling
        context, so ``model`` stays bit-identical. The adapter keeps its own dtype (e.g. fp32 on a bf16 base: it
        computes in its dtype and casts the result back); call ``adapter.to(torch.bfloat16)`` to change it.

        Raises:
            ValueError: the layer is out of range, the base model does not match the config, or the adapter is
                already attached (call :meth:`detach` first).
        """
        if self._handle is not None:
            raise ValueError("this SCAR adapter is already attached; call detach() before attaching it again")
        target = self._target(model)
        param = next(target.parameters(), None)
        if param is not None and param.device != self.encoder.weight.device:
            self.to(param.device)
        self._handle = target.register_forward_hook(self._hook)
        object.__setattr__(self, "_attached_to", model)  # a plain reference: never a submodule, never saved
        return self

    def detach(self) -> ScarAdapter:
        """Remove the hook (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
        self._handle = None
        object.__setattr__(self, "_attached_to", None)
        return self

    def _require_attached(self, model: nn.Module | None) -> nn.Module:
        model = model if model is not None else self._attached_to
        if model is None or self._handle is None:
            raise ValueError("the SCAR adapter is not attached to a model; call adapter.attach(model) first")
        return model

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> Any:
        params = current_params(self._token)
        if params is None:
            return None
        x = output[0] if isinstance(output, tuple) else output
        new = self._transform(x, params)
        if new is None:
            return None
        if isinstance(output, tuple):
            return (new, *output[1:])
        return new

    def _transform(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor | None:
        mode = params["mode"]
        flat = x.reshape(-1, x.shape[-1]).to(self.encoder.weight.dtype)
        if mode == "capture":
            if params.get("activations"):
                params["captured"].append(flat.detach())
            else:
                params["captured"].append(self.pre_activations(flat)[0][:, : self.num_concepts].detach().float())
            if params.get("stop"):
                raise _StopForward
            return None
        z, mu, sd = self.pre_activations(flat)
        replace = mode == "reconstruct" or params["output"] == "replace"
        values = top = None
        if replace:
            values, top = z.topk(self.config.k, dim=-1)
        if mode == "reconstruct":
            return self.decode_topk(values, top, mu, sd).to(x.dtype).view_as(x)
        # steer: the change of the steered latents, decoded as a rank-C update (no [N, L] copy)
        diffs = []
        for index, alpha, op in params["steer"]:  # sorted by latent index, as params["indices"]
            # h_c without materialising h: ReLU(z_c) where latent c is among the token's top k. Error-preserving
            # steering needs no TopK at all: c is in the top k iff fewer than k latents are larger (ties aside).
            z_c = z[:, index]
            in_top = (top == index).any(-1) if replace else (z > z_c[:, None]).sum(-1) < self.config.k
            h_c = z_c.relu() * in_top
            a = alpha
            if isinstance(alpha, torch.Tensor):  # one value per batch row of x ([B, T, D], or OPT's [B*T, D])
                lead = x[..., 0]
                a = rows(alpha, lead).to(h_c.dtype).expand_as(lead).reshape(-1)
            new_c = a * h_c if op == "scale" else torch.broadcast_to(torch.as_tensor(a, dtype=h_c.dtype,
                                                                                    device=h_c.device), h_c.shape)
            diffs.append(new_c - h_c)
        delta = F.linear(torch.stack(diffs, -1) * sd, params["columns"])
        if replace:
            return (self.decode_topk(values, top, mu, sd) + delta).to(x.dtype).view_as(x)
        return (x.reshape(flat.shape) + delta.to(x.dtype)).view_as(x)

    # ------------------------------------------------------------------------------------------- modes

    def parse_steering(self, strengths: Any, op: str = "scale") -> list[tuple[int, torch.Tensor | float, str]]:
        """Normalise a steering request to ``[(latent index, strength, op)]``.

        Args:
            strengths: ``{concept name or index: strength}``, or a bare strength for concept 0. A strength is a float
                or a 1-D tensor/list with one value per batch row.
            op: ``"scale"`` (``h_c ← α h_c``; negative = away from the concept) or ``"replace"`` (``h_c ← α``), or a
                dict ``{concept: op}``.

        Raises:
            ValueError/TypeError: unknown concept, unknown op, non-finite or badly shaped strengths.
        """
        if strengths is None:
            raise ValueError("steering needs strengths, e.g. {'toxicity': -100.0}; use reconstruct() for no steering")
        if not isinstance(strengths, Mapping):
            strengths = {0: strengths}
        if not strengths:
            raise ValueError("steering strengths are empty; name at least one concept, e.g. {0: -100.0}")
        out = []
        for key, value in strengths.items():
            index = self.config.concept_index(key)
            this_op = op.get(key, "scale") if isinstance(op, Mapping) else op
            if this_op not in STEERING_OPS:
                raise ValueError(f"unknown steering op {this_op!r}; choose one of {STEERING_OPS}")
            out.append((index, _check_strength(value, repr(key)), this_op))
        if len({i for i, _, _ in out}) != len(out):
            raise ValueError(f"a concept is named twice in {dict(strengths)!r}")
        return out

    @contextmanager
    def steer(self, strengths: Any, *, op: str | Mapping = "scale", output: str | None = None) -> Iterator[ScarAdapter]:
        """Steer conditioned latents inside the ``with`` block (this context only; other threads see the base model).

        Args:
            strengths: ``{concept: α}`` with ``α`` a float or per-row ``[B]`` tensor (``generate()`` repeats rows for
                beams / ``num_return_sequences``), or a bare ``α`` for concept 0. Several concepts at once are applied
                together (unlike the reference, whose list indexing silently does nothing).
            op: ``"scale"`` or ``"replace"`` (or per concept ``{concept: op}``).
            output: ``"replace"`` (the activation becomes the steered reconstruction, reference) or
                ``"error_preserving"`` (``x + x̂(steered) − x̂``); default ``config.steering_output``.

        Example:
            >>> with scar.steer({"toxicity": -100.0}):  # doctest: +SKIP
            ...     out = model.generate(**inputs, max_new_tokens=20)
        """
        output = output or self.config.steering_output
        if output not in STEERING_OUTPUTS:
            raise ValueError(f"unknown steering output {output!r}; choose one of {STEERING_OUTPUTS}")
        spec = sorted(self.parse_steering(strengths, op), key=lambda item: item[0])
        indices = torch.tensor([i for i, _, _ in spec], device=self.encoder.weight.device)
        columns = self.decoder.weight.detach()[:, indices]  # [D, C'] decoder columns of the steered latents
        with activate(self._token, {"mode": "steer", "steer": spec, "output": output, "indices": indices,
                                    "columns": columns}):
            yield self

    @contextmanager
    def reconstruct(self) -> Iterator[ScarAdapter]:
        """Replace the hooked activation by the SAE reconstruction ``x̂`` inside the ``with`` block."""
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
        model = self._require_attached(model)
        ids = inputs["input_ids"]
        with torch.no_grad(), self._capture(activations=activations, stop=True) as captured:
            try:
                model(**inputs, use_cache=False)
            except _StopForward:
                pass
        if not captured:
            raise RuntimeError("the SCAR hook did not run; is the adapter attached to this model?")
        return captured[0].reshape(ids.shape[0], ids.shape[1], -1)

    def detect(self, texts: str | Sequence[str] | torch.Tensor, tokenizer: Any = None, *, model: nn.Module | None = None,
               attention_mask: torch.Tensor | None = None, batch_size: int = 16, max_length: int | None = None,
               progress: bool = False) -> ScarDetection:
        """Per-token and per-sequence concept probabilities ``σ(z_c)`` (the conditioned pre-activations).

        Works whether or not ``h_c`` survives TopK (``z_c`` is read before TopK). Runs the base model only up to the
        hooked layer.

        Args:
            texts: a string, a list of strings (needs ``tokenizer``), or ``[B, T]`` input ids (left-padded with
                ``attention_mask``).
            tokenizer: the base model's tokenizer (padding on the left is forced).
            model: the base model (default: the one the adapter is attached to).
            attention_mask: ``[B, T]`` for id input.
            batch_size: rows per forward.
            max_length: truncate texts to this many tokens.
            progress: tqdm bar over batches.

        Returns:
            :class:`ScarDetection` (``token_probs [B, T, C]``, ``mask``, ``sequence_probs [B, C]``).

        Example:
            >>> det = scar.detect(["you are awful", "have a nice day"], tok)  # doctest: +SKIP
            >>> det.for_concept("toxicity")  # doctest: +SKIP
            tensor([0.93, 0.04])
        """
        from hf_ext.utils.progress import progress_bar

        from ..core.inputs import position_ids_from_mask
        from ..core.scoring import _forward_accepts

        model = self._require_attached(model)
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, torch.Tensor):
            ids = texts if texts.dim() == 2 else texts.view(1, -1)
            mask = attention_mask if attention_mask is not None else torch.ones_like(ids)
        else:
            if tokenizer is None:
                raise ValueError("detect() on strings needs the base model's tokenizer; pass tokenizer=...")
            if not texts or not all(isinstance(t, str) for t in texts):
                raise TypeError("texts must be a string, a non-empty list of strings or a [B, T] id tensor")
            from .training import _tokenize  # one left-padding tokenizer call for detection and caching

            ids, mask = _tokenize(tokenizer, texts, max_length)
        device = next(model.parameters()).device
        pass_pos = _forward_accepts(model, "position_ids")
        probs = []
        starts = range(0, ids.shape[0], batch_size)
        for start in progress_bar(starts, desc="scar detect", enabled=progress):
            b_ids, b_mask = ids[start:start + batch_size].to(device), mask[start:start + batch_size].to(device)
            inputs = {"input_ids": b_ids, "attention_mask": b_mask}
            if pass_pos:
                inputs["position_ids"] = position_ids_from_mask(b_mask)
            probs.append(self.run_capture(model, inputs).sigmoid().cpu())
        token_probs = torch.cat(probs)
        mask = mask.bool().cpu()
        token_probs = token_probs * mask[..., None]
        seq = token_probs.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return ScarDetection(token_probs=token_probs, mask=mask, sequence_probs=seq, input_ids=ids.cpu(),
                             concepts=list(self.config.concepts))

    # ------------------------------------------------------------------------------------------- persistence

    def save_pretrained(self, save_directory: str | os.PathLike, *, card: bool = True, **card_context: Any) -> Path:
        """Write ``config.json`` (naming the base model) and ``adapter_model.safetensors``; never the base weights.

        Args:
            save_directory: folder (created).
            card: also write a ``README.md`` model card (``model_cards/scar.md.j2``) with ``base_model``.
            **card_context: extra template variables (``description``, ``evaluation_details`` …).
        """
        from safetensors.torch import save_file

        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(path)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(path / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt", "hf_ext": "scar"})
        if card:
            self.model_card(**card_context).save(path / "README.md")
        return path

    def model_card(self, **context: Any):
        """The Hub model card (``huggingface_hub.ModelCard``) of this adapter; ``base_model`` in its front matter."""
        from ..hub import render_model_card

        cfg = self.config
        data: dict[str, Any] = {"license": context.pop("license", "apache-2.0"), "library_name": "hf_ext",
                                "tags": ["scar", "sparse-autoencoder", "steering", "hf_ext"]}
        if cfg.base_model_name_or_path and not os.path.isdir(str(cfg.base_model_name_or_path)):
            data["base_model"] = cfg.base_model_name_or_path
        return render_model_card("scar", card_data=data, config=cfg.to_dict(), concepts=cfg.concepts,
                                 base_model_name=cfg.base_model_name_or_path, **context)

    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike, model: nn.Module | None = None, *,
                        revision: str | None = None, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, **hub_kwargs: Any) -> ScarAdapter:
        """Load an adapter saved by :meth:`save_pretrained` (a local folder or a Hub repo id).

        Args:
            path_or_repo: folder or Hub id.
            model: if given, the adapter is attached to it (base-model mismatch raises ``ValueError``).
            revision: Hub revision.
            device, dtype: where / in which dtype to put the adapter (default: the site's device, fp32).
            **hub_kwargs: download options for a Hub id (``token``, ``cache_dir``, ``local_files_only``,
                ``force_download``).
        """
        from safetensors.torch import load_file

        unknown = sorted(k for k, v in hub_kwargs.items() if v is not None and k not in _SNAPSHOT_KWARGS)
        if unknown:
            raise TypeError(f"ScarAdapter.from_pretrained got unsupported download options {unknown}; "
                            f"accepted: {list(_SNAPSHOT_KWARGS)}")
        folder = Path(path_or_repo)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            download = {k: v for k, v in hub_kwargs.items() if v is not None}
            folder = Path(snapshot_download(str(path_or_repo), revision=revision, **download,
                                            allow_patterns=[CONFIG_NAME, ADAPTER_WEIGHTS_NAME, "README.md"]))
        if not (folder / ADAPTER_WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"{folder} has no {ADAPTER_WEIGHTS_NAME}; save an adapter with "
                                    "ScarAdapter.save_pretrained first")
        config = ScarConfig.from_pretrained(folder)
        if config.model_type != "scar":
            raise ValueError(f"{folder}/config.json has model_type {config.model_type!r}, not 'scar'")
        adapter = cls(config)
        state = load_file(str(folder / ADAPTER_WEIGHTS_NAME))
        adapter.load_state_dict(state, strict=True)
        if device is not None or dtype is not None:
            adapter.to(device=device, dtype=dtype)
        if model is not None:
            adapter.attach(model)
        return adapter

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload SCAR adapter", **card_context: Any) -> str:
        """Upload the adapter files and model card (never the base model) to the Hub; returns the commit URL."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, **card_context)
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
        return str(info)

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
            model = _load_base(config, **base_kwargs)
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

    def forward(self, *args: Any, steering: Any = None, steering_op: Any = "scale", steering_output: str | None = None,
                reconstruct: bool = False, **kwargs: Any):
        """The base model's forward; with ``steering`` / ``reconstruct`` the adapter is active for this call."""
        with self._mode(steering, steering_op, steering_output, reconstruct):
            return self.model(*args, **kwargs)

    def generate(self, *args: Any, steering: Any = None, steering_op: Any = "scale", steering_output: str | None = None,
                 reconstruct: bool = False, **kwargs: Any):
        """``base.generate(...)`` with the adapter steering (or reconstructing) for this call only.

        Args:
            steering: ``{concept: α}`` (float or ``[B]`` per-row tensor), as :meth:`ScarAdapter.steer`.
            steering_op: ``"scale"`` or ``"replace"``.
            steering_output: ``"replace"`` or ``"error_preserving"`` (default: the config's).
            reconstruct: replace the activation by the plain reconstruction.
        """
        with self._mode(steering, steering_op, steering_output, reconstruct):
            return self.model.generate(*args, **kwargs)

    def detect(self, texts: Any, tokenizer: Any = None, **kwargs: Any) -> ScarDetection:
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
            model = _load_base(cfg, *model_args, revision=base_model_revision, **hub, **base_kwargs)
        elif base_kwargs or model_args:
            logger.warning(f"ScarModel.from_pretrained(model=...) ignores base-model arguments "
                           f"{sorted(base_kwargs) + [repr(a) for a in model_args]}")
        adapter.attach(model)
        return cls(cfg, model=model, adapter=adapter)


def _load_base(config: ScarConfig, *model_args: Any, revision: str | None = None, **kwargs: Any) -> nn.Module:
    """The base causal LM named in ``config``, loaded through its own class with public loading options only."""
    from transformers import AutoModelForCausalLM

    hub, model_kwargs, _ = split_loading_kwargs(kwargs)
    return AutoModelForCausalLM.from_pretrained(config.base_model_name_or_path, *model_args,
                                                revision=revision or config.base_model_revision,
                                                **hub, **model_kwargs)


def load_reference_sae_state_dict(state: Mapping[str, torch.Tensor], prefix: str = "SAE.") -> dict[str, torch.Tensor]:
    """Map a reference ``LLama3_SAE`` state dict (keys ``SAE.encoder.weight`` …) to :class:`ScarAdapter` keys.

    Example:
        >>> sd = {"SAE.encoder.weight": torch.zeros(4, 2), "model.embed_tokens.weight": torch.zeros(3, 2)}
        >>> sorted(load_reference_sae_state_dict(sd))
        ['encoder.weight']
    """
    keep = ("encoder.weight", "decoder.weight", "pre_bias", "latent_bias")
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix):] in keep}
