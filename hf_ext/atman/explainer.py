"""AtMan explanations: how much the target's loss changes when one prompt item is suppressed inside attention.

For a prompt ``p`` and a target ``y_1..y_T`` the model reads ``[p ; y_1..y_{T-1}]`` and predicts ``y_t`` from the
logits at position ``len(p) - 1 + t``. For each *unit* ``j`` (token, word, sentence, paragraph, custom chunk, image
tile) AtMan runs one forward in which the unit's key positions get the attention weight ``s`` (the suppression
factor) in every layer and head, and reports

    Δ_{j,t} = CE_t(original) − CE_t(unit j suppressed)        (AtMan's ``default_loss − loss``)

so **important units have negative Δ** (suppressing them raises the loss). With a cosine threshold ``κ`` the units'
*neighbours* (tokens whose input embeddings have cosine similarity θ ≥ κ with a suppressed token) are co-suppressed
with the weight ``s + (1 − s)(1 − θ)`` (capped to the ``max_neighbours`` most similar per token).

Modes (see :mod:`hf_ext.core.attention`): ``"log_additive"`` (default, the production API's: adds ``log s`` to the
scores; ``s = 0`` removes the key exactly), ``"multiplicative"`` (the reference's min-shifted product with the
minimum over *visible* keys: causal) and ``"reference_compat"`` (the reference code's non-causal variant, for
reproducing published numbers; prefix reuse is disabled under it because it is not exact there).

Speed: every target token is scored in one pass; perturbations are batched ``max_batch_size`` at a time; and the
base pass's KV cache is reused for the positions before each batch's first suppressed position (exact in the causal
modes: suppressing key ``i`` leaves rows ``< i`` unchanged). Perturbations are sorted by that start position so the
batches are tight; in log-additive mode their suffixes are packed end to end into rows of at most ``L`` tokens
(:mod:`hf_ext.atman.packing`, segment attention on CPU: :mod:`hf_ext.core.segments`).

Defaults and which are choices **[unconfirmed]** against the paper: ``suppression_factor=0.1`` (reference ``Explainer``
and API ``control_factor`` default), ``conceptual_threshold=None`` (API default: no neighbourhood; the reference's
``Explainer`` uses 0.6 — pass it to get the paper's conceptual suppression), ``max_neighbours=None`` (the BLIP port
caps at 150).

Example:
    >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
    >>> explainer = AtManExplainer(tiny_causal_lm("llama"), tiny_tokenizer(), progress=False)
    >>> exp = explainer.explain("the cat sat", " on", granularity="word")
    >>> [u.label for u in exp.units], tuple(exp.delta.shape)
    (['the', 'cat', 'sat'], (3, 3))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from hf_ext.core.anatomy import get_anatomy
from hf_ext.core.attention import attention_controls
from hf_ext.core.cache import SuffixRecomputeCache, cache_argument
from hf_ext.core.inputs import position_ids_from_mask
from hf_ext.core.segments import SegmentPlan, layer_map, segment_attention
from hf_ext.utils.logging import get_logger

from .packing import pack, packed_inputs, segment_inputs
from .units import GRANULARITIES, Unit, text_units, tile_units

logger = get_logger(__name__)

MODES = ("log_additive", "multiplicative", "reference_compat")
_CORE_MODE = {"log_additive": "log_additive", "multiplicative": "multiplicative",
              "reference_compat": "multiplicative_reference"}
POSTPROCESSING = ("none", "absolute", "square")


# --------------------------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------------------
# The prepared sequence (base pass, cache, embeddings)
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _Prepared:
    feed_name: str               # "input_ids" or "inputs_embeds"
    feed: torch.Tensor           # [1, L] ids or [1, L, D] embeddings
    attention_mask: torch.Tensor  # [1, L]
    position_ids: torch.Tensor   # [1, L]
    pad: int                     # left-padding length
    prompt_len: int              # prompt length including padding
    target_ids: torch.Tensor     # [T]
    base_ce: torch.Tensor        # [T]
    cache: object | None         # the base pass's SuffixRecomputeCache
    dirty_from: int | None = None  # cache positions >= this hold a perturbed forward's states, not the base pass's

    @property
    def length(self) -> int:
        return self.attention_mask.shape[1]


def _sliding_window(config) -> int | None:
    """The model's attention window where some layer has one (``None``: every layer sees the whole sequence)."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return window if "sliding_attention" in layer_types else None
    if not window or getattr(config, "use_sliding_window", True) is False:
        return None
    return int(window)


