"""DTM-guided compression: per-component fake quantization / magnitude pruning, a sensitivity scan ranked by FDTM,
greedy plans in the paper's order, and applying a plan with a real int8 backend.

* **Components** are the linear weights of the decoder blocks (:func:`list_components`: ``nn.Linear`` and GPT-2's
  ``Conv1D`` under ``<layers_path>.<i>``; Llama has 7 per layer: q, k, v, o, gate, up, down).
* **Context managers** :func:`fake_quant` (int8 absmax per output row) and :func:`magnitude_prune` (unstructured,
  per matrix) change weights in place and restore them **bit-exactly** on exit (also on exceptions).
* :func:`sensitivity_scan` compresses one component at a time at each level and scores the model by teacher-forced
  FDT/SDT (and NLL, for the perplexity order) on the base's greedy reference. With ``prefix_cache=True`` the base's
  hidden states at every layer input are computed once and a component of layer ``l`` resumes the decoder from layer
  ``l`` (:func:`hf_ext.core.layers.run_layers`), so earlier layers are not recomputed.
* :func:`build_plan` greedily adds components in descending-FDTM order (int8) and raises sparsity levels
  (pruning), keeping the model's mean FDT above a threshold; :func:`apply_plan` applies it for real
  (:class:`~hf_ext.dtm.int8.Int8WeightOnlyLinear` by default; torchao / optimum-quanto optional).
* :class:`PruningMaskCallback` keeps pruned weights at zero through ``transformers.Trainer`` fine-tuning.

Example:
    >>> from hf_ext.testing import tiny_causal_lm
    >>> from hf_ext.dtm import reference
    >>> model = tiny_causal_lm("llama")
    >>> ref = reference(model, [[1, 5, 6, 7]], max_new_tokens=8, eos_token_id=[], progress=False)
    >>> scan = sensitivity_scan(model, ref, methods={"int8": [8]}, progress=False)
    >>> plan = build_plan(model, ref, scan, min_fdt_ratio=0.9, progress=False)
    >>> masks = apply_plan(model, plan)  # int8 Linear modules swapped in (in place)
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from ..core.anatomy import get_anatomy
from ..core.inputs import prepare_batch
from ..core.layers import run_layers
from ..core.scoring import IGNORE_INDEX, token_cross_entropy
from .divergence import divergence_from_ids, ref_columns
from .int8 import Int8WeightOnlyLinear, fake_quantize_absmax, is_linear_like, linear_weight

logger = logging.get_logger(__name__)

__all__ = [
    "CompressionPlan", "PruningMaskCallback", "ScanResult", "apply_plan", "build_plan", "compressed", "coverage_curve",
    "curve_auc", "fake_quant", "list_components", "load_compressed", "magnitude_prune", "magnitude_prune_weight",
    "save_compressed", "sensitivity_scan", "weight_perturbation",
]

METHODS = ("int8", "prune")


# --------------------------------------------------------------------------------------------------------------------
# Components and in-place perturbations
# --------------------------------------------------------------------------------------------------------------------


def list_components(model: nn.Module, layers: Sequence[int] | None = None) -> list[str]:
    """Dotted names of every linear weight (``nn.Linear`` / GPT-2 ``Conv1D``) inside the decoder layers.

    Args:
        model: any transformers causal LM (:func:`~hf_ext.core.anatomy.get_anatomy`).
        layers: restrict to these layer indices (default: all).

    Returns:
        Names in layer order, e.g. ``["model.layers.0.self_attn.q_proj", …]``.

    Example:
        >>> len(list_components(tiny_causal_lm("llama")))  # 2 layers × 7  # doctest: +SKIP
        14
    """
    anatomy = get_anatomy(model)
    names = []
    for index in anatomy.resolve_layers(layers):
        prefix = f"{anatomy.layers_path}.{index}"
        for name, module in anatomy.layers[index].named_modules():
            if name and is_linear_like(module):
                names.append(f"{prefix}.{name}")
    return names


def _layer_of(model: nn.Module, name: str) -> int:
    anatomy = get_anatomy(model)
    prefix = anatomy.layers_path + "."
    if not name.startswith(prefix):
        raise ValueError(f"component {name!r} is not inside the decoder layers ({anatomy.layers_path}.<i>.…)")
    return int(name[len(prefix):].split(".")[0])


def _get(model: nn.Module, name: str) -> nn.Module:
    try:
        module = model.get_submodule(name)
    except AttributeError as err:
        raise ValueError(f"model has no module {name!r}; list valid names with list_components(model)") from err
    if not is_linear_like(module):
        raise ValueError(f"module {name!r} is a {type(module).__name__}, not an nn.Linear/Conv1D component")
    return module


@contextlib.contextmanager
def weight_perturbation(model: nn.Module, changes: Mapping[str, Callable[[torch.Tensor], torch.Tensor]]) -> Iterator[None]:
    """Replace linear weights in place for the duration of the block; restore them bit-exactly afterwards.

    Args:
        model: the model.
        changes: component name -> ``fn(weight [out, in]) -> new weight [out, in]`` (``Conv1D`` is transposed for you).

    Example:
        >>> with weight_perturbation(model, {"model.layers.0.mlp.up_proj": lambda w: w * 0}):  # doctest: +SKIP
        ...     out = model(ids)
    """
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for name, fn in changes.items():
            module = _get(model, name)
            param = module.weight
            saved.append((param, param.detach().clone()))
            with torch.no_grad():
                new = fn(linear_weight(module).detach())
                if not isinstance(module, nn.Linear):
                    new = new.t()
                param.copy_(new)
        yield
    finally:
        with torch.no_grad():
            for param, original in reversed(saved):
                param.copy_(original)


def magnitude_prune_weight(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero the ``round(sparsity · numel)`` smallest-magnitude entries (stable order on ties).

    Example:
        >>> magnitude_prune_weight(torch.tensor([[1., -3., 0.5, 2.]]), 0.5).tolist()
        [[0.0, -3.0, 0.0, 2.0]]
    """
    _check_sparsity(sparsity)
    k = int(round(sparsity * weight.numel()))
    if k == 0:
        return weight.clone()
    flat = weight.detach().flatten()
    idx = torch.argsort(flat.abs(), stable=True)[:k]
    out = flat.clone()
    out[idx] = 0
    return out.view_as(weight)


