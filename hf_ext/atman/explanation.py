"""The result of an AtMan explanation: Δ cross-entropy per unit and target token, scores, export and plots.

Example:
    >>> import torch
    >>> from hf_ext.atman.units import Unit
    >>> exp = Explanation(units=[Unit("a", [0]), Unit("b", [1])], delta=torch.tensor([[-1.0, 1.0], [0.5, 0.0]]),
    ...                   target_tokens=["x", "y"], base_cross_entropy=torch.zeros(2))
    >>> exp.importance().tolist()
    [-0.0, -0.5]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .units import Unit

__all__ = ["POSTPROCESSING", "Explanation"]

POSTPROCESSING = ("none", "absolute", "square")


@dataclass
class Explanation:
    """The result of :meth:`AtManExplainer.explain`.

    Attributes:
        units: the explained items, in prompt order.
        delta: ``[U, T]`` float32 raw Δ_{j,t} = CE_t(original) − CE_t(unit j suppressed); negative = important.
        target_tokens: the ``T`` target token strings.
        base_cross_entropy: ``[T]`` per-token CE of the target without suppression.
        tokens: the prompt's token strings (unpadded).
        offsets: ``[(start, end)]`` character offsets of the prompt tokens (empty for special / image tokens).
        prompt, target: the strings explained (``None`` when ids were given).
        mode, suppression_factor, conceptual_threshold: the settings used.
        image_grid: ``(rows, cols)`` of the tiles for image explanations, else ``None``.
    """

    units: list[Unit]
    delta: torch.Tensor
    target_tokens: list[str]
    base_cross_entropy: torch.Tensor
    tokens: list[str] = field(default_factory=list)
    offsets: list[tuple[int, int]] = field(default_factory=list)
    prompt: str | None = None
    target: str | None = None
    mode: str = "log_additive"
    suppression_factor: float = 0.1
    conceptual_threshold: float | None = None
    image_grid: tuple[int, int] | None = None

    def scores(self, postprocessing: str = "none", *, normalize: bool = False, target_token: int | None = None) -> torch.Tensor:
        """One score per unit.

        Args:
            postprocessing: ``"none"`` (raw Δ; negative = important), ``"absolute"`` (|Δ|) or ``"square"`` (Δ²),
                applied per target token before aggregation (the API's semantics).
            normalize: min-max normalise to [0, 1] after post-processing (denominator + 1e-8, as the reference).
            target_token: explain only this target token; ``None`` = the complete target (sum over tokens).

        Returns:
            ``[U]`` float32.

        Example:
            >>> exp = Explanation(units=[Unit("a", [0]), Unit("b", [1])], delta=torch.tensor([[-1.0, 1.0], [0.5, 0.0]]),
            ...                   target_tokens=["x", "y"], base_cross_entropy=torch.zeros(2))
            >>> exp.scores("square").tolist()
            [2.0, 0.25]
        """
        if postprocessing not in POSTPROCESSING:
            raise ValueError(f"postprocessing={postprocessing!r} is not one of {POSTPROCESSING}")
        d = self.delta
        if target_token is not None:
            if not -d.shape[1] <= target_token < d.shape[1]:
                raise ValueError(f"target_token={target_token} is out of range for {d.shape[1]} target tokens")
            d = d[:, target_token : target_token + 1] if target_token >= 0 else d[:, [target_token]]
        d = {"none": d, "absolute": d.abs(), "square": d.square()}[postprocessing]
        s = d.sum(1)
        if normalize and s.numel():
            s = (s - s.min()) / (s.max() - s.min() + 1e-8)
        return s

    def importance(self) -> torch.Tensor:
        """``[U]``: how much the complete target's loss rises when the unit is suppressed (``−Σ_t Δ_{j,t}``)."""
        return -self.delta.sum(1)

    def to_dict(self) -> dict:
        """JSON-serialisable dict (no pickles)."""
        return {
            "prompt": self.prompt, "target": self.target, "tokens": self.tokens, "offsets": [list(o) for o in self.offsets],
            "target_tokens": self.target_tokens, "base_cross_entropy": self.base_cross_entropy.tolist(),
            "units": [{"label": u.label, "positions": u.positions, "char_span": u.char_span, "tile": u.tile} for u in self.units],
            "delta": self.delta.tolist(), "mode": self.mode, "suppression_factor": self.suppression_factor,
            "conceptual_threshold": self.conceptual_threshold, "image_grid": self.image_grid,
        }

    def to_html(self, postprocessing: str = "none", *, target_token: int | None = None) -> str:
        """A self-contained HTML heat-map of the prompt (see :func:`hf_ext.atman.render.to_html`)."""
        from .render import to_html

        return to_html(self, postprocessing=postprocessing, target_token=target_token)

    def plot(self, path=None, *, postprocessing: str = "none", target_token: int | None = None):
        """Bar chart (text) or tile heat-map (image) as a matplotlib Figure; saved as PNG when ``path`` is given."""
        from .render import plot

        return plot(self, path, postprocessing=postprocessing, target_token=target_token)
