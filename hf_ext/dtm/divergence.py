"""Divergent token metrics: first divergent token (FDT) and share/sum of divergent tokens (SDT).

Two clearly separated variants (see ``specs/dtm.md``):

* **teacher-forced** (``dtm.teacher_forced``, the paper's definition, the default): the base model ``F`` greedily
  continues each prompt for ``N`` tokens (:func:`reference`, a cached ``datasets.Dataset`` of token ids). A candidate
  ``G`` is run **once**, teacher-forced on ``prompt ⊕ y`` (one batched forward, left padding, explicit position ids,
  :func:`hf_ext.core.scoring.teacher_forced_logprobs`), giving its argmax ``ŷ_n`` at every position. Then
  ``FDT = min{n : ŷ_n ≠ y_n}`` (0-based: the number of leading tokens reproduced; ``N`` when none diverges) and
  ``SDT = Σ_n 1[ŷ_n ≠ y_n]`` (tokens to correct). Up to the first divergence teacher forcing equals ``G``'s own
  free-running greedy generation, so FDT is "how long G's greedy output stays identical to F's".
* **aligned** (``dtm.aligned``, compatible with OpenVINO who-what-benchmark's ``evaluate_divergency``): ``G``
  generates freely; the two generations are aligned with ``difflib.SequenceMatcher(None, ref, pred)``;
  ``FDT`` = size of the first matching block if it starts at ``(0, 0)`` else 0, ``SDT = len(pred) − Σ block sizes``.
  The alignment forgives insertions/shifts, so the numbers are **not** comparable with the teacher-forced ones.

``N`` is per sample: a reference continuation stops after its first EOS (kept), so its effective length
(``num_tokens``) can be below ``max_new_tokens``.

Example:
    >>> from hf_ext.testing import tiny_causal_lm
    >>> base = tiny_causal_lm("llama")
    >>> ref = reference(base, [[1, 5, 6], [1, 7]], max_new_tokens=8, eos_token_id=[], progress=False)
    >>> res = score(base, ref)          # identity: FDT = N, SDT = 0
    >>> res.fdt.tolist(), res.sdt.tolist()
    ([8, 8], [0, 0])
    >>> res.aggregate()["fdt_full_share"]
    1.0
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import nn

from hf_ext.utils.logging import get_logger
from hf_ext.utils.validation import check_size

from ..core.anatomy import get_anatomy
from ..core.inputs import vocab_size
from ..core.reference import greedy_continuations
from ..core.scoring import IGNORE_INDEX, greedy_reference, teacher_forced_logprobs

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from ..core.scoring import TeacherForcedScores

logger = get_logger(__name__)

#: What the scoring functions read as the reference: the :func:`reference` dataset, or any mapping with
#: ``prompt_ids`` and ``continuation_ids`` columns (lists of ids).
ReferenceData = Union["datasets.Dataset", Mapping[str, Sequence[Sequence[int]]]]  # noqa: UP007 - a forward reference

TEACHER_FORCED = "dtm.teacher_forced"
ALIGNED = "dtm.aligned"
DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)

__all__ = [
    "ALIGNED", "TEACHER_FORCED", "DivergenceResult", "aligned_divergence", "check_compatible", "divergence_from_ids",
    "free_running_divergence", "greedy_generate", "reference", "score", "score_aligned",
]


@dataclass
class DivergenceResult:
    """Per-sample FDT/SDT of ``B`` samples and their aggregates.

    Attributes:
        fdt: ``[B]`` long, first divergent token (0-based; ``num_tokens`` when none diverges).
        sdt: ``[B]`` long, number of divergent tokens (teacher-forced: positions with ``ŷ ≠ y``; aligned: tokens to
            correct in the prediction).
        num_tokens: ``[B]`` long, the effective ``N`` of each sample (the reference continuation's length).
        variant: :data:`TEACHER_FORCED` or :data:`ALIGNED`.
        pred_lengths: ``[B]`` long, length of the candidate's free-running prediction (aligned variant only).
        extra: free-form per-result values (e.g. near-tie counts).

    Example:
        >>> r = DivergenceResult(torch.tensor([3, 8]), torch.tensor([2, 0]), torch.tensor([8, 8]))
        >>> r.aggregate()["fdtm"], r.aggregate()["fdt_full_share"]
        (5.5, 0.5)
    """

    fdt: torch.Tensor
    sdt: torch.Tensor
    num_tokens: torch.Tensor
    variant: str = TEACHER_FORCED
    pred_lengths: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.fdt.numel())

    @property
    def sdt_share(self) -> torch.Tensor:
        """``[B]`` float: SDT normalised (teacher-forced: by ``N``; aligned: by the prediction length, as WWB)."""
        denom = self.num_tokens if self.pred_lengths is None else self.pred_lengths
        return self.sdt.double() / denom.double().clamp_min(1)

    def aggregate(self, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> dict[str, float]:
        """Aggregates over samples.

        Returns:
            ``{"variant", "num_samples", "fdtm" (mean FDT), "fdt_median", "fdt_q<p>" per quantile, "fdt_full_share"
            (share of samples with FDT = N), "fdt_norm" (mean FDT / mean N, WWB's FDT norm), "sdtm" (mean SDT),
            "sdt_median", "sdt_share" (mean SDT share, WWB's SDT norm for the aligned variant), "mean_n"}``.
        """
        if len(self) == 0:
            raise ValueError("no samples to aggregate; score at least one prompt")
        fdt, sdt, n = self.fdt.double(), self.sdt.double(), self.num_tokens.double()
        out: dict[str, Any] = {"variant": self.variant, "num_samples": len(self), "fdtm": float(fdt.mean()),
                               "fdt_median": float(fdt.quantile(0.5))}
        for q in quantiles:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile {q!r} must lie in [0, 1]")
            out[f"fdt_q{round(100 * q):02d}"] = float(fdt.quantile(q))
        out.update(fdt_full_share=float((self.fdt >= self.num_tokens).double().mean()),
                   fdt_norm=float(fdt.mean() / n.mean().clamp_min(1e-12)), sdtm=float(sdt.mean()),
                   sdt_median=float(sdt.quantile(0.5)), sdt_share=float(self.sdt_share.mean()), mean_n=float(n.mean()))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready per-sample lists and aggregates."""
        out = {"variant": self.variant, "fdt": self.fdt.tolist(), "sdt": self.sdt.tolist(),
               "num_tokens": self.num_tokens.tolist(), "aggregate": self.aggregate()}
        if self.pred_lengths is not None:
            out["pred_lengths"] = self.pred_lengths.tolist()
        return out


# --------------------------------------------------------------------------------------------------------------------
# Pure functions on ids
# --------------------------------------------------------------------------------------------------------------------


def divergence_from_ids(predicted_ids: torch.Tensor | Sequence[Sequence[int]],
                        reference_ids: torch.Tensor | Sequence[Sequence[int]], mask: torch.Tensor | None = None) -> DivergenceResult:
    """Teacher-forced FDT/SDT from the candidate's argmax ids and the reference continuation ids.

    Args:
        predicted_ids: ``[B, T]`` ids ``ŷ`` (e.g. :attr:`TeacherForcedScores.predicted_ids`), or ``B`` lists.
        reference_ids: ``[B, T]`` reference continuation ids ``y`` (padding = -100), or ``B`` lists; with lists each
            prediction must have the length of its reference.
        mask: ``[B, T]`` bool, True on real positions (default: ``reference_ids != -100``).

    Returns:
        :class:`DivergenceResult` (variant :data:`TEACHER_FORCED`).

    Raises:
        ValueError: shape/length mismatch, or no rows.

    Example:
        >>> divergence_from_ids([[5, 6, 9, 8]], [[5, 6, 7, 8]]).fdt.tolist()
        [2]
    """
    pred, ref, mask = _as_padded_pair(predicted_ids, reference_ids, mask)
    diverge = (pred != ref) & mask
    n = mask.sum(-1)
    width = diverge.shape[1]
    index = torch.arange(width, device=diverge.device).expand_as(diverge)
    first = torch.where(diverge, index, torch.full_like(index, width)).min(-1).values if width else n
    fdt = torch.minimum(first, n)
    return DivergenceResult(fdt=fdt.cpu(), sdt=diverge.sum(-1).cpu(), num_tokens=n.cpu())


def aligned_divergence(reference_tokens: Sequence[Sequence[int]] | Sequence[str],
                       prediction_tokens: Sequence[Sequence[int]] | Sequence[str], *,
                       tokenizer: PreTrainedTokenizerBase | None = None) -> DivergenceResult:
    """The **aligned** (who-what-benchmark-compatible) FDT/SDT of free-running generations.

    Per sample, ``SequenceMatcher(None, ref, pred).get_matching_blocks()``: FDT = size of the first block if it starts
    at ``(0, 0)``, else 0; SDT = ``len(pred) − Σ block sizes``. Texts are re-tokenized with
    ``tokenizer.encode(text, add_special_tokens=False)`` (WWB encodes with the tokenizer's defaults; pass ids yourself
    to reproduce that exactly).

    Args:
        reference_tokens: ``B`` id lists (or texts) of the reference model's generations.
        prediction_tokens: ``B`` id lists (or texts) of the candidate's generations.
        tokenizer: needed for texts.

    Returns:
        :class:`DivergenceResult` with variant :data:`ALIGNED` and ``pred_lengths``.

    Example:
        >>> r = aligned_divergence([[1, 2, 3, 4, 5]], [[1, 2, 9, 3, 4, 5]])  # an insertion is forgiven
        >>> r.fdt.tolist(), r.sdt.tolist()
        ([2], [1])
    """
    if len(reference_tokens) != len(prediction_tokens):
        raise ValueError(f"got {len(reference_tokens)} references but {len(prediction_tokens)} predictions; "
                         "pass one prediction per reference")
    if len(reference_tokens) == 0:
        raise ValueError("no samples: pass at least one reference/prediction pair")
    fdt, sdt, n, plen = [], [], [], []
    for ref, pred in zip(reference_tokens, prediction_tokens):
        ref, pred = _tokens(ref, tokenizer, "reference"), _tokens(pred, tokenizer, "prediction")
        blocks = difflib.SequenceMatcher(None, ref, pred).get_matching_blocks()
        first = blocks[0]
        fdt.append(first.size if first.a == 0 and first.b == 0 else 0)
        sdt.append(len(pred) - sum(b.size for b in blocks))
        n.append(len(ref))
        plen.append(len(pred))
    t = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    return DivergenceResult(fdt=t(fdt), sdt=t(sdt), num_tokens=t(n), variant=ALIGNED, pred_lengths=t(plen))


# --------------------------------------------------------------------------------------------------------------------
# Model-level API
# --------------------------------------------------------------------------------------------------------------------


def reference(base: nn.Module, prompts: str | Sequence[str] | Sequence[Sequence[int]], *, max_new_tokens: int,
              tokenizer: PreTrainedTokenizerBase | None = None, eos_token_id: int | Sequence[int] | None = None,
              cache_dir: str | os.PathLike | None = None, batch_size: int = 8,
              progress: bool = True) -> datasets.Dataset:
    """Greedy reference continuations ``y = greedy_N(F, p)`` of the base model, as a ``datasets.Dataset`` of ids.

    A thin wrapper over :func:`hf_ext.core.scoring.greedy_reference` (pure argmax, left-padded batches, explicit
    position ids, optional on-disk cache keyed by model/weights/prompts/N/EOS). Each continuation is cut after its
    first EOS (kept): its length is that sample's effective ``N``.

    Args:
        base: the base causal LM ``F`` (``eval()`` mode, fp32 recommended: bf16 batching noise can break identity).
        prompts: strings (with ``tokenizer``) or unpadded id lists; none may be empty.
        max_new_tokens: ``N`` ≥ 1.
        tokenizer: tokenizes string prompts.
        eos_token_id: stop ids; ``None`` = the model's generation config, ``[]`` = always ``N`` tokens.
        cache_dir: folder for the on-disk cache.
        batch_size: prompts per ``generate`` call.
        progress: tqdm bar.

    Returns:
        ``datasets.Dataset`` with ``prompt_ids``, ``continuation_ids``, ``num_new_tokens``, ``stopped_at_eos``, …

    Raises:
        ValueError: ``max_new_tokens`` ≤ 0, no prompts, an empty prompt.

    Example:
        >>> base, tok = tiny_causal_lm("llama", seed=0), tiny_tokenizer()
        >>> ref = reference(base, ["Hello there"], max_new_tokens=16, tokenizer=tok, progress=False)
        >>> ref[0]["num_new_tokens"] <= 16
        True
    """
    check_size("max_new_tokens", max_new_tokens)
    get_anatomy(base)  # DTM prunes/skips decoder components: refuse a model whose stack hf_ext cannot locate, first
    if isinstance(prompts, (str, bytes)):
        prompts = [prompts]
    if prompts is None or len(prompts) == 0:
        raise ValueError("no prompts given; pass at least one prompt (string or list of token ids)")
    for i, p in enumerate(prompts):
        if (isinstance(p, str) and not p.strip() and tokenizer is not None
                and not tokenizer(p, add_special_tokens=True)["input_ids"]) or (not isinstance(p, str) and len(p) == 0):
            raise ValueError(f"prompt {i} is empty; every prompt needs at least one token (e.g. BOS)")
    return greedy_reference(base, list(prompts), max_new_tokens=max_new_tokens, tokenizer=tokenizer,
                            eos_token_id=eos_token_id, cache_dir=cache_dir, batch_size=batch_size, progress=progress)


def check_compatible(base: nn.Module | None, candidate: nn.Module, *,
                     base_tokenizer: PreTrainedTokenizerBase | None = None,
                     candidate_tokenizer: PreTrainedTokenizerBase | None = None) -> None:
    """Raise if ``candidate`` cannot be compared token-by-token with ``base``.

    Checks the vocabulary sizes of the two models' heads (their output embeddings, else ``config.vocab_size``:
    DTMs compare *predicted* ids) and, when both tokenizers are given, that they map the same strings to the same
    ids.

    Raises:
        ValueError: naming both sizes / the first differing token.

    Example:
        >>> check_compatible(tiny_causal_lm("llama"), tiny_causal_lm("llama", seed=1))  # same vocabulary: fine
    """
    if base is not None:
        vb, vc = vocab_size(base, "output"), vocab_size(candidate, "output")
        if vb != vc:
            raise ValueError(f"base and candidate have different vocabulary sizes ({vb} vs {vc}); DTMs compare token ids "
                             "and need the same tokenizer: compare a model only with compressed/fine-tuned versions of "
                             "itself")
    if base_tokenizer is not None and candidate_tokenizer is not None:
        a, b = base_tokenizer.get_vocab(), candidate_tokenizer.get_vocab()
        if a != b:
            diff = sorted(set(a.items()) ^ set(b.items()), key=str)[:3]
            raise ValueError(f"base and candidate tokenizers differ ({len(a)} vs {len(b)} entries; e.g. {diff}); DTMs "
                             "need identical tokenizers")


def score(candidate: nn.Module, ref: ReferenceData, *,
          base: nn.Module | None = None, base_tokenizer: PreTrainedTokenizerBase | None = None,
          tokenizer: PreTrainedTokenizerBase | None = None, batch_size: int | None = None,
          return_scores: bool = False, near_tie_threshold: float | None = None,
          ) -> DivergenceResult | tuple[DivergenceResult, TeacherForcedScores]:
    """Teacher-forced FDT/SDT of ``candidate`` on the base's reference continuations: one batched forward.

    Args:
        candidate: the model ``G`` to evaluate (same tokenizer as the base).
        ref: the :func:`reference` dataset (or any mapping with ``prompt_ids`` and ``continuation_ids`` lists).
        base: if given, checked for vocabulary compatibility (:func:`check_compatible`).
        base_tokenizer, tokenizer: if both given, checked for identical vocabularies.
        batch_size: rows per forward (``None``: all rows in one forward).
        return_scores: also return the :class:`~hf_ext.core.scoring.TeacherForcedScores`.
        near_tie_threshold: if set, ``extra["near_ties"]`` counts samples whose candidate top-2 logit gap is below it
            at some position ≤ FDT (where teacher-forced and free-running FDT may legitimately differ).

    Returns:
        :class:`DivergenceResult` (and the scores with ``return_scores=True``).

    Raises:
        ValueError: incompatible vocabularies, empty prompts/references, token ids outside the candidate's vocab.

    Example:
        >>> import copy
        >>> from hf_ext.dtm import magnitude_prune
        >>> base = tiny_causal_lm("llama", seed=0)
        >>> ref = reference(base, [[1, 5, 6], [2, 7]], max_new_tokens=4, progress=False)
        >>> score(base, ref, base=base).aggregate()["fdtm"]  # the base model never diverges from itself: FDT = N
        4.0
        >>> compressed = copy.deepcopy(base)
        >>> with magnitude_prune(compressed, {"model.layers.0.mlp.up_proj": 0.9}):
        ...     res = score(compressed, ref, base=base)
        >>> 0.0 <= res.aggregate()["fdtm"] <= 4.0
        True
    """
    check_compatible(base, candidate, base_tokenizer=base_tokenizer, candidate_tokenizer=tokenizer)
    prompts, conts = ref_columns(ref)
    scores = teacher_forced_logprobs(candidate, prompts, conts, batch_size=batch_size,
                                     return_logits=near_tie_threshold is not None)
    result = divergence_from_ids(scores.predicted_ids, scores.token_ids, scores.mask)
    if near_tie_threshold is not None:
        top2 = scores.logits.float().topk(2, dim=-1).values
        gap = (top2[..., 0] - top2[..., 1]).cpu()
        pos = torch.arange(gap.shape[1]).expand_as(gap)
        upto = (pos <= result.fdt[:, None]) & scores.mask.cpu()
        tie = ((gap < near_tie_threshold) & upto).any(-1)
        result.extra["near_tie_rows"] = tie
        result.extra["near_ties"] = int(tie.sum())
    return (result, scores) if return_scores else result


@torch.no_grad()
def greedy_generate(model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int], *,
                    batch_size: int = 8, pad_token_id: int = 0) -> list[list[int]]:
    """Free-running greedy continuations (``generate(do_sample=False)``, no EOS stop, all logits processors off).

    Args:
        model: causal LM.
        prompts: ``B`` unpadded id lists.
        max_new_tokens: one int, or one per prompt (each row is cut to its own length).
        batch_size: prompts per ``generate`` call (left padding, explicit position ids).
        pad_token_id: filler id for left padding.

    Returns:
        ``B`` lists of generated ids.
    """
    lengths = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    out: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(prompts), batch_size):
        n = max(lengths[start:start + batch_size])
        if n <= 0:
            continue
        new_ids = greedy_continuations(model, prompts[start:start + batch_size], n, pad_token_id=pad_token_id)
        for k, new in enumerate(new_ids):
            out[start + k] = new[: lengths[start + k]]
    return out


def free_running_divergence(candidate: nn.Module, ref: ReferenceData, *, batch_size: int = 8) -> tuple[DivergenceResult, list]:
    """Baseline: generate with the candidate (free running, ``N`` steps) and compare position by position with ``y``.

    FDT equals the teacher-forced FDT (up to near ties of the candidate's logits); SDT here counts positional
    mismatches of the free-running path and is **not** the paper's SDT (after a divergence the paths differ).

    Returns:
        ``(DivergenceResult, generations)``.
    """
    prompts, conts = ref_columns(ref)
    gens = greedy_generate(candidate, prompts, [len(c) for c in conts], batch_size=batch_size)
    return divergence_from_ids(gens, conts), gens


def score_aligned(candidate: nn.Module, ref: ReferenceData, *, tokenizer: PreTrainedTokenizerBase | None = None,
                  base: nn.Module | None = None, batch_size: int = 8) -> DivergenceResult:
    """The **aligned** (who-what-benchmark-compatible) variant on models: free-running generation + difflib.

    The candidate generates as many tokens as each reference continuation holds; both are compared with
    :func:`aligned_divergence`. With a ``tokenizer`` both are decoded to text and re-encoded first, as WWB does
    (so tokenization round-trip effects count); without one, ids are compared directly.

    Example:
        >>> base = tiny_causal_lm("llama", seed=0)
        >>> ref = reference(base, [[1, 5, 6], [2, 7]], max_new_tokens=4, progress=False)
        >>> score_aligned(base, ref).aggregate()["sdt_share"]  # greedy generation reproduces the reference
        0.0
    """
    check_compatible(base, candidate)
    prompts, conts = ref_columns(ref)
    gens = greedy_generate(candidate, prompts, [len(c) for c in conts], batch_size=batch_size)
    if tokenizer is not None:
        return aligned_divergence(tokenizer.batch_decode(conts), tokenizer.batch_decode(gens), tokenizer=tokenizer)
    return aligned_divergence(conts, gens)


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def ref_columns(ref: ReferenceData) -> tuple[list[list[int]], list[list[int]]]:
    """``(prompts, continuations)`` id lists of a :func:`reference` dataset (or any mapping with those columns).

    Raises:
        TypeError: ``ref`` lacks the ``prompt_ids`` / ``continuation_ids`` columns.
        ValueError: no rows, an empty prompt or an empty continuation.

    Example:
        >>> ref_columns({"prompt_ids": [[1, 5]], "continuation_ids": [[6, 7]]})
        ([[1, 5]], [[6, 7]])
    """
    try:
        prompts, conts = ref["prompt_ids"], ref["continuation_ids"]
    except (KeyError, TypeError) as err:
        raise TypeError(f"ref must be the dataset returned by reference() (columns prompt_ids, continuation_ids), got "
                        f"{type(ref).__name__}") from err
    prompts, conts = [list(p) for p in prompts], [list(c) for c in conts]
    if not prompts:
        raise ValueError("the reference has no rows; build it from at least one prompt")
    for i, (p, c) in enumerate(zip(prompts, conts)):
        if not p:
            raise ValueError(f"prompt {i} of the reference is empty; every prompt needs at least one token")
        if not c:
            raise ValueError(f"continuation {i} of the reference is empty (N = 0); use max_new_tokens ≥ 1")
    return prompts, conts


def _as_padded_pair(pred: Any, ref: Any, mask: torch.Tensor | None):
    if not isinstance(pred, torch.Tensor) or not isinstance(ref, torch.Tensor):
        pred_l, ref_l = [list(p) for p in pred], [list(r) for r in ref]
        if len(pred_l) != len(ref_l):
            raise ValueError(f"got {len(pred_l)} predictions but {len(ref_l)} references; pass one per reference")
        for i, (p, r) in enumerate(zip(pred_l, ref_l)):
            if len(p) < len(r):
                raise ValueError(f"prediction {i} has {len(p)} ids but its reference has {len(r)}; teacher-forced "
                                 "predictions hold one id per reference position")
        width = max((len(r) for r in ref_l), default=0)
        ref = torch.tensor([r + [IGNORE_INDEX] * (width - len(r)) for r in ref_l], dtype=torch.long).reshape(-1, width)
        pred = torch.tensor([p[:len(r)] + [IGNORE_INDEX] * (width - len(r)) for p, r in zip(pred_l, ref_l)],
                            dtype=torch.long).reshape(-1, width)
    if pred.dim() == 1:
        pred, ref = pred[None], ref[None]
    if pred.shape != ref.shape:
        raise ValueError(f"predicted_ids shape {tuple(pred.shape)} != reference_ids shape {tuple(ref.shape)}")
    if pred.shape[0] == 0:
        raise ValueError("no rows: pass at least one prediction/reference pair")
    if mask is None:
        mask = ref != IGNORE_INDEX
    mask = mask.to(device=ref.device, dtype=torch.bool)
    lengths = mask.sum(-1)
    expect = torch.arange(mask.shape[1], device=mask.device)[None] < lengths[:, None]
    if not bool((mask == expect).all()):
        raise ValueError("reference positions must be right-padded (real tokens first, then -100 padding)")
    return pred.to(ref.device), ref, mask


def _tokens(x: Any, tokenizer: Any, what: str) -> list[int]:
    if isinstance(x, str):
        if tokenizer is None:
            raise ValueError(f"{what} is text: pass tokenizer= to tokenize it (or pass token ids)")
        return list(tokenizer.encode(x, add_special_tokens=False))
    return [int(t) for t in x]