def _check_sparsity(s: Any) -> None:
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= float(s) <= 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1], got {s!r}")


def _names(names: str | Sequence[str]) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


@contextlib.contextmanager
def fake_quant(model: nn.Module, names: str | Sequence[str], scheme: str = "int8_absmax_rowwise", *, bits: int = 8):
    """Fake-quantize components (absmax per output row) inside the block; weights are restored bit-exactly on exit.

    Args:
        model: the model (changed in place during the block).
        names: one component name or several (see :func:`list_components`).
        scheme: ``"int8_absmax_rowwise"`` (the only scheme; ``bits`` < 8 gives a coarser variant for stress tests).
        bits: quantization bits (8 by default).

    Example:
        >>> with fake_quant(model, "model.layers.0.self_attn.q_proj"):  # doctest: +SKIP
        ...     res = score(model, ref)
    """
    if scheme != "int8_absmax_rowwise":
        raise ValueError(f"unknown quantization scheme {scheme!r}; supported: 'int8_absmax_rowwise'")
    with weight_perturbation(model, {n: (lambda w: fake_quantize_absmax(w, bits)) for n in _names(names)}):
        yield


@contextlib.contextmanager
def magnitude_prune(model: nn.Module, names: str | Sequence[str] | Mapping[str, float], sparsity: float | None = None):
    """Magnitude-prune components (unstructured, per matrix) inside the block; restored bit-exactly on exit.

    Args:
        model: the model.
        names: a name, a list of names (all at ``sparsity``) or a ``{name: sparsity}`` map.
        sparsity: fraction of weights zeroed, in ``[0, 1]``.

    Example:
        >>> with magnitude_prune(model, {"model.layers.0.mlp.up_proj": 0.9}):  # doctest: +SKIP
        ...     res = score(model, ref)
    """
    if isinstance(names, Mapping):
        spec = dict(names)
    else:
        if sparsity is None:
            raise ValueError("pass sparsity= (in [0, 1]) or a {name: sparsity} mapping")
        spec = {n: sparsity for n in _names(names)}
    for s in spec.values():
        _check_sparsity(s)
    with weight_perturbation(model, {n: (lambda w, s=s: magnitude_prune_weight(w, s)) for n, s in spec.items()}):
        yield


@contextlib.contextmanager
def compressed(model: nn.Module, plan: CompressionPlan | None = None, *, int8: Sequence[str] = (),
               sparsity: Mapping[str, float] | None = None, bits: int = 8):
    """Simulate a whole plan (fake int8 on ``plan.int8``, pruning by ``plan.sparsity``) inside the block.

    Pruning is applied first, then quantization of the (pruned) weight, as :func:`apply_plan` does.
    """
    int8 = list(plan.int8) if plan is not None else list(int8)
    sparsity = dict(plan.sparsity) if plan is not None else dict(sparsity or {})
    changes: dict[str, Callable] = {}
    for name in set(int8) | set(sparsity):
        s, q = sparsity.get(name, 0.0), name in int8
        _check_sparsity(s)

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
        >>> scan.ranking("int8")[:3]  # least damaging first  # doctest: +SKIP
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


