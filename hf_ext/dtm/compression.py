"""DTM-guided compression: per-component fake quantization / magnitude pruning, a sensitivity scan ranked by FDTM,
greedy plans in the paper's order (applying a plan for real: :mod:`hf_ext.dtm.deployment`).

* **Components** and the in-place perturbations (:func:`fake_quant`, :func:`magnitude_prune`, restored bit-exactly)
  live in :mod:`hf_ext.dtm.perturbation` and are re-exported here.
* :func:`sensitivity_scan` compresses one component at a time at each level and scores the model by teacher-forced
  FDT/SDT (and NLL, for the perplexity order) on the base's greedy reference. With ``prefix_cache=True`` the base's
  hidden states at every layer input are computed once and a component of layer ``l`` resumes the decoder from layer
  ``l`` (:func:`hf_ext.core.layers.run_layers`), so earlier layers are not recomputed.
* :func:`build_plan` greedily adds components in descending-FDTM order (int8) and raises sparsity levels
  (pruning), keeping the model's mean FDT above a threshold; :func:`~hf_ext.dtm.deployment.apply_plan` applies it
  for real (:class:`~hf_ext.dtm.int8.Int8WeightOnlyLinear` by default; torchao / optimum-quanto optional) and
  :class:`~hf_ext.dtm.deployment.PruningMaskCallback` keeps pruned weights at zero through fine-tuning.

Example:
    >>> from hf_ext.testing import tiny_causal_lm
    >>> from hf_ext.dtm import reference
    >>> model = tiny_causal_lm("llama")
    >>> ref = reference(model, [[1, 5, 6, 7]], max_new_tokens=8, eos_token_id=[], progress=False)
    >>> scan = sensitivity_scan(model, ref, methods={"int8": [8]}, progress=False)
    >>> plan = build_plan(model, ref, scan, min_fdt_ratio=0.9, progress=False)
    >>> from hf_ext.dtm.deployment import apply_plan
    >>> masks = apply_plan(model, plan)  # int8 Linear modules swapped in (in place)
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hf_ext.utils.logging import get_logger
from hf_ext.utils.validation import check_int

from ..core.inputs import prepare_batch
from ..core.layers import forward_with_layer_inputs, resume_refusal, run_layers
from ..core.scoring import IGNORE_INDEX, token_cross_entropy
from .deployment import PruningMaskCallback, apply_plan, load_compressed, save_compressed
from .divergence import divergence_from_ids, ref_columns
from .int8 import fake_quantize_absmax, linear_weight
from .perturbation import (
    check_sparsity,
    component_layer,
    fake_quant,
    get_component,
    list_components,
    magnitude_prune,
    magnitude_prune_weight,
    weight_perturbation,
)
from .plan import CompressionPlan, parameter_shares

if TYPE_CHECKING:
    from .divergence import ReferenceData

logger = get_logger(__name__)

__all__ = [
    "CompressionPlan", "PruningMaskCallback", "ScanResult", "apply_plan", "build_plan", "compressed", "coverage_curve",
    "curve_auc", "fake_quant", "list_components", "load_compressed", "magnitude_prune", "magnitude_prune_weight",
    "save_compressed", "sensitivity_scan", "weight_perturbation",
]


METHODS = ("int8", "prune")


# --------------------------------------------------------------------------------------------------------------------
# Simulating a whole plan
# --------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def compressed(model: nn.Module, plan: CompressionPlan | None = None, *, int8: Sequence[str] = (),
               sparsity: Mapping[str, float] | None = None, bits: int = 8) -> Iterator[None]:
    """Simulate a whole plan (fake int8 on ``plan.int8``, pruning by ``plan.sparsity``) inside the block.

    Pruning is applied first, then quantization of the (pruned) weight, as :func:`apply_plan` does. The weights
    are restored bit-exactly on exit.

    Args:
        model: the model (changed in place during the block).
        plan: the plan to simulate; ``None`` = the one given by ``int8`` and ``sparsity``.
        int8: components to fake-quantize (without ``plan``).
        sparsity: ``{component: fraction of weights zeroed}`` (without ``plan``).
        bits: quantization bits of the fake int8 (8 by default).
    """
    int8 = list(plan.int8) if plan is not None else list(int8)
    sparsity = dict(plan.sparsity) if plan is not None else dict(sparsity or {})
    changes: dict[str, Callable] = {}
    for name in set(int8) | set(sparsity):
        s, q = sparsity.get(name, 0.0), name in int8
        check_sparsity(s)

        def fn(w, s=s, q=q):
            w = magnitude_prune_weight(w, s) if s > 0 else w
            return fake_quantize_absmax(w, bits) if q else w
        changes[name] = fn
    with weight_perturbation(model, changes):
        yield


# --------------------------------------------------------------------------------------------------------------------
# Scan
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ScanResult:
    """Result of :func:`sensitivity_scan`: one row per (component, method, level).

    Attributes:
        rows: dicts with ``component``, ``layer``, ``method``, ``level``, ``num_params``, ``fdtm`` (mean FDT),
            ``fdt_ratio`` (mean FDT / mean N), ``sdtm``, ``fdt_full_share``, ``nll`` (mean NLL of the reference
            continuation, for the perplexity order), ``ppl``.
        num_tokens: mean N of the reference.
        prefix_cache: whether depth-prefix caching was used.

    Example:
        >>> from hf_ext.dtm import reference
        >>> model = tiny_causal_lm("llama", seed=0)
        >>> ref = reference(model, [[1, 5, 6], [2, 7]], max_new_tokens=4, progress=False)
        >>> scan = sensitivity_scan(model, ref, components=["model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"],
        ...                         progress=False)
        >>> len(scan.ranking("int8"))  # least damaging first
        2
    """

    rows: list[dict[str, Any]]
    num_tokens: float
    prefix_cache: bool = True

    def select(self, method: str, level: float | None = None) -> list[dict[str, Any]]:
        """Rows of ``method`` (and ``level``; default: the method's first level)."""
        rows = [r for r in self.rows if r["method"] == method]
        if not rows:
            raise ValueError(f"the scan has no {method!r} rows; methods present: {sorted({r['method'] for r in self.rows})}")
        level = rows[0]["level"] if level is None else level
        return [r for r in rows if r["level"] == level]

    def ranking(self, method: str = "int8", level: float | None = None, by: str = "fdtm") -> list[str]:
        """Component names ordered least-damaging first.

        ``by="fdtm"``: descending mean FDT, ties by ascending SDT (the paper's order); ``by="ppl"``: ascending
        perplexity of the reference continuation (the "standard metric" order the paper compares with).
        """
        rows = self.select(method, level)
        if by == "fdtm":
            key = lambda r: (-r["fdtm"], r["sdtm"], r["nll"])  # noqa: E731
        elif by == "ppl":
            key = lambda r: (r["nll"], -r["fdtm"])  # noqa: E731
        else:
            raise ValueError(f"by must be 'fdtm' or 'ppl', got {by!r}")
        return [r["component"] for r in sorted(rows, key=key)]

    def to_json(self) -> str:
        """The scan as JSON (``rows``, ``num_tokens``, ``prefix_cache``)."""
        return json.dumps({"rows": self.rows, "num_tokens": self.num_tokens, "prefix_cache": self.prefix_cache}, indent=1)


def _padded_batch(model: nn.Module, prompts: list[list[int]], conts: list[list[int]]) -> dict[str, Any]:
    """Left-padded prompts ⊕ right-padded continuations, as the core's teacher forcing lays them out."""
    batch = prepare_batch(model, prompts, continuations=conts, pad_token_id=0, position_ids=True)
    pw, cw = max(map(len, prompts)), max(map(len, conts))
    cont = batch["input_ids"][:, pw:].masked_fill(batch["attention_mask"][:, pw:] == 0, IGNORE_INDEX)
    return {**batch, "cont": cont, "prompt_width": pw, "cont_width": cw}


def _row_metrics(logits: torch.Tensor, batch: dict[str, Any]) -> tuple[Any, float]:
    """FDT/SDT and mean NLL from full-sequence logits ``[B, P+T, V]``."""
    pw, cw = batch["prompt_width"], batch["cont_width"]
    scored = logits[:, pw - 1:pw - 1 + cw].float()
    cont = batch["cont"]
    valid = cont != IGNORE_INDEX
    pred = scored.argmax(-1).masked_fill(~valid, IGNORE_INDEX)
    nll = token_cross_entropy(scored, cont.clamp_min(0))
    return divergence_from_ids(pred, cont, valid), float(nll[valid].mean())


def _metrics_full(model: nn.Module, batch: dict[str, Any]) -> tuple[Any, float]:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], use_cache=False)
    return _row_metrics(out.logits, batch)


