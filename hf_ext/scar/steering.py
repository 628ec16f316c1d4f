"""SCAR steering: parsing steering requests and what the adapter's hook does to an activation in each mode.

Modes, chosen per call through ``contextvars`` (never a mutable attribute, so threads and requests do not interfere):

* **off** (no context active): the hook returns ``None``, the base model's outputs are bit-identical;
* **reconstruct**: the activation is replaced by ``x̂``;
* **steer**: conditioned latents are scaled (``h_c ← α h_c``) or replaced (``h_c ← α``), with ``α`` a scalar or one
  value per batch row; the output is the steered reconstruction (``"replace"``, the reference) or
  ``x + x̂(steered) − x̂ = x + Σ_c (h'_c − h_c) σ W_dec[:, c]`` (``"error_preserving"``: the SAE error term is kept,
  so ``α = 1`` is exactly the base model);
* **capture**: concept logits (or raw activations) are recorded, optionally stopping the forward there.

Example:
    >>> from hf_ext.scar.configuration_scar import ScarConfig
    >>> parse_steering(ScarConfig(n_inputs=8, concepts=["toxicity"]), {"toxicity": -100.0})
    [(0, -100.0, 'scale')]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.nn import functional as F

from ..core.hooks import rows
from .configuration_scar import STEERING_OUTPUTS, ScarConfig
from .sae import TopKSAE

#: One steering strength: a float, or one value per batch row (a 1-D tensor or list).
Strength = float | torch.Tensor | Sequence[float]
#: A steering request: ``{concept name or index: strength}``, or a bare strength for concept 0.
Steering = Strength | Mapping[str | int, Strength]

__all__ = ["STEERING_OPS", "StopForward", "check_strength", "parse_steering", "steering_params",
           "transform_activations"]

STEERING_OPS: tuple[str, ...] = ("scale", "replace")


class StopForward(Exception):
    """Raised by a capture hook to skip the rest of the base model once the hooked site has run."""


def check_strength(value: Any, name: str) -> torch.Tensor | float:
    """A steering strength as a float or a float32 ``[B]`` tensor (one per batch row).

    Raises:
        TypeError: a bool, or a value that is neither a number, a list nor a tensor.
        ValueError: a non-finite value, or a tensor that is not a scalar or 1-D.
    """
    if isinstance(value, bool):
        raise TypeError(f"steering strength for {name} must be a number or a 1-D tensor of per-row values, got "
                        f"{value!r} (bool)")
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"steering strength for {name} must be finite, got {value!r}")
        return float(value)
    if isinstance(value, (list, tuple)):
        value = torch.tensor(value, dtype=torch.float32)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"steering strength for {name} must be a float, a list or a 1-D tensor (one per batch row), "
                        f"got {value!r} ({type(value).__name__})")
    if value.dim() > 1 or value.numel() == 0:
        raise ValueError(f"steering strength for {name} must be a scalar or 1-D (one value per batch row), got shape "
                         f"{tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise ValueError(f"steering strengths for {name} must be finite, got {value.tolist()}")
    return value.float()


def parse_steering(config: ScarConfig, strengths: Steering, op: str | Mapping = "scale"
                   ) -> list[tuple[int, torch.Tensor | float, str]]:
    """Normalise a steering request to ``[(latent index, strength, op)]``.

    Args:
        config: the adapter's config (concept names).
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
        index = config.concept_index(key)
        this_op = op.get(key, "scale") if isinstance(op, Mapping) else op
        if this_op not in STEERING_OPS:
            raise ValueError(f"unknown steering op {this_op!r}; choose one of {STEERING_OPS}")
        out.append((index, check_strength(value, repr(key)), this_op))
    if len({i for i, _, _ in out}) != len(out):
        raise ValueError(f"a concept is named twice in {dict(strengths)!r}")
    return out


def steering_params(sae: TopKSAE, strengths: Steering, op: str | Mapping = "scale", output: str | None = None
                    ) -> dict[str, Any]:
    """The hook parameters of a steering request (see :meth:`ScarAdapter.steer` for the arguments).

    Raises:
        ValueError: an unknown output, and as :func:`parse_steering`.
    """
    output = output or sae.config.steering_output
    if output not in STEERING_OUTPUTS:
        raise ValueError(f"unknown steering output {output!r}; choose one of {STEERING_OUTPUTS}")
    spec = sorted(parse_steering(sae.config, strengths, op), key=lambda item: item[0])
    indices = torch.tensor([i for i, _, _ in spec], device=sae.encoder.weight.device)
    columns = sae.decoder.weight.detach()[:, indices]  # [D, C'] decoder columns of the steered latents
    return {"mode": "steer", "steer": spec, "output": output, "indices": indices, "columns": columns}


def transform_activations(sae: TopKSAE, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor | None:
    """What the adapter's hook does to the activation ``x`` ``[..., D]`` in one of its modes.

    Args:
        sae: the autoencoder.
        x: the hooked site's output.
        params: the mode's parameters, as :func:`steering_params` (``"steer"``), ``{"mode": "reconstruct"}`` or
            ``{"mode": "capture", "captured": list, "activations": bool, "stop": bool}`` (concept logits or raw
            activations appended to ``captured``; :class:`StopForward` raised after capture with ``stop``).

    Returns:
        The new activation (``x``'s shape and dtype), or ``None`` to keep ``x``.
    """
    mode = params["mode"]
    flat = x.reshape(-1, x.shape[-1]).to(sae.encoder.weight.dtype)
    if mode == "capture":
        if params.get("activations"):
            params["captured"].append(flat.detach())
        else:
            params["captured"].append(sae.pre_activations(flat)[0][:, : sae.num_concepts].detach().float())
        if params.get("stop"):
            raise StopForward
        return None
    z, mu, sd = sae.pre_activations(flat)
    replace = mode == "reconstruct" or params["output"] == "replace"
    values = top = None
    if replace:
        values, top = z.topk(sae.config.k, dim=-1)
    if mode == "reconstruct":
        return sae.decode_topk(values, top, mu, sd).to(x.dtype).view_as(x)
    # steer: the change of the steered latents, decoded as a rank-C update (no [N, L] copy)
    diffs = []
    for index, alpha, op in params["steer"]:  # sorted by latent index, as params["indices"]
        # h_c without materialising h: ReLU(z_c) where latent c is among the token's top k. Error-preserving
        # steering needs no TopK at all: c is in the top k iff fewer than k latents are larger (ties aside).
        z_c = z[:, index]
        in_top = (top == index).any(-1) if replace else (z > z_c[:, None]).sum(-1) < sae.config.k
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
        return (sae.decode_topk(values, top, mu, sd) + delta).to(x.dtype).view_as(x)
    return (x.reshape(flat.shape) + delta.to(x.dtype)).view_as(x)