def sensitivity_scan(model: nn.Module, ref: Any, *, components: Sequence[str] | None = None,
                     methods: Mapping[str, Sequence[float]] | None = None, prefix_cache: bool = True,
                     progress: bool = True) -> ScanResult:
    """Score every component × level by teacher-forced FDTM when *only that component* is compressed.

    Args:
        model: the base model (restored bit-exactly after each perturbation).
        ref: its greedy reference (:func:`~hf_ext.dtm.divergence.reference`).
        components: names to scan (default: :func:`list_components`).
        methods: ``{"int8": [bits, …], "prune": [sparsity, …]}`` (default ``{"int8": [8]}``).
        prefix_cache: reuse the base's hidden states at the perturbed layer's input (one full forward in all, then
            only layers ``l..L-1`` per component) instead of a full forward per component.
        progress: tqdm bar.

    Returns:
        :class:`ScanResult`.

    Raises:
        ValueError: unknown method, bad level, unknown component.

    Example:
        >>> scan = sensitivity_scan(model, ref, methods={"int8": [8], "prune": [0.5, 0.9]})  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    methods = dict(methods or {"int8": [8]})
    for m, levels in methods.items():
        if m not in METHODS:
            raise ValueError(f"unknown compression method {m!r}; use one of {METHODS}")
        if not levels:
            raise ValueError(f"method {m!r} has no levels; pass e.g. {{'int8': [8]}} or {{'prune': [0.5, 0.9]}}")
        for lv in levels:
            if m == "prune":
                _check_sparsity(lv)
            elif not (isinstance(lv, int) and 2 <= lv <= 8):
                raise ValueError(f"int8 levels are bit widths in [2, 8], got {lv!r}")
    names = list(components) if components is not None else list_components(model)
    for n in names:
        _get(model, n)
    prompts, conts = ref_columns(ref)
    batch = _padded_batch(model, prompts, conts)
    hidden = None
    rows = []
    jobs = [(n, m, lv) for n in names for m, levels in methods.items() for lv in levels]
    with torch.no_grad():
        if prefix_cache:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        position_ids=batch["position_ids"], use_cache=False, output_hidden_states=True)
            hidden = out.hidden_states
        for name, method, level in tqdm(jobs, desc="DTM scan", disable=not progress):
            layer = _layer_of(model, name)
            ctx = fake_quant(model, name, bits=level) if method == "int8" else magnitude_prune(model, name, level)
            with ctx:
                if prefix_cache:
                    logits = run_layers(model, hidden[layer], layer, batch["attention_mask"], batch["position_ids"],
                                        return_logits=True)
                    res, nll = _row_metrics(logits, batch)
                else:
                    res, nll = _metrics_full(model, batch)
            agg = res.aggregate()
            rows.append({"component": name, "layer": layer, "method": method, "level": level,
                         "num_params": linear_weight(_get(model, name)).numel(), "fdtm": agg["fdtm"],
                         "fdt_ratio": agg["fdt_norm"], "sdtm": agg["sdtm"], "fdt_full_share": agg["fdt_full_share"],
                         "nll": nll, "ppl": math.exp(nll)})
    return ScanResult(rows=rows, num_tokens=float(sum(map(len, conts)) / len(conts)), prefix_cache=prefix_cache)


# --------------------------------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class CompressionPlan:
    """Which components to store in int8 and a per-component sparsity map (JSON-serialisable).

    Attributes:
        int8: component names converted to int8 (absmax per row, weight only).
        sparsity: component name -> magnitude-pruning sparsity.
        order: the ranking the plan was built from (least damaging first).
        base_model: name of the base model (free text / Hub id).
        metrics: e.g. ``{"fdtm": …, "fdt_ratio": …, "int8_param_share": …, "mean_sparsity": …}`` after the plan.

    Example:
        >>> plan = CompressionPlan(int8=["model.layers.0.mlp.up_proj"], sparsity={})
        >>> CompressionPlan.from_json(plan.to_json()) == plan
        True
    """

    int8: list[str] = field(default_factory=list)
    sparsity: dict[str, float] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    base_model: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CompressionPlan:
        data = json.loads(text)
        unknown = set(data) - {"int8", "sparsity", "order", "base_model", "metrics"}
        if unknown:
            raise ValueError(f"unknown plan fields {sorted(unknown)}; is this a CompressionPlan JSON?")
        return cls(**data)

    def summary(self, model: nn.Module | None = None) -> dict[str, Any]:
        """Counts (and parameter shares when ``model`` is given)."""
        out: dict[str, Any] = {"int8_components": len(self.int8), "pruned_components": len(self.sparsity), **self.metrics}
        if model is not None:
            out.update(_shares(model, self))
        return out


def _shares(model: nn.Module, plan: CompressionPlan) -> dict[str, float]:
    sizes = {n: linear_weight(_get(model, n)).numel() for n in list_components(model)}
    total = sum(sizes.values())
    int8 = sum(sizes.get(n, 0) for n in plan.int8)
    zeros = sum(sizes.get(n, 0) * s for n, s in plan.sparsity.items())
    return {"int8_param_share": int8 / total, "mean_sparsity": zeros / total}


def _evaluate(model: nn.Module, batch: dict[str, Any], int8: Sequence[str], sparsity: Mapping[str, float],
              bits: int = 8) -> float:
    with torch.no_grad(), compressed(model, int8=int8, sparsity=sparsity, bits=bits):
        res, _ = _metrics_full(model, batch)
    return float(res.fdt.double().mean() / res.num_tokens.double().mean())


def build_plan(model: nn.Module, ref: Any, scan: ScanResult, *, int8: bool = True, prune_levels: Sequence[float] = (),
               min_fdt_ratio: float = 0.9, by: str = "fdtm", stop_at_first: bool = True, base_model: str | None = None,
               progress: bool = True) -> CompressionPlan:
    """Greedy plan in the paper's order, keeping mean FDT / N ≥ ``min_fdt_ratio`` for the combined model.

    * int8: components in descending-FDTM order (``scan.ranking("int8")``) are added one by one; with
      ``stop_at_first`` the plan stops at the first component that would push the ratio below the threshold (a
      prefix of the ranking, as the paper's coverage curve), else that component is skipped.
    * pruning: for each level in ascending ``prune_levels``, components in that level's FDTM order get their
      sparsity raised to the level if the combined model stays above the threshold (a non-uniform sparsity map).

    Example:
        >>> plan = build_plan(model, ref, scan, prune_levels=[0.5, 0.9], min_fdt_ratio=0.8)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    if not 0.0 <= min_fdt_ratio <= 1.0:
        raise ValueError(f"min_fdt_ratio must lie in [0, 1], got {min_fdt_ratio!r}")
    prompts, conts = ref_columns(ref)
    batch = _padded_batch(model, prompts, conts)
    chosen: list[str] = []
    sparsity: dict[str, float] = {}
    order: list[str] = []
    if int8:
        order = scan.ranking("int8", by=by)
        for name in tqdm(order, desc="int8 plan", disable=not progress):
            if _evaluate(model, batch, chosen + [name], sparsity) >= min_fdt_ratio:
                chosen.append(name)
            elif stop_at_first:
                break
    for level in sorted(prune_levels):
        _check_sparsity(level)
        for name in tqdm(scan.ranking("prune", level=level, by=by), desc=f"sparsity {level}", disable=not progress):
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
                    **_shares(model, plan)}
    return plan