def sensitivity_scan(model: nn.Module, ref: ReferenceData, *, components: Sequence[str] | None = None,
                     methods: Mapping[str, Sequence[float]] | None = None, prefix_cache: bool = True,
                     progress: bool = True) -> ScanResult:
    """Score every component × level by teacher-forced FDTM when *only that component* is compressed.

    Args:
        model: the base model (restored bit-exactly after each perturbation).
        ref: its greedy reference (:func:`~hf_ext.dtm.divergence.reference`).
        components: names to scan (default: :func:`list_components`).
        methods: ``{"int8": [bits, …], "prune": [sparsity, …]}`` (default ``{"int8": [8]}``).
        prefix_cache: reuse the base's hidden states at the perturbed layer's input (one full forward in all, then
            only layers ``l..L-1`` per component) instead of a full forward per component. A model that cannot be
            resumed from hidden states (:func:`hf_ext.core.layers.resume_refusal`) gets full forwards, and the
            result's ``prefix_cache`` says so.
        progress: tqdm bar.

    Returns:
        :class:`ScanResult`.

    Raises:
        ValueError: unknown method, bad level, unknown component.

    Example:
        >>> from hf_ext.dtm import reference
        >>> model = tiny_causal_lm("llama", seed=0)
        >>> ref = reference(model, [[1, 5, 6], [2, 7]], max_new_tokens=4, progress=False)
        >>> scan = sensitivity_scan(model, ref, components=["model.layers.0.mlp.up_proj"],
        ...                         methods={"int8": [8], "prune": [0.5, 0.9]}, progress=False)
        >>> sorted({row["method"] for row in scan.rows})
        ['int8', 'prune']
    """
    from hf_ext.utils.progress import progress_bar

    methods = dict(methods or {"int8": [8]})
    for m, levels in methods.items():
        if m not in METHODS:
            raise ValueError(f"unknown compression method {m!r}; use one of {METHODS}")
        if not levels:
            raise ValueError(f"method {m!r} has no levels; pass e.g. {{'int8': [8]}} or {{'prune': [0.5, 0.9]}}")
        for lv in levels:
            if m == "prune":
                check_sparsity(lv)
            else:
                check_int("methods['int8'] level (a bit width)", lv, min=2, max=8)
    names = list(components) if components is not None else list_components(model)
    for n in names:
        get_component(model, n)
    prompts, conts = ref_columns(ref)
    batch = _padded_batch(model, prompts, conts)
    hidden = None
    rows = []
    jobs = [(n, m, lv) for n in names for m, levels in methods.items() for lv in levels]
    refusal = resume_refusal(model) if prefix_cache else None
    if refusal is not None:
        logger.info("%s; sensitivity_scan runs full forwards instead of the prefix cache", refusal)
        prefix_cache = False
    with torch.no_grad():
        if prefix_cache:  # each layer's input (not output_hidden_states: Mamba records layer outputs there)
            _, hidden = forward_with_layer_inputs(model, input_ids=batch["input_ids"],
                                                  attention_mask=batch["attention_mask"],
                                                  position_ids=batch["position_ids"], use_cache=False)
        for name, method, level in progress_bar(jobs, desc="DTM scan", enabled=progress):
            layer = component_layer(model, name)
            ctx = fake_quant(model, name, bits=level) if method == "int8" else magnitude_prune(model, name, level)
            with ctx:
                if prefix_cache:
                    # context: what layers < layer handed on besides the hidden states (router states, shared K/V)
                    logits = run_layers(model, hidden[layer], layer, batch["attention_mask"], batch["position_ids"],
                                        return_logits=True, input_ids=batch["input_ids"],
                                        context=getattr(hidden, "context", None))
                    res, nll = _row_metrics(logits, batch)
                else:
                    res, nll = _metrics_full(model, batch)
            agg = res.aggregate()
            rows.append({"component": name, "layer": layer, "method": method, "level": level,
                         "num_params": linear_weight(get_component(model, name)).numel(), "fdtm": agg["fdtm"],
                         "fdt_ratio": agg["fdt_norm"], "sdtm": agg["sdtm"], "fdt_full_share": agg["fdt_full_share"],
                         "nll": nll, "ppl": math.exp(nll)})
    return ScanResult(rows=rows, num_tokens=float(sum(map(len, conts)) / len(conts)), prefix_cache=prefix_cache)


