"""The TopK sparse (conditioned) autoencoder of SCAR: normalisation, encoder, TopK, decoder and training loss.

Per token ``x ∈ R^D`` (reference ``ml-research/SCAR``, spec §3):

1. ``μ = mean(x)``, ``σ = std(x)`` (unbiased), ``x̃ = (x − μ) / (σ + ε)`` (only with ``normalize=True``);
2. ``z = W_enc (x̃ − b_pre) + b_lat`` (``[L]``); latents ``0..C-1`` are trained as concept logits, ``p_c = σ(z_c)``;
3. ``h = ReLU(TopK_k(z))`` (``h ≥ 0``, at most ``k`` non-zeros);
4. ``x̂ = (W_dec h + b_pre) · σ + μ`` (the decoder multiplies by ``σ``, the encoder divided by ``σ + ε``).

:class:`TopKSAE` is this math alone (no model, no hooks); :class:`~hf_ext.scar.modeling_scar.ScarAdapter` adds its
placement in a causal LM, steering and Hub I/O.

Example:
    >>> import torch
    >>> from hf_ext.scar.configuration_scar import ScarConfig
    >>> sae = TopKSAE(ScarConfig(n_inputs=16, n_latents=64, k=8), seed=0)
    >>> out = sae(torch.randn(5, 16))
    >>> out.reconstruction.shape, int((out.latents > 0).sum(-1).max()) <= 8
    (torch.Size([5, 16]), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers.utils import ModelOutput

from .configuration_scar import ScarConfig

__all__ = ["ScarOutput", "TopKSAE", "nmse"]


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


class TopKSAE(nn.Module):
    """A TopK sparse (conditioned) autoencoder over activations of width ``n_inputs``.

    Parameters (state-dict keys as the reference's ``SAE`` module): ``encoder.weight`` ``[L, D]``,
    ``decoder.weight`` ``[D, L]``, ``pre_bias`` ``[D]``, ``latent_bias`` ``[L]``.

    Args:
        config: a :class:`~hf_ext.scar.configuration_scar.ScarConfig`.
        seed: seed of the initial weights (encoder: PyTorch's Linear init; decoder = encoderᵀ with ``tied_init``;
            biases zero, as the reference).

    Raises:
        TypeError: ``config`` is not a ``ScarConfig``.
    """

    def __init__(self, config: ScarConfig, *, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(config, ScarConfig):
            raise TypeError(f"{type(self).__name__} needs a ScarConfig, got {type(config).__name__}")
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

    @property
    def num_concepts(self) -> int:
        """Number of conditioned concepts (the first latents)."""
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

    def decoder_rows(self) -> torch.Tensor:
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
        rows_ = self.decoder_rows()
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