def _check_factor(name: str, value, low: float, high: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low \
            or (high is not None and value > high):
        rng = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name}={value!r} is outside its valid range {rng}")
    return float(value)


class AtManExplainer:
    """Explain a causal LM's (or Llava-style VLM's) target by suppressing prompt items inside attention.

    Args:
        model: any transformers causal LM / VLM running ``sdpa`` or ``eager`` attention (flash/flex kernels cannot
            take per-key weights: a ``ValueError`` says how to switch).
        tokenizer: a fast tokenizer (offsets are needed for word/sentence/paragraph units); optional for
            :meth:`explain_ids`.
        mode: ``"log_additive"`` (default), ``"multiplicative"`` or ``"reference_compat"``.
        suppression_factor: attention weight ``s`` of a suppressed key, in ``[0, 1]`` (1 = no-op, 0 = removal in
            log-additive mode). Default 0.1.
        conceptual_threshold: κ in ``[0, 1]`` for co-suppressing similar tokens, ``None`` = off.
        max_neighbours: at most this many neighbours per suppressed token (most similar first); ``None`` = no cap.
        layers: decoder layers to manipulate (``None`` = all).
        max_batch_size: rows per forward (one perturbation per row, or several packed ones: see ``pack``).
        prefix_reuse: reuse the base pass's KV cache before the first suppressed position (disabled automatically
            for ``"reference_compat"``).
        pack: with prefix reuse in log-additive mode on all layers, put several perturbations' suffixes end to end
            in one row of at most the sequence's length (see :mod:`hf_ext.atman.packing`): fewer, fuller forwards,
            each no longer than one plain forward. ``"segments"``: each suffix attends to its own positions (one
            attention call per suffix and layer; fewest FLOPs, the cache holds only the base pass);
            ``"mask"``: one 4D mask keeps the suffixes apart (one attention call per layer; the cache holds
            ``2L`` positions); ``True`` (default): ``"segments"`` on CPU, ``"mask"`` on accelerators, where kernel
            launches cost more than masked-out scores. ``False``: one perturbation per row. Sequences longer than a
            model's sliding attention window are not packed (only the model's own masks are right there).
        progress: show a tqdm bar over batches.

    Example:
        >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
        >>> ex = AtManExplainer(tiny_causal_lm("gpt2"), tiny_tokenizer(), max_batch_size=4, progress=False)
        >>> ex.explain("hello world", "!").delta.shape
        torch.Size([12, 1])
    """

    def __init__(self, model: nn.Module, tokenizer=None, *, mode: str = "log_additive", suppression_factor: float = 0.1,
                 conceptual_threshold: float | None = None, max_neighbours: int | None = None,
                 layers: int | Sequence[int] | None = None, max_batch_size: int = 1, prefix_reuse: bool = True,
                 pack: bool | str = True, progress: bool = True):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not one of {MODES}")
        self.model = model
        self.tokenizer = tokenizer
        self.mode = mode
        self.suppression_factor = _check_factor("suppression_factor", suppression_factor, 0.0, 1.0)
        self.conceptual_threshold = None if conceptual_threshold is None else _check_factor(
            "conceptual_threshold", conceptual_threshold, 0.0, 1.0)
        if max_neighbours is not None and (isinstance(max_neighbours, bool) or not isinstance(max_neighbours, int) or max_neighbours < 0):
            raise ValueError(f"max_neighbours={max_neighbours!r} must be None or an int >= 0")
        self.max_neighbours = max_neighbours
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size={max_batch_size!r} must be an int >= 1")
        self.max_batch_size = max_batch_size
        self.layers = layers
        self.prefix_reuse = bool(prefix_reuse) and mode != "reference_compat"
        if pack not in (True, False, "segments", "mask"):
            raise ValueError(f"pack={pack!r} must be True, False, 'segments' or 'mask'")
        self.progress = progress
        self.anatomy = get_anatomy(model)
        if self.prefix_reuse and any(a is None for a in self.anatomy.attentions):
            # a state-space / linear-attention layer carries a recurrent state, not per-position keys and values:
            # the prefix cannot be resumed from an attention cache
            logger.info("AtMan: %s has decoder layers without attention; prefix reuse is off", self.anatomy.family)
            self.prefix_reuse = False
        # Packing expresses the manipulation as one additive bias per suffix for every layer: log-additive, all
        # layers, and sequences no longer than a sliding window (a packed row's masks are ours, not the model's).
        self.pack = bool(pack) and self.prefix_reuse and mode == "log_additive" and layers is None
        self._pack_how = pack if isinstance(pack, str) else None
        self._packing_checked = False
        self._window = _sliding_window(self.anatomy.text_config)
        impl = getattr(self.anatomy.text_config, "_attn_implementation", None) or "eager"
        if impl not in ("sdpa", "eager"):
            raise ValueError(
                f"AtMan needs the 'sdpa' or 'eager' attention implementation, but {type(model).__name__} uses {impl!r} "
                "(flash/flex kernels cannot take per-key weights); call model.set_attn_implementation('sdpa') first")

    # ---------------------------------------------------------------------------------------------- public API
    def explain(self, prompt: str, target: str, *, granularity: str = "token", include_target: bool = False,
                add_special_tokens: bool = True) -> Explanation:
        """Explain ``target`` given ``prompt`` (strings).

        Args:
            prompt: the prompt text (non-empty).
            target: the continuation to explain (non-empty; its tokens are appended to the prompt's without specials).
            granularity: ``"token"``, ``"word"``, ``"sentence"``, ``"paragraph"`` or a custom delimiter string.
            include_target: also explain the target's own tokens (all but the last), at token granularity.
            add_special_tokens: let the tokenizer add its specials (e.g. BOS) to the prompt.

        Returns:
            An :class:`Explanation` with ``delta`` of shape ``[units, target tokens]``.
        """
        prep, units, tokens, offsets = self._prepare_strings(prompt, target, granularity, add_special_tokens)
        exp = self._explain(prep, units, include_target)
        exp.prompt, exp.target, exp.tokens, exp.offsets = prompt, target, tokens, offsets
        return exp

    @torch.no_grad()
    def _prepare_strings(self, prompt, target, granularity="token", add_special_tokens=True):
        if self.tokenizer is None:
            raise ValueError("explain() needs a tokenizer; pass one to AtManExplainer(model, tokenizer) or use explain_ids()")
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        if not isinstance(target, str) or not target:
            raise ValueError(f"target must be a non-empty string, got {target!r}")
        if granularity in ("", None):
            raise ValueError(f"granularity must be one of {GRANULARITIES} or a delimiter string, got {granularity!r}")
        enc = self.tokenizer(prompt, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        prompt_ids = list(enc["input_ids"])
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        target_ids = list(self.tokenizer(target, add_special_tokens=False)["input_ids"])
        if not target_ids:
            raise ValueError(f"target {target!r} tokenizes to no tokens")
        tokens = self.tokenizer.convert_ids_to_tokens(prompt_ids)
        units = text_units(prompt, offsets, granularity, tokens=tokens)
        if not units:
            raise ValueError(f"prompt {prompt!r} has no units at granularity {granularity!r}")
        ids, mask, tgt = self._as_prompt(prompt_ids, None, target_ids)
        return self._prepare_text(ids, mask, tgt), units, tokens, offsets

    @torch.no_grad()
    def explain_ids(self, prompt_ids, target_ids, *, attention_mask=None, units: list[Unit] | None = None,
                    include_target: bool = False) -> Explanation:
        """Explain from token ids.

        Args:
            prompt_ids: ``[P]`` or ``[1, P]`` prompt ids, possibly left-padded (then give ``attention_mask``).
            target_ids: ``[T]`` target ids.
            attention_mask: ``[P]`` / ``[1, P]`` mask of the prompt (0 = left padding).
            units: units with positions in the *unpadded* prompt; default one per prompt token.
            include_target: add one unit per target token but the last.
        """
        ids, mask, target = self._as_prompt(prompt_ids, attention_mask, target_ids)
        prep = self._prepare_text(ids, mask, target)
        return self._explain(prep, units, include_target)

    @torch.no_grad()
    def explain_image(self, inputs: dict, target_ids, *, image_token_id: int | None = None, grid: tuple[int, int] | None = None,
                      tile: int = 1, include_text: bool = False) -> Explanation:
        """Explain a Llava-style VLM's target over image tiles (the vision tower is not touched).

        Args:
            inputs: one example's processor output: ``input_ids`` ``[1, P]`` with the image placeholders,
                ``pixel_values``, optionally ``attention_mask``.
            target_ids: ``[T]`` target ids.
            image_token_id: the placeholder id (default ``model.config.image_token_id``).
            grid: ``(rows, cols)`` of patches (default: a square of the placeholder count).
            tile: patches per tile side.
            include_text: also explain every text token of the prompt.

        Returns:
            An :class:`Explanation` whose units are the tiles (``image_grid`` set), then text tokens.
        """
        inputs = dict(inputs)
        ids, mask, target = self._as_prompt(inputs.pop("input_ids"), inputs.pop("attention_mask", None), target_ids)
        image_token_id = getattr(self.model.config, "image_token_id", None) if image_token_id is None else image_token_id
        if image_token_id is None:
            raise ValueError(f"{type(self.model).__name__} has no config.image_token_id; pass image_token_id=")
        pad = int((mask[0] == 0).sum())
        image_pos = (ids[0, pad:] == image_token_id).nonzero().flatten().tolist()
        if not image_pos:
            raise ValueError(f"the prompt has no image placeholder token (id {image_token_id})")
        if grid is None:
            side = math.isqrt(len(image_pos))
            if side * side != len(image_pos):
                raise ValueError(f"{len(image_pos)} image tokens are not a square; pass grid=(rows, cols)")
            grid = (side, side)
        units = tile_units(image_pos, grid, tile)
        if include_text:
            units += [Unit(label=str(int(ids[0, pad + i])), positions=[i]) for i in range(ids.shape[1] - pad) if i not in set(image_pos)]
        prep = self._prepare_embeds(ids, mask, target, inputs)
        exp = self._explain(prep, units, False)
        exp.image_grid = (math.ceil(grid[0] / tile), math.ceil(grid[1] / tile))
        return exp

    # ---------------------------------------------------------------------------------------------- internals
    def _as_prompt(self, prompt_ids, attention_mask, target_ids):
        ids = torch.as_tensor(prompt_ids, dtype=torch.long)
        ids = ids.unsqueeze(0) if ids.dim() == 1 else ids
        if ids.dim() != 2 or ids.shape[0] != 1:
            raise ValueError(f"prompt_ids must be [P] or [1, P] (one example), got shape {tuple(ids.shape)}")
        mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask, dtype=torch.long).view(1, -1)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask shape {tuple(mask.shape)} does not match prompt_ids {tuple(ids.shape)}")
        if int(mask.sum()) == 0:
            raise ValueError("the prompt is empty: give at least one prompt token")
        target = torch.as_tensor(target_ids, dtype=torch.long).flatten()
        if target.numel() == 0:
            raise ValueError("the target is empty: give at least one target token")
        limit = getattr(self.anatomy.text_config, "max_position_embeddings", None) or getattr(self.anatomy.text_config, "n_positions", None)
        if limit is not None and int(mask.sum()) + target.numel() - 1 > limit:
            raise ValueError(f"prompt ({int(mask.sum())} tokens) + target ({target.numel()} tokens) is longer than the model's "
                             f"context of {limit} positions; shorten the prompt or the target")
        device = self._device()
        return ids.to(device), mask.to(device), target.to(device)

    def _device(self):
        return next(self.model.parameters()).device

    @property
    def packing(self) -> str | None:
        """How perturbations are packed: ``"segments"``, ``"mask"`` or ``None`` (one per row); sequences longer
        than the model's sliding window are not packed (see :meth:`packing_for`)."""
        if not self.pack:
            return None
        return self._pack_how or ("segments" if self._device().type == "cpu" else "mask")

    def packing_for(self, length: int) -> str | None:
        """:attr:`packing` for a sequence of ``length`` positions: ``None`` beyond a sliding window, where only the
        model's own masks are right."""
        return None if self._window is not None and length > self._window else self.packing

    def _base_pass(self, feed_name, feed, mask, pos, target, extra=None):
        T = target.numel()
        L = mask.shape[1]
        # Mask-packed forwards append their keys after the base pass's L positions (at most L more).
        cache = SuffixRecomputeCache(2 * L if self.packing_for(L) == "mask" else L) if self.prefix_reuse else None
        kw = {cache_argument(self.model): cache} if cache is not None else {}
        try:
            with self._unmanipulated(L):
                out = self.model(**{feed_name: feed}, **(extra or {}), **kw, attention_mask=mask, position_ids=pos,
                                 use_cache=self.prefix_reuse, logits_to_keep=T)
        except (RuntimeError, ValueError, AttributeError, IndexError, TypeError) as err:
            if cache is None:
                raise
            # a family with a cache of its own (sparse-attention indexers, compressed or recurrent states) cannot
            # write into the suffix-recompute cache: score every perturbation with a full forward instead
            logger.info("AtMan: %s cannot use the prefix cache (%s: %s); prefix reuse is off", self.anatomy.family,
                        type(err).__name__, err)
            self.prefix_reuse, self.pack = False, False
            return self._base_pass(feed_name, feed, mask, pos, target, extra)
        ce = nn.functional.cross_entropy(out.logits[0, -T:].float(), target, reduction="none")
        if cache is not None and not cache.layers:
            raise ValueError(f"{type(self.model).__name__} did not fill the key/value cache it was given; "
                             "use prefix_reuse=False")
        return ce, cache

    def _unmanipulated(self, length: int):
        """Context of the base pass: weights 1 are the plain model in log-additive mode (a zero bias on the visible
        keys), so it runs plain, on the model's own (causal, lighter) kernels; the multiplicative modes keep their
        score shift, as their perturbed forwards have it."""
        if self.mode == "log_additive":
            return nullcontext()
        return attention_controls(self.model, torch.ones(1, length), mode=_CORE_MODE[self.mode], layers=self.layers)

    def _restore_base(self, prep: _Prepared) -> None:
        """Recompute the base pass from ``prep.dirty_from`` into the cache (after an earlier :meth:`score_weights`)."""
        s = prep.dirty_from
        if s is None or prep.cache is None:
            return
        prep.cache.resume_from(s, 1, rewrite=True)
        with self._unmanipulated(prep.length):
            self.model(**{prep.feed_name: prep.feed[:, s:], cache_argument(self.model): prep.cache},
                       attention_mask=prep.attention_mask, position_ids=prep.position_ids[:, s:], use_cache=True,
                       logits_to_keep=1)
        prep.cache.broadcast_base(s)
        prep.dirty_from = None

    def _prepare_text(self, ids, mask, target) -> _Prepared:
        seq = torch.cat([ids, target[:-1].view(1, -1)], dim=1)
        full_mask = torch.cat([mask, torch.ones(1, target.numel() - 1, dtype=mask.dtype, device=mask.device)], dim=1)
        pos = position_ids_from_mask(full_mask)
        ce, cache = self._base_pass("input_ids", seq, full_mask, pos, target)
        return _Prepared("input_ids", seq, full_mask, pos, int((mask[0] == 0).sum()), ids.shape[1], target, ce, cache)

    def _prepare_embeds(self, ids, mask, target, extra) -> _Prepared:
        seq = torch.cat([ids, target[:-1].view(1, -1)], dim=1)
        full_mask = torch.cat([mask, torch.ones(1, target.numel() - 1, dtype=mask.dtype, device=mask.device)], dim=1)
        pos = position_ids_from_mask(full_mask)
        captured = {}

        def grab(module, args, kwargs):
            captured["embeds"] = kwargs.get("inputs_embeds")

        handle = self.anatomy.decoder.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            ce, cache = self._base_pass("input_ids", seq, full_mask, pos, target, extra)
        finally:
            handle.remove()
        embeds = captured.get("embeds")
        if embeds is None:
            raise ValueError(f"{type(self.model).__name__} did not pass inputs_embeds to its language model; image "
                             "explanations need a Llava-style model")
        return _Prepared("inputs_embeds", embeds, full_mask, pos, int((mask[0] == 0).sum()), ids.shape[1], target, ce,
                         cache)

    def _unit_weights(self, prep: _Prepared, positions: Sequence[Sequence[int]], factor: float | None = None,
                      neighbourhood: bool = True) -> torch.Tensor:
        """``[C, L]`` weights of the configs (positions in the unpadded sequence)."""
        s = self.suppression_factor if factor is None else factor
        L = prep.length
        weights = torch.ones(len(positions), L)
        kappa = self.conceptual_threshold if neighbourhood else None
        cos = None
        if kappa is not None:
            # The input embeddings ([L, D]): the language model's input, image features included.
            emb = self.anatomy.input_embeddings(prep.feed) if prep.feed_name == "input_ids" else prep.feed
            e = nn.functional.normalize(emb[0].detach().float(), dim=-1)
            cos = (e @ e.T).cpu()
            real = prep.attention_mask[0].bool().cpu()
        for c, pos in enumerate(positions):
            idx = torch.as_tensor([int(p) + prep.pad for p in pos], dtype=torch.long)
            if idx.numel() and (idx.min() < prep.pad or idx.max() >= L):
                raise ValueError(f"unit positions {list(pos)} are outside the sequence of {L - prep.pad} tokens")
            weights[c, idx] = s
            if cos is None:
                continue
            for i in idx.tolist():
                theta = cos[i]
                cand = real & (theta >= kappa)
                cand[i] = False
                cand[idx] = False
                picked = cand.nonzero().flatten()
                if self.max_neighbours is not None and picked.numel() > self.max_neighbours:
                    picked = picked[theta[picked].topk(self.max_neighbours).indices]
                m = s + (1 - s) * (1 - theta[picked])
                weights[c, picked] = torch.minimum(weights[c, picked], m)
        return weights

    def score_weights(self, prep: _Prepared, weights: torch.Tensor, *, desc: str = "AtMan") -> torch.Tensor:
        """Per-token target CE ``[C, T]`` under each row of ``weights`` ``[C, L]`` (batched, prefix-reused)."""
        L = prep.length
        C = weights.shape[0]
        starts = []
        for w in weights:
            changed = (w != 1).nonzero()
            starts.append(int(changed[0]) if changed.numel() else L)
        if not self.prefix_reuse:
            starts = [0 if s < L else L for s in starts]
        # Latest start first: a forward from s overwrites cache positions >= s only, which no later batch
        # (starting at or before s) reads (hf_ext.core.cache).
        order = sorted(range(C), key=lambda c: -starts[c])
        ce = prep.base_ce.unsqueeze(0).repeat(C, 1)
        todo = [c for c in order if starts[c] < L]
        device = prep.attention_mask.device
        if self.packing_for(L) and todo:
            try:
                packed = self._score_packed(prep, weights, {c: starts[c] for c in todo}, ce.clone().to(device), desc)
            except (RuntimeError, ValueError) as err:
                if self._packing_checked:
                    raise
                logger.info("AtMan: packing fails on %s (%s: %s); not packing", self.anatomy.family,
                            type(err).__name__, err)
                self.pack = False
                return self._score_unpacked(prep, weights, starts, todo, ce, desc)
            if self._packing_checked:
                return packed
            # The packed path reuses the model's cache and calls its attention per segment: exact for ordinary
            # attention, not for every family (latent-KV caches, differential or gated attention …). Its first
            # result is checked once against one plain forward; on disagreement this explainer stops packing.
            probe = todo[:1]
            plain = self._score_unpacked(prep, weights, starts, probe, ce.clone(), desc)
            if torch.allclose(packed[probe].float(), plain[probe].float(), rtol=1e-4, atol=1e-5):
                self._packing_checked = True
                return packed
            logger.info("AtMan: packed perturbations disagree with a plain forward on %s (%s); not packing",
                        self.anatomy.family, type(self.model).__name__)
            self.pack = False
        return self._score_unpacked(prep, weights, starts, todo, ce, desc)

    def _score_unpacked(self, prep: _Prepared, weights: torch.Tensor, starts: list[int], todo: list[int],
                        ce: torch.Tensor, desc: str) -> torch.Tensor:
        """Fill ``ce`` ``[C, T]`` for the perturbations ``todo`` (latest start first), one per row, prefix-reused."""
        from hf_ext.utils.progress import progress_bar

        L, T = prep.length, prep.target_ids.numel()
        batches = [todo[i : i + self.max_batch_size] for i in range(0, len(todo), self.max_batch_size)]
        device = prep.attention_mask.device
        mode = _CORE_MODE[self.mode]
        if batches:
            self._restore_base(prep)
        cache_kw = cache_argument(self.model)
        for batch in progress_bar(batches, desc=desc, enabled=self.progress, leave=False):
            B = len(batch)
            s = min(starts[c] for c in batch)
            keep = min(T, L - s)
            feed = prep.feed[:, s:]
            kwargs = {prep.feed_name: feed.expand(B, *feed.shape[1:])}
            if s > 0:
                kwargs[cache_kw] = prep.cache.resume_from(s, B)
                prep.dirty_from = s
            with attention_controls(self.model, weights[batch], mode=mode, layers=self.layers):
                out = self.model(**kwargs, attention_mask=prep.attention_mask.expand(B, -1),
                                 position_ids=prep.position_ids[:, s:].expand(B, -1), use_cache=s > 0, logits_to_keep=keep)
            logits = out.logits[:, -keep:].float()
            tgt = prep.target_ids[T - keep:].expand(B, -1)
            new = nn.functional.cross_entropy(logits.reshape(B * keep, -1), tgt.reshape(-1), reduction="none").view(B, keep)
            ce[batch, T - keep:] = new.to(ce.device)
            del out
        return ce.to(device) if ce.device != device else ce

    def _score_packed(self, prep: _Prepared, weights: torch.Tensor, starts: dict[int, int], ce: torch.Tensor,
                      desc: str) -> torch.Tensor:
        """Fill the target CE ``ce`` ``[C, T]`` (base values in) of the perturbations in ``starts``, packed forwards."""
        from hf_ext.utils.progress import progress_bar

        L, T = prep.length, prep.target_ids.numel()
        device = prep.attention_mask.device
        dtype = self.anatomy.input_embeddings.weight.dtype
        real = prep.attention_mask[0].bool()
        w = weights.to(device)
        segmented = self.packing_for(L) == "segments"
        layer_of = layer_map(self.model) if segmented else None
        cache_kw = cache_argument(self.model)
        for fb in progress_bar(pack(starts, L, capacity=L, rows_per_forward=self.max_batch_size), desc=desc,
                               enabled=self.progress, leave=False):
            B = len(fb.rows)
            # Query index (in its row) of every scored target position: segment c's last min(T, L - s) tokens.
            rows_idx, q_idx, pert, tgt_t = [], [], [], []
            for r, c, s, off in fb.segments:
                keep = min(T, L - s)
                for t in range(T - keep, T):
                    rows_idx.append(r)
                    q_idx.append(off + (L - T + t) - s)
                    pert.append(c)
                    tgt_t.append(t)
            union = sorted(set(q_idx))
            column = {q: u for u, q in enumerate(union)}
            keep = {"logits_to_keep": torch.tensor(union, device=device)}
            if segmented:
                inp = segment_inputs(fb, weights=w, real=real, position_ids=prep.position_ids[0], dtype=dtype)
                with segment_attention(self.model, SegmentPlan(prep.cache, inp["segments"], layer_of)):
                    out = self.model(**{prep.feed_name: prep.feed[0][inp["positions"]]},
                                     position_ids=inp["position_ids"], use_cache=False, **keep)
            else:
                inp = packed_inputs(fb, weights=w, real=real, position_ids=prep.position_ids[0], dtype=dtype)
                out = self.model(**{prep.feed_name: prep.feed[0][inp["positions"]], cache_kw: prep.cache.resume_from(L, B)},
                                 attention_mask=inp["mask"], position_ids=inp["position_ids"], use_cache=True, **keep)
            logits = out.logits[torch.tensor(rows_idx, device=device), torch.tensor([column[q] for q in q_idx], device=device)]
            tgt_t = torch.tensor(tgt_t, device=device)
            new = nn.functional.cross_entropy(logits.float(), prep.target_ids[tgt_t], reduction="none")
            ce[torch.tensor(pert, device=device), tgt_t] = new
            del out, logits, inp
        return ce

    def _explain(self, prep: _Prepared, units: list[Unit] | None, include_target: bool) -> Explanation:
        n_prompt = prep.prompt_len - prep.pad
        if units is None:
            units = [Unit(label=str(int(prep.feed[0, prep.pad + i])) if prep.feed.dim() == 2 else str(i), positions=[i])
                     for i in range(n_prompt)]
        units = list(units)
        if include_target:
            T = prep.target_ids.numel()
            units += [Unit(label=f"target[{t}]", positions=[n_prompt + t]) for t in range(T - 1)]
        if not units:
            raise ValueError("nothing to explain: no units")
        weights = self._unit_weights(prep, [u.positions for u in units])
        ce = self.score_weights(prep, weights)
        delta = (prep.base_ce.unsqueeze(0) - ce).float().cpu()
        tok = self.tokenizer
        target_tokens = tok.convert_ids_to_tokens(prep.target_ids.tolist()) if tok is not None else [str(int(t)) for t in prep.target_ids]
        return Explanation(units=units, delta=delta, target_tokens=target_tokens, base_cross_entropy=prep.base_ce.float().cpu(),
                           mode=self.mode, suppression_factor=self.suppression_factor,
                           conceptual_threshold=self.conceptual_threshold)