# --------------------------------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------------------------------


def _evaluate(model: nn.Module, batch: dict[str, Any], int8: Sequence[str], sparsity: Mapping[str, float],
              bits: int = 8) -> float:
    with torch.no_grad(), compressed(model, int8=int8, sparsity=sparsity, bits=bits):
        res, _ = _metrics_full(model, batch)
    return float(res.fdt.double().mean() / res.num_tokens.double().mean())


def build_plan(model: nn.Module, ref: ReferenceData, scan: ScanResult, *, int8: bool = True, prune_levels: Sequence[float] = (),
               min_fdt_ratio: float = 0.9, by: str = "fdtm", stop_at_first: bool = True, base_model: str | None = None,
               progress: bool = True) -> CompressionPlan:
    """Greedy plan in the paper's order, keeping mean FDT / N ≥ ``min_fdt_ratio`` for the combined model.

    * int8: components in descending-FDTM order (``scan.ranking("int8")``) are added one by one; with
      ``stop_at_first`` the plan stops at the first component that would push the ratio below the threshold (a
      prefix of the ranking, as the paper's coverage curve), else that component is skipped.
    * pruning: for each level in ascending ``prune_levels``, components in that level's FDTM order get their
      sparsity raised to the level if the combined model stays above the threshold (a non-uniform sparsity map).

    Example:
        >>> from hf_ext.dtm import reference
        >>> model = tiny_causal_lm("llama", seed=0)
        >>> ref = reference(model, [[1, 5, 6], [2, 7]], max_new_tokens=4, progress=False)
        >>> parts = ["model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"]
        >>> scan = sensitivity_scan(model, ref, components=parts, methods={"int8": [8], "prune": [0.5, 0.9]},
        ...                         progress=False)
        >>> plan = build_plan(model, ref, scan, prune_levels=[0.5, 0.9], min_fdt_ratio=0.8, progress=False)
        >>> plan.metrics["fdt_ratio"] >= 0.8
        True
    """
    from hf_ext.utils.progress import progress_bar

    if not 0.0 <= min_fdt_ratio <= 1.0:
        raise ValueError(f"min_fdt_ratio must lie in [0, 1], got {min_fdt_ratio!r}")
    prompts, conts = ref_columns(ref)
    batch = _padded_batch(model, prompts, conts)
    chosen: list[str] = []
    sparsity: dict[str, float] = {}
    order: list[str] = []
    if int8:
        order = scan.ranking("int8", by=by)
        for name in progress_bar(order, desc="int8 plan", enabled=progress):
            if _evaluate(model, batch, chosen + [name], sparsity) >= min_fdt_ratio:
                chosen.append(name)
            elif stop_at_first:
                break
    for level in sorted(prune_levels):
        check_sparsity(level)
        for name in progress_bar(scan.ranking("prune", level=level, by=by), desc=f"sparsity {level}", enabled=progress):
            if sparsity.get(name, 0.0) >= level:
                continue
            trial = {**sparsity, name: level}
            if _evaluate(model, batch, chosen, trial) >= min_fdt_ratio:
                sparsity = trial
    plan = CompressionPlan(int8=chosen, sparsity=sparsity, order=order, base_model=base_model)
    with torch.no_grad(), compressed(model, plan):
        res, nll = _metrics_full(model, batch)
    plan.metrics = {"fdtm": float(res.fdt.double().mean()), "fdt_ratio": res.aggregate()["fdt_norm"],
                    "sdtm": float(res.sdt.double().mean()), "nll": nll, "min_fdt_ratio": min_fdt_ratio,
                    **parameter_shares(model, plan)}
    return plan


