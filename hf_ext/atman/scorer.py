"""AtMan's forwards: the target's per-token cross-entropy under many rows of attention weights, fast.

:class:`AtManScorer` prepares one sequence (prompt ⊕ target without its last token, one *base pass* that fills a
KV cache) and then scores any number of weight rows ``[C, L]`` (one per perturbation) against it:

* perturbations are batched ``max_batch_size`` at a time, sorted by their first changed position ``s``, and
  each batch recomputes only positions ``s..L-1`` on top of the base pass's cache (exact in the causal modes:
  weighting key ``i`` leaves rows ``< i`` unchanged);
* in log-additive mode on all layers their suffixes are packed end to end into rows of at most ``L`` tokens
  (:mod:`hf_ext.atman.packing`; segment attention on CPU: :mod:`hf_ext.core.segments`).

Token losses come from :func:`hf_ext.core.scoring.token_cross_entropy`, as the core's teacher-forced scores do.
:class:`~hf_ext.atman.explainer.AtManExplainer` builds on it (units, neighbourhoods, explanations).

Example:
    >>> import torch
    >>> from hf_ext.testing import tiny_causal_lm
    >>> scorer = AtManScorer(tiny_causal_lm("llama"), progress=False)
    >>> prep = scorer.prepare(torch.tensor([[1, 5, 6, 7]]), torch.ones(1, 4, dtype=torch.long), torch.tensor([8, 9]))
    >>> weights = torch.ones(2, prep.length)
    >>> weights[1, 2] = 0.0                              # row 1 removes key 2
    >>> ce = scorer.score_weights(prep, weights)
    >>> ce.shape, torch.equal(ce[0], prep.base_ce)       # row 0 is the unperturbed model
    (torch.Size([2, 2]), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from hf_ext.core.anatomy import get_anatomy
from hf_ext.core.attention import attention_controls
from hf_ext.core.cache import SuffixRecomputeCache, cache_argument
from hf_ext.core.hooks import forward_hooks
from hf_ext.core.inputs import model_device, prepare_batch, takes_mask_positions
from hf_ext.core.scoring import token_cross_entropy
from hf_ext.core.segments import SegmentPlan, layer_map, segment_attention
from hf_ext.utils.logging import get_logger
from hf_ext.utils.validation import check_size

from .packing import pack, packed_inputs, segment_inputs

if TYPE_CHECKING:
    from tqdm import tqdm

logger = get_logger(__name__)

__all__ = ["MODES", "AtManScorer", "PreparedSequence"]

MODES = ("log_additive", "multiplicative", "reference_compat")
_CORE_MODE = {"log_additive": "log_additive", "multiplicative": "multiplicative",
              "reference_compat": "multiplicative_reference"}


@dataclass
class PreparedSequence:
    """One sequence ready to be scored under perturbations: its inputs, base-pass losses and cache.

    Attributes:
        feed_name: ``"input_ids"`` or ``"inputs_embeds"`` (image explanations feed the language model's embeddings).
        feed: ``[1, L]`` ids or ``[1, L, D]`` embeddings of prompt ⊕ target[:-1].
        attention_mask: ``[1, L]``.
        position_ids: ``[1, L]``.
        pad: left-padding length of the prompt.
        prompt_len: prompt length including padding.
        target_ids: ``[T]``.
        base_ce: ``[T]`` float32 per-token target cross-entropy of the unperturbed model.
        cache: the base pass's :class:`~hf_ext.core.cache.SuffixRecomputeCache` (``None`` without prefix reuse).
        dirty_from: cache positions ``>=`` this hold a perturbed forward's states, not the base pass's.
    """

    feed_name: str
    feed: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    pad: int
    prompt_len: int
    target_ids: torch.Tensor
    base_ce: torch.Tensor
    cache: object | None
    dirty_from: int | None = None

    @property
    def length(self) -> int:
        """Padded sequence length ``T`` (``attention_mask.shape[1]``)."""
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


def _rewind(bar, n: int) -> None:
    """Set ``bar`` back to ``n`` done (the perturbations of a discarded packed attempt are scored again)."""
    bar.n = n
    bar.refresh()


class AtManScorer:
    """Score a prepared sequence's target under rows of attention weights (AtMan's perturbed forwards).

    Args:
        model: any transformers causal LM / VLM running ``sdpa`` or ``eager`` attention (flash/flex kernels cannot
            take per-key weights: a ``ValueError`` says how to switch).
        mode: ``"log_additive"`` (default), ``"multiplicative"`` or ``"reference_compat"`` (see
            :mod:`hf_ext.atman.explainer`).
        layers: decoder layers to manipulate (``None`` = all).
        max_batch_size: rows per forward (one perturbation per row, or several packed ones: see ``pack``).
        prefix_reuse: reuse the base pass's KV cache before the first changed position (disabled automatically
            for ``"reference_compat"``, where it is not exact).
        pack: with prefix reuse in log-additive mode on all layers, put several perturbations' suffixes end to end
            in one row of at most the sequence's length (see :mod:`hf_ext.atman.packing`): fewer, fuller forwards,
            each no longer than one plain forward. ``"segments"``: each suffix attends to its own positions (one
            attention call per suffix and layer; fewest FLOPs, the cache holds only the base pass);
            ``"mask"``: one 4D mask keeps the suffixes apart (one attention call per layer; the cache holds
            ``2L`` positions); ``True`` (default): ``"segments"`` on CPU, ``"mask"`` on accelerators, where kernel
            launches cost more than masked-out scores. ``False``: one perturbation per row. Sequences longer than a
            model's sliding attention window are not packed (only the model's own masks are right there).
        progress: show a tqdm bar over the perturbations (advanced once per forward).

    Raises:
        ValueError: unknown mode or pack, ``max_batch_size < 1``, or a flash/flex attention implementation.
    """

    def __init__(self, model: nn.Module, *, mode: str = "log_additive", layers: int | Sequence[int] | None = None,
                 max_batch_size: int = 1, prefix_reuse: bool = True, pack: bool | str = True, progress: bool = True):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not one of {MODES}")
        self.model = model
        self.mode = mode
        check_size("max_batch_size", max_batch_size)
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
        # A family without position_ids (ALiBi: Bloom, MPT; TrOCR) or counting them otherwise (Kosmos-2.5: from
        # padding_idx + 1) gets none: it counts positions itself, on from the cache length, so plain and cached
        # passes are its own forward; packed rows (positions of their own) are not.
        self._takes_positions = takes_mask_positions(model)
        self.pack = (bool(pack) and self.prefix_reuse and mode == "log_additive" and layers is None
                     and self._takes_positions)
        self._pack_how = pack if isinstance(pack, str) else None
        self._packing_checked = False
        self._window = _sliding_window(self.anatomy.text_config)
        impl = getattr(self.anatomy.text_config, "_attn_implementation", None) or "eager"
        if impl not in ("sdpa", "eager"):
            raise ValueError(
                f"AtMan needs the 'sdpa' or 'eager' attention implementation, but {type(model).__name__} uses {impl!r} "
                "(flash/flex kernels cannot take per-key weights); call model.set_attn_implementation('sdpa') first")

    @property
    def packing(self) -> str | None:
        """How perturbations are packed: ``"segments"``, ``"mask"`` or ``None`` (one per row); sequences longer
        than the model's sliding window are not packed (see :meth:`packing_for`)."""
        if not self.pack:
            return None
        return self._pack_how or ("segments" if model_device(self.model).type == "cpu" else "mask")

    def packing_for(self, length: int) -> str | None:
        """:attr:`packing` for a sequence of ``length`` positions: ``None`` beyond a sliding window, where only the
        model's own masks are right."""
        return None if self._window is not None and length > self._window else self.packing

    @torch.no_grad()
    def prepare(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, target_ids: torch.Tensor,
                extra_inputs: dict | None = None) -> PreparedSequence:
        """Run the base pass over ``prompt ⊕ target[:-1]`` and keep what the perturbed forwards reuse.

        Args:
            prompt_ids: ``[1, P]`` prompt ids (possibly left-padded), on the model's device.
            attention_mask: ``[1, P]`` its mask (0 = left padding).
            target_ids: ``[T]`` target ids.
            extra_inputs: further model inputs of a VLM (``pixel_values`` …): the sequence is then fed as the
                language model's ``inputs_embeds`` (image features included), captured during the base pass.

        Returns:
            A :class:`PreparedSequence`.

        Raises:
            ValueError: a VLM that does not hand ``inputs_embeds`` to its language model, or a model that did not
                fill the cache it was given.
        """
        batch = prepare_batch(self.model, prompt_ids, attention_mask, continuations=target_ids[:-1].view(1, -1),
                              position_ids=True)
        seq, full_mask, pos = batch["input_ids"], batch["attention_mask"], batch["position_ids"]
        pad = int((attention_mask[0] == 0).sum())
        if pad and not self._takes_positions and self.prefix_reuse:
            # such a family may count a padded row's positions from its pad tokens in a full forward but from the
            # cache length in a cached one (Kosmos-2.5): full forwards only
            logger.info("AtMan: %s takes no 0-based position_ids and the prompt is padded; prefix reuse is off",
                        self.anatomy.family)
            self.prefix_reuse, self.pack = False, False
        if extra_inputs is None:
            ce, cache = self._base_pass("input_ids", seq, full_mask, pos, target_ids)
            return PreparedSequence("input_ids", seq, full_mask, pos, pad, prompt_ids.shape[1], target_ids, ce, cache)
        captured = {}

        def grab(module, args, kwargs, params):
            captured["embeds"] = kwargs.get("inputs_embeds")

        with forward_hooks(pre_hooks={self.anatomy.decoder: grab}, with_kwargs=True):
            ce, cache = self._base_pass("input_ids", seq, full_mask, pos, target_ids, extra_inputs)
        embeds = captured.get("embeds")
        if embeds is None:
            raise ValueError(f"{type(self.model).__name__} did not pass inputs_embeds to its language model; image "
                             "explanations need a Llava-style model")
        return PreparedSequence("inputs_embeds", embeds, full_mask, pos, pad, prompt_ids.shape[1], target_ids, ce,
                                cache)

    @torch.no_grad()
    def score_weights(self, prep: PreparedSequence, weights: torch.Tensor, *, desc: str = "AtMan",
                      bar: tqdm | None = None) -> torch.Tensor:
        """Per-token target CE ``[C, T]`` under each row of ``weights`` ``[C, L]`` (batched, prefix-reused).

        The first packed result of a scorer is checked once against one plain forward; where packing fails or
        disagrees (latent-KV caches, differential or gated attention …) the scorer stops packing.

        Args:
            prep: the prepared sequence (:meth:`prepare`).
            weights: ``[C, L]`` attention weights, one row per perturbation.
            desc: the progress bar's label.
            bar: a tqdm bar to advance by the perturbations each forward scores (one bar across several calls);
                default: a bar of this call over its ``C`` perturbations.
        """
        if bar is None:
            from hf_ext.utils.progress import progress_bar

            with progress_bar(total=weights.shape[0], desc=desc, unit="perturbation", enabled=self.progress,
                              leave=False) as own:
                return self.score_weights(prep, weights, desc=desc, bar=own)
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
        bar.update(C - len(todo))  # rows that change nothing need no forward
        device = prep.attention_mask.device
        if self.packing_for(L) and todo:
            done = bar.n
            try:
                packed = self._score_packed(prep, weights, {c: starts[c] for c in todo}, ce.clone().to(device), bar)
            except (RuntimeError, ValueError) as err:
                if self._packing_checked:
                    raise
                logger.info("AtMan: packing fails on %s (%s: %s); not packing", self.anatomy.family,
                            type(err).__name__, err)
                self.pack = False
                _rewind(bar, done)
                return self._score_unpacked(prep, weights, starts, todo, ce, bar)
            if self._packing_checked:
                return packed
            # The packed path reuses the model's cache and calls its attention per segment: exact for ordinary
            # attention, not for every family (latent-KV caches, differential or gated attention …). Its first
            # result is checked once against one plain forward; on disagreement this scorer stops packing.
            probe = todo[:1]
            plain = self._score_unpacked(prep, weights, starts, probe, ce.clone(), None)
            if torch.allclose(packed[probe].float(), plain[probe].float(), rtol=1e-4, atol=1e-5):
                self._packing_checked = True
                return packed
            logger.info("AtMan: packed perturbations disagree with a plain forward on %s (%s); not packing",
                        self.anatomy.family, type(self.model).__name__)
            self.pack = False
            _rewind(bar, done)
        return self._score_unpacked(prep, weights, starts, todo, ce, bar)

    def _score_unpacked(self, prep: PreparedSequence, weights: torch.Tensor, starts: list[int], todo: list[int],
                        ce: torch.Tensor, bar) -> torch.Tensor:
        """Fill ``ce`` ``[C, T]`` for the perturbations ``todo`` (latest start first), one per row, prefix-reused;
        ``bar`` (or ``None``) advances per forward."""
        L, T = prep.length, prep.target_ids.numel()
        batches = [todo[i : i + self.max_batch_size] for i in range(0, len(todo), self.max_batch_size)]
        device = prep.attention_mask.device
        mode = _CORE_MODE[self.mode]
        if batches:
            self._restore_base(prep)
        cache_kw = cache_argument(self.model)
        for batch in batches:
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
                                 **self._positions(prep.position_ids[:, s:].expand(B, -1)), use_cache=s > 0,
                                 logits_to_keep=keep)
            logits = out.logits[:, -keep:].float()
            tgt = prep.target_ids[T - keep:].expand(B, -1)
            new = token_cross_entropy(logits, tgt)
            ce[batch, T - keep:] = new.to(ce.device)
            del out
            if bar is not None:
                bar.update(B)
        return ce.to(device) if ce.device != device else ce

    def _score_packed(self, prep: PreparedSequence, weights: torch.Tensor, starts: dict[int, int], ce: torch.Tensor,
                      bar) -> torch.Tensor:
        """Fill the target CE ``ce`` ``[C, T]`` (base values in) of the perturbations in ``starts``, packed forwards;
        ``bar`` advances per forward by the perturbations it scored."""
        L, T = prep.length, prep.target_ids.numel()
        device = prep.attention_mask.device
        dtype = self.anatomy.input_embeddings.weight.dtype
        real = prep.attention_mask[0].bool()
        w = weights.to(device)
        segmented = self.packing_for(L) == "segments"
        layer_of = layer_map(self.model) if segmented else None
        cache_kw = cache_argument(self.model)
        for fb in pack(starts, L, capacity=L, rows_per_forward=self.max_batch_size):
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
            new = token_cross_entropy(logits, prep.target_ids[tgt_t])
            ce[torch.tensor(pert, device=device), tgt_t] = new
            del out, logits, inp
            bar.update(len(fb.segments))
        return ce

    # ---------------------------------------------------------------------------------------------- internals
    def _base_pass(self, feed_name, feed, mask, pos, target, extra=None):
        T = target.numel()
        L = mask.shape[1]
        # Mask-packed forwards append their keys after the base pass's L positions (at most L more).
        cache = SuffixRecomputeCache(2 * L if self.packing_for(L) == "mask" else L) if self.prefix_reuse else None
        kw = {cache_argument(self.model): cache} if cache is not None else {}
        try:
            with self._unmanipulated(L):
                out = self.model(**{feed_name: feed}, **(extra or {}), **kw, attention_mask=mask,
                                 **self._positions(pos), use_cache=self.prefix_reuse, logits_to_keep=T)
        except (RuntimeError, ValueError, AttributeError, IndexError, TypeError) as err:
            if cache is None:
                raise
            # a family with a cache of its own (sparse-attention indexers, compressed or recurrent states) cannot
            # write into the suffix-recompute cache: score every perturbation with a full forward instead
            logger.info("AtMan: %s cannot use the prefix cache (%s: %s); prefix reuse is off", self.anatomy.family,
                        type(err).__name__, err)
            self.prefix_reuse, self.pack = False, False
            return self._base_pass(feed_name, feed, mask, pos, target, extra)
        ce = token_cross_entropy(out.logits[0, -T:], target)
        if cache is not None and not cache.layers:
            # a family without a key/value cache (OpenAI-GPT) ignores it: every perturbation runs a full forward
            logger.info("AtMan: %s did not fill the key/value cache it was given; prefix reuse is off",
                        self.anatomy.family)
            self.prefix_reuse, self.pack = False, False
            return self._base_pass(feed_name, feed, mask, pos, target, extra)
        return ce, cache

    def _positions(self, position_ids: torch.Tensor) -> dict:
        """``position_ids`` as a forward keyword, for the families that take them."""
        return {"position_ids": position_ids} if self._takes_positions else {}

    def _unmanipulated(self, length: int):
        """Context of the base pass: weights 1 are the plain model in log-additive mode (a zero bias on the visible
        keys), so it runs plain, on the model's own (causal, lighter) kernels; the multiplicative modes keep their
        score shift, as their perturbed forwards have it."""
        if self.mode == "log_additive":
            return nullcontext()
        return attention_controls(self.model, torch.ones(1, length), mode=_CORE_MODE[self.mode], layers=self.layers)

    def _restore_base(self, prep: PreparedSequence) -> None:
        """Recompute the base pass from ``prep.dirty_from`` into the cache (after an earlier :meth:`score_weights`)."""
        s = prep.dirty_from
        if s is None or prep.cache is None:
            return
        prep.cache.resume_from(s, 1, rewrite=True)
        with self._unmanipulated(prep.length):
            self.model(**{prep.feed_name: prep.feed[:, s:], cache_argument(self.model): prep.cache},
                       attention_mask=prep.attention_mask, **self._positions(prep.position_ids[:, s:]), use_cache=True,
                       logits_to_keep=1)
        prep.cache.broadcast_base(s)
        prep.dirty_from = None
