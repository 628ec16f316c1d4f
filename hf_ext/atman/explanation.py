"""The result of an AtMan explanation: Δ per unit and target token, scores, aggregation, saving and display.

``delta[j, t]`` is the change of the *step function* of target token ``t`` when unit ``j`` is suppressed, signed so
that **important units have negative Δ** (suppressing them lowers the target's log-probability / probability):

* ``step="cross_entropy"`` (default): ``Δ = CE_t(original) − CE_t(suppressed) = log p_t(suppressed) − log p_t(original)``;
* ``step="probability"``: ``Δ = p_t(suppressed) − p_t(original)``.

A *contrastive* explanation ("why ``target`` rather than ``foil``") appends the foil's tokens as the last
``n_foil_tokens`` columns with their Δ negated, so the sum over all columns is the change of
``log p(target) − log p(foil)`` (or of ``p(target) − p(foil)`` with the probability step).

Example:
    >>> import torch
    >>> from hf_ext.atman.units import Unit
    >>> exp = Explanation(units=[Unit("a", [0]), Unit("b", [1])], delta=torch.tensor([[-1.0, 1.0], [0.5, 0.0]]),
    ...                   target_tokens=["x", "y"], base_cross_entropy=torch.zeros(2))
    >>> exp.importance().tolist()
    [-0.0, -0.5]
    >>> Explanation.from_dict(exp.to_dict()).delta.tolist() == exp.delta.tolist()
    True
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .units import Unit, char_spans

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["POSTPROCESSING", "STEPS", "Explanation"]

POSTPROCESSING = ("none", "absolute", "square")
STEPS = ("cross_entropy", "probability")
_FORMAT = "hf_ext.atman.Explanation"
_VERSION = 1
_TARGETS = ("keep", "sum")


@dataclass
class Explanation:
    """The result of :meth:`AtManExplainer.explain`.

    Attributes:
        units: the explained items, in prompt order.
        delta: ``[U, T]`` float32 Δ of the step function per unit and target column; negative = important (see the
            module docstring). Always detached from autograd and on the CPU.
        target_tokens: the ``T`` column labels (target tokens, then the foil's tokens of a contrastive explanation).
        base_cross_entropy: ``[T]`` per-token CE of each column's token without suppression.
        tokens: the prompt's token strings (unpadded).
        offsets: ``[(start, end)]`` character offsets of the prompt tokens (empty for special / image tokens).
        prompt, target: the strings explained (``None`` when ids were given).
        mode, suppression_factor, conceptual_threshold: the settings used.
        image_grid: ``(rows, cols)`` of the tiles for image explanations, else ``None``.
        step: ``"cross_entropy"`` or ``"probability"`` (what Δ measures).
        foil: the contrast target of a contrastive explanation, else ``None``.
        n_foil_tokens: how many of the last columns belong to the foil (their Δ negated).
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
    step: str = "cross_entropy"
    foil: str | None = None
    n_foil_tokens: int = 0

    def __post_init__(self):
        # A result is plain data: whatever built it (a model whose parameters require grad, a user's tensor), it
        # must not hold autograd history or device memory (``exp.delta.numpy()`` works).
        self.delta = torch.as_tensor(self.delta).detach().float().cpu()
        self.base_cross_entropy = torch.as_tensor(self.base_cross_entropy).detach().float().cpu()
        if self.delta.dim() != 2 or self.delta.shape[0] != len(self.units):
            raise ValueError(f"delta must be [units, target tokens] = [{len(self.units)}, T], got shape "
                             f"{tuple(self.delta.shape)}")
        if self.step not in STEPS:
            raise ValueError(f"step={self.step!r} is not one of {STEPS}")

    @property
    def contrastive(self) -> bool:
        """Whether this explains ``target`` against a ``foil``."""
        return self.foil is not None

    def scores(self, postprocessing: str = "none", *, normalize: bool = False, target_token: int | None = None) -> torch.Tensor:
        """One score per unit (a detached CPU tensor).

        Args:
            postprocessing: ``"none"`` (raw Δ; negative = important), ``"absolute"`` (|Δ|) or ``"square"`` (Δ²),
                applied per target token before aggregation (the API's semantics).
            normalize: min-max normalise to [0, 1] after post-processing (denominator + 1e-8, as the reference).
            target_token: explain only this column; ``None`` = the complete target (sum over columns; for a
                contrastive explanation the change of the target-minus-foil difference).

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
        d = self.delta.detach()
        if target_token is not None:
            if isinstance(target_token, bool) or not isinstance(target_token, int) or not -d.shape[1] <= target_token < d.shape[1]:
                raise ValueError(f"target_token={target_token!r} is out of range for {d.shape[1]} target tokens")
            d = d[:, [target_token]]
        d = {"none": d, "absolute": d.abs(), "square": d.square()}[postprocessing]
        s = d.sum(1)
        if normalize and s.numel():
            s = (s - s.min()) / (s.max() - s.min() + 1e-8)
        return s

    def importance(self) -> torch.Tensor:
        """``[U]``: how much the complete target's step function falls when the unit is suppressed (``−Σ_t Δ_{j,t}``)."""
        return -self.delta.sum(1)

    # ------------------------------------------------------------------------------------------------ aggregation
    def aggregate(self, granularity: str | None = "word", *, targets: str = "keep") -> Explanation:
        """Sum Δ over larger prompt units and/or over the target's tokens.

        Aggregation adds the single-unit Δs (as attribution tools aggregate token scores); it is not the Δ of
        suppressing the whole word at once, which ``explain(..., granularity="word")`` measures.

        Args:
            granularity: ``"word"``, ``"sentence"``, ``"paragraph"`` or a delimiter string (spans of
                :func:`~hf_ext.atman.units.char_spans` over ``prompt``): each unit with a character span joins the
                span it overlaps (one between spans, e.g. a space token, joins the next span, so every unit's Δ is
                counted once); units without one (BOS, image tiles) stay as they are. ``None``/``"token"``: keep
                the units.
            targets: ``"keep"`` (one column per target token) or ``"sum"`` (one column: the complete target, for a
                contrastive explanation the target-minus-foil difference).

        Returns:
            A new :class:`Explanation` (units in prompt order).

        Example:
            >>> from hf_ext.atman import AtManExplainer
            >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
            >>> exp = AtManExplainer(tiny_causal_lm(), tiny_tokenizer(), progress=False).explain("a cat. it", " sat")
            >>> [u.label for u in exp.aggregate("sentence", targets="sum").units]
            ['<s>', 'a cat.', 'it']
        """
        if targets not in _TARGETS:
            raise ValueError(f"targets={targets!r} is not one of {_TARGETS}")
        units, delta = list(self.units), self.delta
        if granularity not in (None, "token"):
            if self.prompt is None:
                raise ValueError(f"aggregate(granularity={granularity!r}) needs the prompt string; this explanation "
                                 "was made from ids (prompt=None)")
            units, delta = _merge_units(self.units, self.delta, self.prompt, granularity)
        out = replace(self, units=units, delta=delta)
        if targets == "sum":
            label = "".join(self.target_tokens) if self.target is None else self.target
            if self.foil is not None:
                label = f"{label} rather than {self.foil}"
            out = replace(out, delta=delta.sum(1, keepdim=True), target_tokens=[label],
                          base_cross_entropy=self.base_cross_entropy.sum().reshape(1), n_foil_tokens=0)
        return out

    # ------------------------------------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """JSON-serialisable dict (plain lists and strings, no pickles); :meth:`from_dict` restores it exactly."""
        return {
            "format": _FORMAT, "version": _VERSION,
            "prompt": self.prompt, "target": self.target, "foil": self.foil, "step": self.step,
            "n_foil_tokens": self.n_foil_tokens, "tokens": self.tokens, "offsets": [list(o) for o in self.offsets],
            "target_tokens": self.target_tokens, "base_cross_entropy": self.base_cross_entropy.tolist(),
            "units": [{"label": u.label, "positions": u.positions, "char_span": None if u.char_span is None else list(u.char_span),
                       "tile": None if u.tile is None else list(u.tile)} for u in self.units],
            "delta": self.delta.tolist(), "mode": self.mode, "suppression_factor": self.suppression_factor,
            "conceptual_threshold": self.conceptual_threshold,
            "image_grid": None if self.image_grid is None else list(self.image_grid),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Explanation:
        """The :class:`Explanation` of a :meth:`to_dict` dict (float32 values come back bit for bit).

        Raises:
            TypeError: ``data`` is not a dict.
            ValueError: a dict of another format or a newer version, or one missing a required field.
        """
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict from Explanation.to_dict(), got {type(data).__name__}")
        if data.get("format", _FORMAT) != _FORMAT or int(data.get("version", 1)) > _VERSION:
            raise ValueError(f"data is format {data.get('format')!r} version {data.get('version')!r}; expected "
                             f"{_FORMAT!r} version <= {_VERSION}")
        missing = [k for k in ("units", "delta", "target_tokens", "base_cross_entropy") if k not in data]
        if missing:
            raise ValueError(f"data lacks the fields {missing}; it is not an Explanation.to_dict() dict")
        units = [Unit(label=u["label"], positions=[int(p) for p in u["positions"]],
                      char_span=None if u.get("char_span") is None else tuple(u["char_span"]),
                      tile=None if u.get("tile") is None else tuple(u["tile"])) for u in data["units"]]
        delta = torch.tensor(data["delta"], dtype=torch.float32).reshape(len(units), len(data["target_tokens"]))
        known = {f.name for f in fields(cls)} - {"units", "delta", "base_cross_entropy", "offsets", "image_grid"}
        kwargs = {k: data[k] for k in known if k in data}
        return cls(units=units, delta=delta, base_cross_entropy=torch.tensor(data["base_cross_entropy"], dtype=torch.float32),
                   offsets=[tuple(o) for o in data.get("offsets", [])],
                   image_grid=None if data.get("image_grid") is None else tuple(data["image_grid"]), **kwargs)

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (parent folders created); returns the path.

        Example:
            >>> import tempfile, os
            >>> exp = Explanation(units=[Unit("a", [0])], delta=torch.tensor([[0.25]]), target_tokens=["x"],
            ...                   base_cross_entropy=torch.ones(1))
            >>> p = exp.save(os.path.join(tempfile.mkdtemp(), "exp.json"))
            >>> Explanation.load(p).delta.tolist()
            [[0.25]]
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Explanation:
        """Read an explanation written by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is not an explanation's JSON.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path={str(path)!r} is not a file; give the JSON written by Explanation.save()")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"path={str(path)!r} is not JSON ({err}); give the file written by Explanation.save()") from err
        return cls.from_dict(data)

    # ------------------------------------------------------------------------------------------------ display
    def to_html(self, postprocessing: str = "none", *, target_token: int | None = None, lang: str = "en",
                full_page: bool = True, open_tokens: bool = False) -> str:
        """An HTML heat-map of the prompt with a legend, a scale, the values as text and one view per target token
        (see :func:`hf_ext.atman.render.to_html` for the arguments)."""
        from .render import to_html

        return to_html(self, postprocessing=postprocessing, target_token=target_token, lang=lang, full_page=full_page,
                       open_tokens=open_tokens)

    def _repr_html_(self) -> str:
        """Rich display in Jupyter: the :meth:`to_html` view as a fragment (no ``<html>`` page around it)."""
        return self.to_html(full_page=False)

    def plot(self, path: str | os.PathLike | None = None, *, postprocessing: str = "none",
             target_token: int | None = None) -> Figure:
        """Bar chart (text) or tile heat-map (image) as a matplotlib Figure; saved as PNG when ``path`` is given.

        Args:
            path: where to write the PNG (``None``: not written).
            postprocessing: ``"none"``, ``"absolute"`` or ``"square"`` (as :meth:`scores`).
            target_token: show the scores of this target token (column) only; ``None`` = the complete target.

        Raises:
            ImportError: matplotlib is not installed (the ``plots`` extra).
        """
        from .render import plot

        return plot(self, path, postprocessing=postprocessing, target_token=target_token)


def _merge_units(units: list[Unit], delta: torch.Tensor, prompt: str, granularity: str):
    """Units of ``granularity`` spans over ``prompt`` and their summed Δ rows (units without a span kept)."""
    spans = char_spans(prompt, granularity)
    groups: dict[object, list[int]] = {}
    for j, u in enumerate(units):
        key = ("unit", j)
        if u.char_span is not None:
            s0, e0 = u.char_span
            hit = next((k for k, (s, e) in enumerate(spans) if e0 > s0 and e0 > s and s0 < e), None)
            if hit is None and spans:  # text between spans (whitespace) joins the next span: totals are kept
                hit = next((k for k, (s, _) in enumerate(spans) if s >= e0), len(spans) - 1)
            if hit is not None:
                key = ("span", hit)
        groups.setdefault(key, []).append(j)
    merged = []
    for key, members in groups.items():
        positions = sorted({p for j in members for p in units[j].positions})
        if key[0] == "span":
            s, e = spans[key[1]]
            unit = Unit(label=prompt[s:e], positions=positions, char_span=(s, e))
        else:
            unit = units[members[0]]
        merged.append((min(positions, default=0), unit, delta[members].sum(0)))
    merged.sort(key=lambda m: m[0])
    if not merged:
        return [], delta[:0]
    return [m[1] for m in merged], torch.stack([m[2] for m in merged])