def coverage_curve(model: nn.Module, ref: ReferenceData, order: Sequence[str], *, bits: int = 8) -> list[dict[str, float]]:
    """Cumulative int8 coverage: after converting the first ``k`` components of ``order``, the share of component
    parameters in int8 and the mean FDT (``k = 0 … len(order)``).

    Returns:
        ``[{"k", "param_share", "fdtm", "fdt_ratio"}, …]`` (``len(order) + 1`` points).
    """
    prompts, conts = ref_columns(ref)
    batch = _padded_batch(model, prompts, conts)
    sizes = {n: linear_weight(get_component(model, n)).numel() for n in list_components(model)}
    total = sum(sizes.values())
    n_mean = sum(map(len, conts)) / len(conts)
    points, share = [], 0.0
    for k in range(len(order) + 1):
        if k:
            share += sizes[order[k - 1]] / total
        ratio = _evaluate(model, batch, list(order[:k]), {}, bits=bits)
        points.append({"k": k, "param_share": share, "fdtm": ratio * n_mean, "fdt_ratio": ratio})
    return points


def curve_auc(points: Sequence[Mapping[str, float]], x: str = "param_share", y: str = "fdt_ratio") -> float:
    """Trapezoid area under a coverage curve (``x`` from 0 to its last value).

    Example:
        >>> curve_auc([{"param_share": 0.0, "fdt_ratio": 1.0}, {"param_share": 1.0, "fdt_ratio": 0.0}])
        0.5
    """
    pts = sorted((p[x], p[y]) for p in points)
    return float(sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(pts, pts[1:])))


def random_order(names: Sequence[str], seed: int) -> list[str]:
    """A seeded random permutation of ``names`` (the random-order baseline)."""
    out = list(names)
    random.Random(seed).shuffle(out)
    return out