def coverage_curve(model: nn.Module, ref: Any, order: Sequence[str], *, bits: int = 8) -> list[dict[str, float]]:
    """Cumulative int8 coverage: after converting the first ``k`` components of ``order``, the share of component
    parameters in int8 and the mean FDT (``k = 0 … len(order)``).

    Returns:
        ``[{"k", "param_share", "fdtm", "fdt_ratio"}, …]`` (``len(order) + 1`` points).
    """
    prompts, conts = ref_columns(ref)
    batch = _padded_batch(model, prompts, conts)
    sizes = {n: linear_weight(_get(model, n)).numel() for n in list_components(model)}
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


# --------------------------------------------------------------------------------------------------------------------
# Applying plans, saving, fine-tuning with masks
# --------------------------------------------------------------------------------------------------------------------


def apply_plan(model: nn.Module, plan: CompressionPlan, *, backend: str = "torch") -> dict[str, torch.Tensor]:
    """Apply a plan **in place**: magnitude-prune by ``plan.sparsity`` then convert ``plan.int8`` to int8.

    Args:
        model: the model (deep-copy it first to keep the original).
        plan: a :class:`CompressionPlan`.
        backend: ``"torch"`` (default: :class:`~hf_ext.dtm.int8.Int8WeightOnlyLinear`, pure torch on
            ``torch._weight_int8pack_mm``), ``"torchao"`` (``Int8WeightOnlyConfig``) or ``"quanto"``
            (optimum-quanto ``qint8`` weights); the optional ones must be installed.

    Returns:
        ``{component: bool mask [out, in]}`` of kept weights for the pruned components (for
        :class:`PruningMaskCallback`).

    Example:
        >>> masks = apply_plan(copy.deepcopy(model), plan)  # doctest: +SKIP
    """
    if backend not in ("torch", "torchao", "quanto"):
        raise ValueError(f"unknown backend {backend!r}; use 'torch', 'torchao' or 'quanto'")
    masks: dict[str, torch.Tensor] = {}
    for name, s in plan.sparsity.items():
        _check_sparsity(s)
        module = _get(model, name)
        with torch.no_grad():
            pruned = magnitude_prune_weight(linear_weight(module), s)
            module.weight.copy_(pruned if isinstance(module, nn.Linear) else pruned.t())
        masks[name] = pruned != 0
    for name in plan.int8:
        _get(model, name)
    if backend == "torch":
        for name in plan.int8:
            model.set_submodule(name, Int8WeightOnlyLinear.from_linear(model.get_submodule(name)))
    elif backend == "torchao":
        ao = _require("torchao.quantization", "torchao")
        targets = set(plan.int8)
        ao.quantize_(model, ao.Int8WeightOnlyConfig(), filter_fn=lambda m, fqn: fqn in targets)
    else:
        quanto = _require("optimum.quanto", "optimum-quanto")
        # quanto swaps children of the module it is given, so quantize from the root with exact-name includes
        quanto.quantize(model, weights=quanto.qint8, include=list(plan.int8))
        quanto.freeze(model)
    return masks


