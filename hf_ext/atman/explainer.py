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

Speed: every target token is scored in one pass; the perturbed forwards (batching, prefix reuse, packing) are
:class:`~hf_ext.atman.scorer.AtManScorer`'s, which this class extends with units, neighbourhoods and the
:class:`~hf_ext.atman.explanation.Explanation` it returns.

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
from typing import TYPE_CHECKING

import torch
from torch import nn

from hf_ext.core.inputs import check_in_vocabulary, max_positions, model_device, vocab_size
from hf_ext.core.model_checks import check_causal
from hf_ext.utils.validation import check_float, check_int

from .explanation import POSTPROCESSING, STEPS, Explanation
from .scorer import MODES, AtManScorer, PreparedSequence
from .units import GRANULARITIES, Unit, text_units, tile_units

if TYPE_CHECKING:
    from tqdm import tqdm
    from transformers import PreTrainedTokenizerBase

__all__ = ["MODES", "POSTPROCESSING", "AtManExplainer", "Explanation"]


def _check_factor(name: str, value, low: float, high: float | None) -> float:
    return check_float(name, value, min=low, max=high)



class AtManExplainer(AtManScorer):
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
        layers, max_batch_size, prefix_reuse, pack, progress: how the perturbed forwards run (decoder layers
            manipulated, rows per forward, KV-cache reuse, packing of several suffixes per row, tqdm bar); see
            :class:`~hf_ext.atman.scorer.AtManScorer`.

    Example:
        >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
        >>> ex = AtManExplainer(tiny_causal_lm("gpt2"), tiny_tokenizer(), max_batch_size=4, progress=False)
        >>> ex.explain("hello world", "!").delta.shape
        torch.Size([12, 1])
    """

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase | None = None, *, mode: str = "log_additive", suppression_factor: float = 0.1,
                 conceptual_threshold: float | None = None, max_neighbours: int | None = None,
                 layers: int | Sequence[int] | None = None, max_batch_size: int = 1, prefix_reuse: bool = True,
                 pack: bool | str = True, progress: bool = True):
        super().__init__(model, mode=mode, layers=layers, max_batch_size=max_batch_size, prefix_reuse=prefix_reuse,
                         pack=pack, progress=progress)
        self.tokenizer = tokenizer
        self.suppression_factor = _check_factor("suppression_factor", suppression_factor, 0.0, 1.0)
        self.conceptual_threshold = None if conceptual_threshold is None else _check_factor(
            "conceptual_threshold", conceptual_threshold, 0.0, 1.0)
        check_int("max_neighbours", max_neighbours, min=0, allow_none=True)
        self.max_neighbours = max_neighbours

    # ---------------------------------------------------------------------------------------------- public API
    @torch.no_grad()
    def explain(self, prompt: str, target: str, *, granularity: str = "token", include_target: bool = False,
                add_special_tokens: bool = True, step: str = "cross_entropy", foil: str | None = None) -> Explanation:
        """Explain ``target`` given ``prompt`` (strings).

        Args:
            prompt: the prompt text (non-empty).
            target: the continuation to explain (non-empty; its tokens are appended to the prompt's without specials).
            granularity: ``"token"``, ``"word"``, ``"sentence"``, ``"paragraph"`` or a custom delimiter string.
            include_target: also explain the target's own tokens (all but the last), at token granularity.
            add_special_tokens: let the tokenizer add its specials (e.g. BOS) to the prompt.
            step: what Δ measures per target token: ``"cross_entropy"`` (log-probability change, AtMan's) or
                ``"probability"`` (probability change).
            foil: a contrast target: explain "why ``target`` rather than ``foil``". The foil's tokens become the last
                columns with negated Δ, so the summed score is the change of ``log p(target) − log p(foil)``
                (see :class:`Explanation`). Not with ``include_target``.

        Returns:
            An :class:`Explanation` with ``delta`` of shape ``[units, target tokens (+ foil tokens)]``.

        Example:
            >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
            >>> ex = AtManExplainer(tiny_causal_lm(), tiny_tokenizer(), progress=False)
            >>> exp = ex.explain("a cat", " sat", foil=" ran")
            >>> exp.target_tokens, exp.n_foil_tokens
            ([' ', 's', 'a', 't', ' ', 'r', 'a', 'n'], 4)
        """
        if foil is not None and include_target:
            raise ValueError(f"foil={foil!r} cannot be combined with include_target=True (the target and the foil "
                             "have different target positions)")
        prep, units, tokens, offsets = self.prepare_strings(prompt, target, granularity, add_special_tokens)
        preps = [prep]
        if foil is not None:
            preps.append(self.prepare_strings(prompt, foil, granularity, add_special_tokens)[0])
        exp = self._explain_many(preps, units, include_target, step)
        exp.prompt, exp.target, exp.foil, exp.tokens, exp.offsets = prompt, target, foil, tokens, offsets
        return exp

    @torch.no_grad()
    def prepare_strings(self, prompt: str, target: str, granularity: str = "token", add_special_tokens: bool = True
                        ) -> tuple[PreparedSequence, list[Unit], list[str], list[tuple[int, int]]]:
        """Tokenize ``prompt``/``target``, cut the prompt into units and run the base pass.

        Args:
            prompt, target, granularity, add_special_tokens: as in :meth:`explain`.

        Returns:
            ``(prepared sequence, units, prompt tokens, offsets)``; :meth:`explain_prepared` explains it,
            :func:`~hf_ext.atman.faithfulness.deletion_curve` scores deletions on it.
        """
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
        return self.prepare(ids, mask, tgt), units, tokens, offsets

    @torch.no_grad()
    def explain_ids(self, prompt_ids: torch.Tensor | Sequence[int], target_ids: torch.Tensor | Sequence[int], *,
                    attention_mask: torch.Tensor | Sequence[int] | None = None, units: list[Unit] | None = None,
                    include_target: bool = False, step: str = "cross_entropy",
                    foil_ids: torch.Tensor | Sequence[int] | None = None) -> Explanation:
        """Explain from token ids.

        Args:
            prompt_ids: ``[P]`` or ``[1, P]`` prompt ids, possibly left-padded (then give ``attention_mask``).
            target_ids: ``[T]`` target ids.
            attention_mask: ``[P]`` / ``[1, P]`` mask of the prompt (0 = left padding).
            units: units with positions in the *unpadded* prompt; default one per prompt token.
            include_target: add one unit per target token but the last.
            step, foil_ids: as ``step`` and ``foil`` of :meth:`explain` (``foil_ids``: ``[T']`` ids).
        """
        if foil_ids is not None and include_target:
            raise ValueError("foil_ids cannot be combined with include_target=True")
        ids, mask, target = self._as_prompt(prompt_ids, attention_mask, target_ids)
        preps = [self.prepare(ids, mask, target)]
        if foil_ids is not None:
            _, _, foil = self._as_prompt(prompt_ids, attention_mask, foil_ids)
            preps.append(self.prepare(ids, mask, foil))
        exp = self._explain_many(preps, units, include_target, step)
        if foil_ids is not None:
            exp.foil = "".join(exp.target_tokens[len(exp.target_tokens) - exp.n_foil_tokens:])
        return exp

    @torch.no_grad()
    def explain_image(self, inputs: dict, target_ids: torch.Tensor | Sequence[int], *, image_token_id: int | None = None, grid: tuple[int, int] | None = None,
                      tile: int = 1, include_text: bool = False, step: str = "cross_entropy") -> Explanation:
        """Explain a Llava-style VLM's target over image tiles (the vision tower is not touched).

        Args:
            inputs: one example's processor output: ``input_ids`` ``[1, P]`` with the image placeholders,
                ``pixel_values``, optionally ``attention_mask``.
            target_ids: ``[T]`` target ids.
            image_token_id: the placeholder id (default ``model.config.image_token_id``).
            grid: ``(rows, cols)`` of patches (default: a square of the placeholder count).
            tile: patches per tile side.
            include_text: also explain every text token of the prompt.
            step: ``"cross_entropy"`` or ``"probability"`` (as :meth:`explain`).

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
        prep = self.prepare(ids, mask, target, inputs)
        exp = self.explain_prepared(prep, units, False, step=step)
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
        read = vocab_size(self.model, "input")  # ids beyond the vocabulary: a clear error before the embedding
        check_in_vocabulary(ids, mask, read, "prompt_ids")
        try:
            scored = min(read, vocab_size(self.model, "output"))
        except TypeError:
            scored = read
        check_in_vocabulary(target.view(1, -1), None, scored, "target_ids")
        limit = max_positions(self.model)
        if limit is not None and int(mask.sum()) + target.numel() - 1 > limit:
            raise ValueError(f"prompt ({int(mask.sum())} tokens) + target ({target.numel()} tokens) is longer than the model's "
                             f"context of {limit} positions; shorten the prompt or the target")
        # Δ compares teacher-forced target losses: a model whose logits read later tokens (XLNet) would see them
        check_causal(self.model)
        device = model_device(self.model)
        return ids.to(device), mask.to(device), target.to(device)

    def unit_weights(self, prep: PreparedSequence, positions: Sequence[Sequence[int]], factor: float | None = None,
                     neighbourhood: bool = True) -> torch.Tensor:
        """``[C, L]`` attention weights suppressing each config's positions (and, with a conceptual threshold, their
        neighbours): one row per entry of ``positions`` (positions in the unpadded sequence).

        Args:
            prep: the prepared sequence (:meth:`prepare_strings`, :meth:`~hf_ext.atman.scorer.AtManScorer.prepare`).
            positions: one list of sequence positions per config.
            factor: suppression weight (default ``suppression_factor``).
            neighbourhood: co-suppress similar tokens when ``conceptual_threshold`` is set.
        """
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

    def _explain_many(self, preps: list[PreparedSequence], units, include_target: bool, step: str) -> Explanation:
        """One explanation of ``preps[0]``, with the foil ``preps[1]`` (if any) appended as negated columns; one
        progress bar over all their perturbed forwards."""
        from hf_ext.utils.progress import progress_bar

        n_units = (len(units) if units is not None else preps[0].prompt_len - preps[0].pad) \
            + (preps[0].target_ids.numel() - 1 if include_target else 0)
        with progress_bar(total=n_units * len(preps), desc="AtMan", unit="perturbation", enabled=self.progress,
                          leave=False) as bar:
            exps = [self.explain_prepared(p, units, include_target, step=step, bar=bar) for p in preps]
        exp = exps[0]
        if len(exps) > 1:
            foil = exps[1]
            exp.delta = torch.cat([exp.delta, -foil.delta], 1)
            exp.base_cross_entropy = torch.cat([exp.base_cross_entropy, foil.base_cross_entropy])
            exp.target_tokens = exp.target_tokens + foil.target_tokens
            exp.n_foil_tokens = len(foil.target_tokens)
        return exp

    @torch.no_grad()
    def explain_prepared(self, prep: PreparedSequence, units: list[Unit] | None, include_target: bool = False, *,
                         step: str = "cross_entropy", bar: tqdm | None = None) -> Explanation:
        """The :class:`Explanation` of a prepared sequence: one suppression per unit (default: one per prompt token),
        plus one per target token but the last with ``include_target``.

        Args:
            prep: the prepared sequence (:meth:`prepare_strings` or :meth:`prepare`).
            units: the prompt units to suppress one at a time; ``None`` = one per prompt token.
            include_target: add one unit per target token but the last.
            step: ``"cross_entropy"`` (Δ of the log-probability) or ``"probability"`` (Δ of the probability).
            bar: a progress bar to advance per scored perturbation (default: a bar of its own).
        """
        if step not in STEPS:
            raise ValueError(f"step={step!r} is not one of {STEPS}")
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
        weights = self.unit_weights(prep, [u.positions for u in units])
        ce = self.score_weights(prep, weights, bar=bar).float()
        base = prep.base_ce.float().unsqueeze(0)
        # both steps: value(suppressed) − value(original), so important units are negative
        delta = (base - ce) if step == "cross_entropy" else (torch.exp(-ce) - torch.exp(-base))
        tok = self.tokenizer
        target_tokens = tok.convert_ids_to_tokens(prep.target_ids.tolist()) if tok is not None else [str(int(t)) for t in prep.target_ids]
        return Explanation(units=units, delta=delta, target_tokens=target_tokens, base_cross_entropy=prep.base_ce,
                           mode=self.mode, suppression_factor=self.suppression_factor,
                           conceptual_threshold=self.conceptual_threshold, step=step)
