"""The Safe Latent Diffusion (SLD) guidance step as a pure function, its presets and a small stateful runner.

Notation (Schramowski et al., "Safe Latent Diffusion", CVPR 2023, §3): ε_∅ unconditional, ε_p prompt-conditioned,
ε_S conditioned on the safety concept S; s_g the classifier-free guidance scale.

* μ = min(1, s_S·|ε_p − ε_S|) where (ε_p − ε_S) < λ, else 0                       (Eq. 5/6)
* γ = μ ⊙ (ε_S − ε_∅) + s_m·ν                                                     (Eq. 4 + 7)
* ν ← β_m·ν + (1 − β_m)·γ                      (Eq. 8; also during warm-up, "pre-charging" the momentum)
* ε̄ = ε_∅ + s_g·(ε_p − ε_∅ − γ)  if step ≥ δ, else plain CFG                      (Eq. 3)

The floating-point operations are done in exactly the order of diffusers' ``StableDiffusionPipelineSafe`` so that
pipelines built on :func:`sld_step` reproduce it bit for bit.

Example:
    >>> import torch
    >>> from hf_ext.diffusion.sld.guidance import SLDConfig, sld_step
    >>> u, p, s = torch.randn(3, 1, 4, 8, 8).unbind(0)
    >>> out = sld_step(u, p, s, None, step=12, guidance_scale=7.5, config=SLDConfig.MEDIUM, warmup_index=10)
    >>> out.noise_pred.shape, out.momentum[0].shape
    (torch.Size([1, 4, 8, 8]), torch.Size([1, 4, 8, 8]))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from hf_ext.utils.validation import ArgumentTypeError, check_float, check_int

__all__ = [
    "DIFFUSERS_KWARGS",
    "PRESETS",
    "SLDConcept",
    "SLDConfig",
    "SLDDiagnostics",
    "SLDGuidanceRunner",
    "SLDStepOutput",
    "sld_step",
]

#: The diffusers ``StableDiffusionPipelineSafe.__call__`` keyword names, mapped to :class:`SLDConfig` fields.
DIFFUSERS_KWARGS: dict[str, str] = {
    "sld_guidance_scale": "guidance_scale",
    "sld_warmup_steps": "warmup_steps",
    "sld_threshold": "threshold",
    "sld_momentum_scale": "momentum_scale",
    "sld_mom_beta": "mom_beta",
}


@dataclass(frozen=True)
class SLDConfig:
    """SLD hyperparameters (defaults: the paper's *Medium* = diffusers' call defaults).

    Args:
        guidance_scale: s_S (``sld_guidance_scale``), ≥ 0. SLD is enabled only when ``> 1`` (diffusers' rule; the
            pipelines additionally need classifier-free guidance, ``guidance_scale > 1``).
        warmup_steps: δ (``sld_warmup_steps``). An ``int`` ≥ 0 is a loop index over ``scheduler.timesteps``
            (diffusers' semantics, for parity); a ``float`` in [0, 1] is a fraction of the schedule
            (δ = ⌈f·T⌉ for T timesteps), so a preset keeps its meaning at any step count.
        threshold: λ (``sld_threshold``); larger → more latent dimensions are guided.
        momentum_scale: s_m (``sld_momentum_scale``), ≥ 0. With 0 the momentum is never read, so pipelines skip
            the concept branch during warm-up (bit-identical results, a 2× instead of 3× UNet batch).
        mom_beta: β_m (``sld_mom_beta``) in [0, 1].

    Presets (class attributes): :attr:`WEAK` (paper/model card, s_S = 200), :attr:`WEAK_DIFFUSERS` (diffusers'
    ``SafetyConfig.WEAK``, s_S = 20), :attr:`MEDIUM`, :attr:`STRONG`, :attr:`MAX`; see also :data:`PRESETS`.

    Example:
        >>> SLDConfig.STRONG.to_diffusers_kwargs()["sld_guidance_scale"]
        2000.0
        >>> SLDConfig.from_preset("max").warmup_steps
        0
        >>> SLDConfig.MEDIUM.replace(warmup_steps=0.2).warmup_index(50)
        10
    """

    guidance_scale: float = 1000.0
    warmup_steps: int | float = 10
    threshold: float = 0.01
    momentum_scale: float = 0.3
    mom_beta: float = 0.4

    def __post_init__(self) -> None:
        for name in ("guidance_scale", "threshold", "momentum_scale", "mom_beta"):
            value = getattr(self, name)
            if name == "threshold" and isinstance(value, float) and math.isinf(value):
                continue  # an infinite threshold is meaningful (every latent is unsafe)
            object.__setattr__(self, name, check_float(f"SLDConfig.{name}", value))
        if self.guidance_scale < 0:
            raise ValueError(f"sld_guidance_scale must be >= 0 (0 or 1 disables SLD), got {self.guidance_scale}")
        if self.momentum_scale < 0:
            raise ValueError(f"sld_momentum_scale must be >= 0 (0 disables momentum), got {self.momentum_scale}")
        if not 0.0 <= self.mom_beta <= 1.0:
            raise ValueError(f"sld_mom_beta must be in [0, 1], got {self.mom_beta}")
        w = self.warmup_steps
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise ArgumentTypeError(
                f"sld_warmup_steps must be an int (step index) or a float fraction in [0, 1], got {w!r}")
        if isinstance(w, int):
            check_int("sld_warmup_steps", w, min=0)
        if isinstance(w, float) and not 0.0 <= w <= 1.0:
            raise ValueError(
                f"a float sld_warmup_steps is a fraction of the schedule and must be in [0, 1], got {w}; "
                f"pass an int (e.g. {int(w)}) for a step index")

    # ------------------------------------------------------------------ helpers
    @property
    def enabled(self) -> bool:
        """``guidance_scale > 1`` (diffusers: ``sld_guidance_scale > 1.0``; 0 and 1 both disable)."""
        return self.guidance_scale > 1.0

    def warmup_index(self, num_timesteps: int) -> int:
        """δ as a loop index for a schedule of ``num_timesteps`` entries (``len(scheduler.timesteps)``)."""
        if isinstance(self.warmup_steps, float):
            return int(math.ceil(self.warmup_steps * num_timesteps - 1e-9))
        return int(self.warmup_steps)

    def skips_concept(self, step: int, warmup_index: int) -> bool:
        """True when ε_S is not needed at ``step``: momentum off (s_m = 0) and still in warm-up."""
        return self.momentum_scale == 0.0 and step < warmup_index

    def replace(self, **changes: Any) -> SLDConfig:
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The five fields as a JSON-able dict."""
        return asdict(self)

    def to_diffusers_kwargs(self) -> dict[str, Any]:
        """``{"sld_guidance_scale": …, "sld_warmup_steps": …, …}`` for diffusers' ``StableDiffusionPipelineSafe``."""
        return {k: getattr(self, f) for k, f in DIFFUSERS_KWARGS.items()}

    @classmethod
    def from_diffusers_kwargs(cls, kwargs: Mapping[str, Any], base: SLDConfig | None = None) -> SLDConfig:
        """Build from ``sld_*`` keywords (missing ones come from ``base``, default :attr:`MEDIUM`)."""
        unknown = set(kwargs) - set(DIFFUSERS_KWARGS)
        if unknown:
            raise TypeError(f"unknown SLD keyword(s) {sorted(unknown)}; valid: {sorted(DIFFUSERS_KWARGS)}")
        base = base if base is not None else cls()
        return base.replace(**{DIFFUSERS_KWARGS[k]: v for k, v in kwargs.items() if v is not None})

    @classmethod
    def from_preset(cls, preset: str | SLDConfig | Mapping[str, Any]) -> SLDConfig:
        """A preset by name (``"weak"``, ``"weak_diffusers"``, ``"medium"``, ``"strong"``, ``"max"``, any case),
        an :class:`SLDConfig` (returned as is) or a dict of fields / ``sld_*`` keywords."""
        if isinstance(preset, SLDConfig):
            return preset
        if isinstance(preset, Mapping):
            if all(k in DIFFUSERS_KWARGS for k in preset):
                return cls.from_diffusers_kwargs(preset)
            return cls(**preset)
        if not isinstance(preset, str):
            raise TypeError(f"preset must be a name, an SLDConfig or a dict, got {type(preset).__name__}")
        key = preset.strip().lower().replace("-", "_")
        if key not in PRESETS:
            raise ValueError(f"unknown SLD preset {preset!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[key]


# Presets (paper "Hyp-…" table; Medium/Strong/Max agree with diffusers' SafetyConfig, Weak does not: 200 vs 20).
# ``SLDConfig.WEAK`` etc. are class attributes set here (not dataclass fields).
SLDConfig.WEAK = SLDConfig(guidance_scale=200.0, warmup_steps=15, threshold=0.0, momentum_scale=0.0, mom_beta=0.0)
SLDConfig.WEAK_DIFFUSERS = SLDConfig(guidance_scale=20.0, warmup_steps=15, threshold=0.0, momentum_scale=0.0,
                                     mom_beta=0.0)
SLDConfig.MEDIUM = SLDConfig(guidance_scale=1000.0, warmup_steps=10, threshold=0.01, momentum_scale=0.3, mom_beta=0.4)
SLDConfig.STRONG = SLDConfig(guidance_scale=2000.0, warmup_steps=7, threshold=0.025, momentum_scale=0.5, mom_beta=0.7)
SLDConfig.MAX = SLDConfig(guidance_scale=5000.0, warmup_steps=0, threshold=1.0, momentum_scale=0.5, mom_beta=0.7)
SLDConfig.OFF = SLDConfig(guidance_scale=0.0)

#: Preset name -> :class:`SLDConfig` (``"off"`` disables SLD).
PRESETS: dict[str, SLDConfig] = {
    "weak": SLDConfig.WEAK,
    "weak_diffusers": SLDConfig.WEAK_DIFFUSERS,
    "medium": SLDConfig.MEDIUM,
    "strong": SLDConfig.STRONG,
    "max": SLDConfig.MAX,
    "off": SLDConfig.OFF,
}


@dataclass(frozen=True)
class SLDConcept:
    """One safety concept with its own SLD hyperparameters (the SEGA-style generalisation to several concepts).

    Every field left ``None`` is taken from the call's :class:`SLDConfig` (``sld_preset`` / ``sld_*`` keywords), so
    ``SLDConcept("violence")`` behaves exactly like the plain text ``"violence"``.

    Args:
        text: the concept text, encoded like a prompt (non-empty).
        guidance_scale: s_S of this concept (≥ 0; ≤ 1 disables this concept only).
        warmup_steps: δ of this concept (int step index or float fraction of the schedule).
        threshold: λ of this concept.
        momentum_scale: s_m of this concept (≥ 0).
        mom_beta: β_m of this concept, in [0, 1].

    Raises:
        TypeError/ValueError: naming the field and the bad value (same rules as :class:`SLDConfig`).

    Example:
        >>> c = SLDConcept("nudity", guidance_scale=2000.0, warmup_steps=0)
        >>> c.resolve(SLDConfig.MEDIUM).guidance_scale, c.resolve(SLDConfig.MEDIUM).threshold
        (2000.0, 0.01)
        >>> SLDConcept.from_dict(c.to_dict()) == c
        True
    """

    text: str
    guidance_scale: float | None = None
    warmup_steps: int | float | None = None
    threshold: float | None = None
    momentum_scale: float | None = None
    mom_beta: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"SLDConcept.text must be a non-empty string, got {self.text!r}")
        for name, value in self.overrides().items():
            try:  # SLDConfig's checks, reported with this concept and field named
                SLDConfig().replace(**{name: value})
            except (TypeError, ValueError) as err:
                raise type(err)(f"SLDConcept({self.text!r}).{name}={value!r} is invalid: {err}") from None

    def overrides(self) -> dict[str, Any]:
        """The hyperparameters this concept sets itself (field name -> value)."""
        return {f: getattr(self, f) for f in DIFFUSERS_KWARGS.values() if getattr(self, f) is not None}

    def resolve(self, base: SLDConfig) -> SLDConfig:
        """This concept's :class:`SLDConfig`: ``base`` with the concept's own fields on top."""
        overrides = self.overrides()
        return base.replace(**overrides) if overrides else base

    def to_dict(self) -> dict[str, Any]:
        """``{"text": …, <set fields>…}`` (JSON-able; unset fields are left out)."""
        return {"text": self.text, **self.overrides()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SLDConcept:
        """Inverse of :meth:`to_dict` (unknown keys raise ``ValueError`` naming them)."""
        fields = {"text", *DIFFUSERS_KWARGS.values()}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown SLDConcept field(s) {unknown} in {dict(data)!r}; valid: {sorted(fields)}")
        return cls(**data)


@dataclass
class SLDDiagnostics:
    """Per-step diagnostics (floats; only computed when asked for, as they synchronise the device).

    Attributes:
        step: loop index i.
        applied: whether γ was subtracted (i ≥ δ).
        concept_evaluated: whether ε_S was computed at this step (False in a skipped warm-up step).
        guided_fraction: share of latent elements with μ > 0 (over all concepts).
        gamma_norm: ‖γ‖₂ over the whole batch (summed over concepts).
        mu_mean: mean of μ.
    """

    step: int
    applied: bool
    concept_evaluated: bool
    guided_fraction: float = 0.0
    gamma_norm: float = 0.0
    mu_mean: float = 0.0


@dataclass
class SLDStepOutput:
    """Result of :func:`sld_step`: the guided prediction ``noise_pred`` (shape of ε_∅), the new momentum (a list,
    one tensor per concept, or ``None`` if never started) and optional :class:`SLDDiagnostics`."""

    noise_pred: torch.Tensor
    momentum: list[torch.Tensor] | None
    diagnostics: SLDDiagnostics | None = None
    noise_guidance: torch.Tensor | None = None


def _as_list(x: torch.Tensor | Sequence[torch.Tensor] | None) -> list[torch.Tensor] | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return [x]
    return list(x)


def _per_concept(config: SLDConfig | Sequence[SLDConfig], warmup_index: int | Sequence[int] | None,
                 n_concepts: int) -> tuple[list[SLDConfig], list[int]]:
    """One config and one warm-up index per concept (a single config/index is shared by all)."""
    configs = [config] * n_concepts if isinstance(config, SLDConfig) else list(config)
    if len(configs) != n_concepts or not all(isinstance(c, SLDConfig) for c in configs):
        raise ValueError(f"config must be an SLDConfig or a list of {n_concepts} SLDConfig (one per concept), "
                         f"got {config!r}")
    if warmup_index is None:
        for c in configs:
            if isinstance(c.warmup_steps, float):
                raise ValueError("config.warmup_steps is a fraction: pass "
                                 "warmup_index=config.warmup_index(len(timesteps))")
        return configs, [int(c.warmup_steps) for c in configs]
    if isinstance(warmup_index, int):
        return configs, [warmup_index] * n_concepts
    warmups = [int(w) for w in warmup_index]
    if len(warmups) != n_concepts:
        raise ValueError(f"warmup_index has {len(warmups)} entries for {n_concepts} concepts: {warmup_index!r}")
    return configs, warmups


def sld_step(
    eps_uncond: torch.Tensor,
    eps_cond: torch.Tensor,
    eps_concept: torch.Tensor | Sequence[torch.Tensor] | None,
    momentum: torch.Tensor | Sequence[torch.Tensor] | None,
    *,
    step: int,
    guidance_scale: float,
    config: SLDConfig | Sequence[SLDConfig],
    warmup_index: int | Sequence[int] | None = None,
    return_diagnostics: bool = False,
) -> SLDStepOutput:
    """One SLD-guided combination of the three noise (or v) predictions.

    Args:
        eps_uncond: ε_∅, shape ``(N, C, H, W)`` (any shape; all inputs must match).
        eps_cond: ε_p, same shape.
        eps_concept: ε_S, same shape, or a sequence with one tensor per safety concept (their γ are subtracted in
            order), or ``None`` when the concept branch was skipped (only allowed if
            ``config.skips_concept(step, warmup_index)``; the result is plain CFG and the momentum is unchanged).
        momentum: ν from the previous step (same structure as ``eps_concept``), or ``None`` at the first step (zeros).
        step: loop index i over ``scheduler.timesteps``.
        guidance_scale: s_g, the classifier-free guidance scale.
        config: the :class:`SLDConfig`, or one per concept (each concept then has its own s_S, λ, s_m, β_m, δ).
        warmup_index: δ as a loop index (or one per concept); default ``config.warmup_index`` needs the schedule
            length, so an int ``config.warmup_steps`` is used directly and a fractional one requires this argument.
        return_diagnostics: compute :class:`SLDDiagnostics` (calls ``.item()``).

    Returns:
        :class:`SLDStepOutput` with ``noise_pred = ε_∅ + s_g·((ε_p − ε_∅) − Σ_k [i ≥ δ_k]·γ_k)``.

    Example:
        >>> import torch
        >>> u, p, s = torch.zeros(1, 4), torch.ones(1, 4), torch.full((1, 4), 0.5)
        >>> cfg = SLDConfig(guidance_scale=1e6, warmup_steps=0, threshold=1e6, momentum_scale=0.0)
        >>> sld_step(u, p, s, None, step=0, guidance_scale=2.0, config=cfg).noise_pred  # μ ≡ 1: ε_∅ + s_g(ε_p − ε_S)
        tensor([[1., 1., 1., 1.]])
    """
    concepts = _as_list(eps_concept)
    if concepts is not None:
        n_concepts = len(concepts)
    else:
        n_concepts = 1 if isinstance(config, SLDConfig) else len(config)
    configs, warmups = _per_concept(config, warmup_index, n_concepts)
    noise_guidance = eps_cond - eps_uncond
    if concepts is None:
        if not all(c.skips_concept(step, w) for c, w in zip(configs, warmups)):
            raise ValueError(
                f"eps_concept is None at step {step}, but the concept prediction is needed there (momentum_scale="
                f"{[c.momentum_scale for c in configs]}, warm-up index {warmups}); only skip it when "
                "momentum_scale == 0 and step < warm-up")
        noise_pred = eps_uncond + guidance_scale * noise_guidance
        mom = _as_list(momentum)
        diag = SLDDiagnostics(step=step, applied=False, concept_evaluated=False) if return_diagnostics else None
        return SLDStepOutput(noise_pred, mom, diag, noise_guidance)
    if not concepts:
        raise ValueError("eps_concept is an empty sequence; pass at least one concept prediction (or None to skip)")
    moms = _as_list(momentum)
    if moms is None:
        moms = [None] * len(concepts)
    if len(moms) != len(concepts):
        raise ValueError(f"got {len(concepts)} concept predictions but {len(moms)} momentum tensors")
    new_moms: list[torch.Tensor] = []
    guided = torch.zeros((), device=eps_uncond.device) if return_diagnostics else None
    gamma_sq = torch.zeros((), device=eps_uncond.device) if return_diagnostics else None
    mu_sum = torch.zeros((), device=eps_uncond.device) if return_diagnostics else None
    applied = False
    for eps_s, mom, cfg, warm in zip(concepts, moms, configs, warmups):
        if eps_s.shape != eps_uncond.shape:
            raise ValueError(f"eps_concept shape {tuple(eps_s.shape)} != eps_uncond shape {tuple(eps_uncond.shape)}")
        if mom is None:
            mom = torch.zeros_like(noise_guidance)
        # Equation 6 (same operations and order as diffusers' StableDiffusionPipelineSafe)
        scale = torch.clamp(torch.abs(eps_cond - eps_s) * cfg.guidance_scale, max=1.0)
        mu = torch.where((eps_cond - eps_s) >= cfg.threshold, torch.zeros_like(scale), scale)
        # Equation 4
        gamma = torch.mul(eps_s - eps_uncond, mu)
        # Equation 7
        gamma = gamma + cfg.momentum_scale * mom
        # Equation 8
        mom = cfg.mom_beta * mom + (1 - cfg.mom_beta) * gamma
        new_moms.append(mom)
        if step >= warm:
            applied = True
            # Equation 3
            noise_guidance = noise_guidance - gamma
        if return_diagnostics:
            guided = guided + (mu > 0).float().mean()
            gamma_sq = gamma_sq + gamma.float().pow(2).sum()
            mu_sum = mu_sum + mu.float().mean()
    noise_pred = eps_uncond + guidance_scale * noise_guidance
    diag = None
    if return_diagnostics:
        k = len(concepts)
        diag = SLDDiagnostics(step=step, applied=applied, concept_evaluated=True,
                              guided_fraction=float(guided) / k, gamma_norm=float(gamma_sq.sqrt()),
                              mu_mean=float(mu_sum) / k)
    return SLDStepOutput(noise_pred, new_moms, diag, noise_guidance)


class SLDGuidanceRunner:
    """Stateful helper for a denoising loop: holds the momentum, decides when ε_S is needed, records diagnostics.

    Args:
        config: the :class:`SLDConfig` (must be enabled), or one per concept (K concepts, each with its own
            hyperparameters, e.g. from :meth:`SLDConcept.resolve`).
        guidance_scale: s_g.
        num_timesteps: ``len(scheduler.timesteps)`` (resolves a fractional warm-up).
        skip_warmup_concept: skip ε_S during a step where every concept is in warm-up with ``momentum_scale == 0``
            (identical results).
        return_diagnostics: collect :class:`SLDDiagnostics` per step in :attr:`diagnostics`.

    Example:
        >>> import torch
        >>> r = SLDGuidanceRunner(SLDConfig.WEAK, guidance_scale=7.5, num_timesteps=50)
        >>> r.concept_needed(0), r.concept_needed(15)
        (False, True)
        >>> u, p = torch.zeros(1, 4), torch.ones(1, 4)
        >>> r(0, u, p, None).shape
        torch.Size([1, 4])
        >>> two = SLDGuidanceRunner([SLDConfig.WEAK, SLDConfig.MAX], guidance_scale=7.5, num_timesteps=50)
        >>> two.warmup_index, two.concept_needed(0)
        ([15, 0], True)
    """

    def __init__(self, config: SLDConfig | Sequence[SLDConfig], *, guidance_scale: float, num_timesteps: int,
                 skip_warmup_concept: bool = True, return_diagnostics: bool = False) -> None:
        self.config = config
        self.configs = [config] if isinstance(config, SLDConfig) else list(config)
        if not self.configs or not all(isinstance(c, SLDConfig) for c in self.configs):
            raise ValueError(f"config must be an SLDConfig or a non-empty list of SLDConfig, got {config!r}")
        self.guidance_scale = float(guidance_scale)
        warmups = [c.warmup_index(num_timesteps) for c in self.configs]
        #: δ as a loop index (a list with one per concept when ``config`` is a list).
        self.warmup_index: int | list[int] = warmups[0] if isinstance(config, SLDConfig) else warmups
        self.skip_warmup_concept = skip_warmup_concept
        self.return_diagnostics = return_diagnostics
        self.momentum: list[torch.Tensor] | None = None
        self.diagnostics: list[SLDDiagnostics] = []
        self.last_noise_guidance: torch.Tensor | None = None

    def concept_needed(self, step: int) -> bool:
        """Whether the loop must evaluate the concept predictions at ``step`` (some concept needs its ε_S)."""
        if not self.skip_warmup_concept:
            return True
        warmups = self.warmup_index if isinstance(self.warmup_index, list) else [self.warmup_index]
        return not all(c.skips_concept(step, w) for c, w in zip(self.configs, warmups))

    def reset(self) -> None:
        """Forget the momentum and diagnostics (start of a new generation)."""
        self.momentum, self.diagnostics = None, []

    def __call__(self, step: int, eps_uncond: torch.Tensor, eps_cond: torch.Tensor,
                 eps_concept: torch.Tensor | Sequence[torch.Tensor] | None) -> torch.Tensor:
        """Combine the predictions of ``step`` (see :func:`sld_step`) and update the momentum."""
        out = sld_step(eps_uncond, eps_cond, eps_concept, self.momentum, step=step,
                       guidance_scale=self.guidance_scale, config=self.config, warmup_index=self.warmup_index,
                       return_diagnostics=self.return_diagnostics)
        self.momentum = out.momentum
        self.last_noise_guidance = out.noise_guidance
        if out.diagnostics is not None:
            self.diagnostics.append(out.diagnostics)
        return out.noise_pred