def _require(module: str, dist: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"backend needs {dist}: pip install {dist} ({err})") from err


def save_compressed(model: nn.Module, plan: CompressionPlan, path: str | Path) -> Path:
    """Save a model after :func:`apply_plan` (torch backend): ``model.safetensors`` (int8 weights + scales) and
    ``dtm_plan.json``. Load with :func:`load_compressed`."""
    from safetensors.torch import save_model

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path / "model.safetensors"))
    (path / "dtm_plan.json").write_text(plan.to_json())
    return path


def load_compressed(model: nn.Module, path: str | Path) -> tuple[nn.Module, CompressionPlan]:
    """Rebuild the int8 structure of ``dtm_plan.json`` on a freshly built base ``model`` (same architecture) and load
    the saved weights into it (strict). Returns ``(model, plan)``."""
    from safetensors.torch import load_model

    path = Path(path)
    plan = CompressionPlan.from_json((path / "dtm_plan.json").read_text())
    for name in plan.int8:
        model.set_submodule(name, Int8WeightOnlyLinear.from_linear(_get(model, name)))
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=True)
    return model, plan


def _trainer_callback_base():
    try:
        from transformers import TrainerCallback
    except ImportError:  # pragma: no cover
        return object
    return TrainerCallback


class PruningMaskCallback(_trainer_callback_base()):
    """``transformers.TrainerCallback`` that keeps pruned weights at zero through fine-tuning.

    The masks (from :func:`apply_plan`) are re-applied at the start of training and after every optimizer step
    (``on_step_end``), so momentum or weight decay cannot regrow pruned weights.

    Args:
        model: the pruned model (the masks' module names refer to it).
        masks: ``{component: bool mask [out, in]}``.

    Example:
        >>> masks = apply_plan(model, plan)  # doctest: +SKIP
        >>> Trainer(model=model, args=args, train_dataset=ds, callbacks=[PruningMaskCallback(model, masks)])  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]):
        self.targets = []
        for name, mask in masks.items():
            module = _get(model, name)
            mask = mask if isinstance(module, nn.Linear) else mask.t()
            if tuple(mask.shape) != tuple(module.weight.shape):
                raise ValueError(f"mask for {name!r} has shape {tuple(mask.shape)}, weight has {tuple(module.weight.shape)}")
            self.targets.append((module, mask.to(module.weight.device)))

    def apply(self) -> None:
        """Zero the pruned weights now."""
        with torch.no_grad():
            for module, mask in self.targets:
                module.weight.mul_(mask.to(module.weight.dtype))

    def on_train_begin(self, args, state, control, **kwargs):
        self.apply()

    def on_step_end(self, args, state, control, **kwargs):
        self.apply()
