"""Evaluation of a moral direction: user-study correlation (Pearson r, dos/don'ts) and plots.

* :func:`correlate` — Pearson r between model scores and human scores over the actions present in both
  (``scipy.stats.pearsonr``, as ``plt_UserstudyCorr.run_correlations``), plus the dos (human ≥ 0) and
  don'ts (< 0) subsets.
* :func:`user_study_correlation` — scores the user-study actions with a direction (10 templates averaged, or
  the translated questions; non-English directions cover 115 of 116 global actions: "eat humans" has no
  translation) and correlates them with the human scores 2·Yes/(Yes+No) − 1.
* :func:`plot_pc1`, :func:`plot_user_study`, :func:`plot_mfq` — PNG figures (matplotlib, Agg).

Example:
    >>> from hf_ext.moral import resources
    >>> res = correlate(resources.reference_user_study_scores("globalAMT"), resources.human_scores("globalAMT"))
    >>> res["n"], round(res["r"], 4)
    (116, 0.8352)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hf_ext.utils.imports import require
from hf_ext.utils.logging import get_logger

from . import resources

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from .direction import MoralDirection
    from .encoders import EncoderLike

logger = get_logger(__name__)

__all__ = ["correlate", "plot_mfq", "plot_pc1", "plot_user_study", "user_study_correlation"]


def _pearson(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    stats = require("scipy.stats")
    if len(x) < 3:
        return float("nan"), float("nan")
    res = stats.pearsonr(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return float(res[0]), float(res[1])


def correlate(model_scores: Mapping[str, float], human: Mapping[str, float]) -> dict[str, Any]:
    """Pearson r of ``model_scores`` vs ``human`` over their common actions, overall and per dos/don'ts split.

    Returns:
        ``{"r", "p", "n", "r_dos", "p_dos", "n_dos", "r_donts", "p_donts", "n_donts", "actions", "model", "human",
        "missing"}`` where dos are actions with human score ≥ 0, ``missing`` the human actions without a model score.
    """
    common = [a for a in human if a in model_scores]
    if len(common) < 3:
        raise ValueError(f"only {len(common)} actions are scored in both files; need at least 3 to correlate")
    m = [float(model_scores[a]) for a in common]
    h = [float(human[a]) for a in common]
    r, p = _pearson(m, h)
    dos = [i for i, v in enumerate(h) if v >= 0]
    donts = [i for i, v in enumerate(h) if v < 0]
    r_dos, p_dos = _pearson([m[i] for i in dos], [h[i] for i in dos])
    r_donts, p_donts = _pearson([m[i] for i in donts], [h[i] for i in donts])
    return {"r": r, "p": p, "n": len(common), "r_dos": r_dos, "p_dos": p_dos, "n_dos": len(dos),
            "r_donts": r_donts, "p_donts": p_donts, "n_donts": len(donts), "actions": common, "model": m, "human": h,
            "missing": [a for a in human if a not in model_scores]}


def user_study_correlation(direction: MoralDirection, study: str = "globalAMT", *, variant: str = "templates",
                           encoder: EncoderLike | None = None, batch_size: int | None = None,
                           progress: bool = False) -> dict[str, Any]:
    """Score the user-study actions with ``direction`` (templates averaged) and correlate with the human scores.

    Args:
        direction: a fitted :class:`~hf_ext.moral.MoralDirection` with an encoder (or pass ``encoder``).
        study: ``"globalAMT"`` (116 actions) or ``"regional"`` (113).
        variant: ``"templates"`` (the paper's "subspace_qa": mean of the 10 question embeddings) or ``"raw"``
            (English only: the single question the participants saw, e.g. "Is it polite to borrow a book?").

    Returns:
        :func:`correlate`'s dict plus ``"study"``, ``"language"`` and ``"embeddings"`` (``(n, dim)``, the template-mean
        embeddings of ``"actions"``, e.g. for :func:`plot_pc1`).

    Example:
        >>> from hf_ext.moral import MoralDirection
        >>> res = user_study_correlation(MoralDirection.bundled())
        >>> bool(res["r"] > 0 and res["p"] < 0.01)
        True
    """
    if variant not in ("templates", "raw"):
        raise ValueError(f"variant={variant!r} is not supported; use 'templates' or 'raw'")
    if variant == "raw" and direction.language != "en":
        raise ValueError("variant='raw' uses the English user-study questions; use variant='templates' for "
                         f"language {direction.language!r}")
    human = resources.human_scores(study)
    actions = list(human)
    if direction.language != "en":
        table = resources.translated_questions(direction.language) if direction.language in resources.LANGUAGES else {}
        skipped = [a for a in actions if a not in table]
        if skipped:
            logger.warning("no %s translation for %s: correlating %d of %d actions", direction.language, skipped,
                           len(actions) - len(skipped), len(actions))
        actions = [a for a in actions if a in table]
    if variant == "raw":
        questions = resources.user_study_questions(study)
        actions = [a for a in actions if a in questions]
        emb = direction.embed([questions[a] for a in actions], use_templates=False, encoder=encoder,
                              batch_size=batch_size, progress=progress)
    else:
        emb = direction.embed(actions, use_templates=True, encoder=encoder, batch_size=batch_size, progress=progress)
    scores = direction.project(emb)
    res = correlate(dict(zip(actions, scores.tolist())), human)
    row = {a: i for i, a in enumerate(actions)}
    res.update(study=study, language=direction.language, variant=variant, embeddings=emb[[row[a] for a in res["actions"]]])
    return res


def _figure(figsize):
    require("matplotlib")
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=100, layout="tight")


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_pc1(direction: MoralDirection, path: str | os.PathLike, phrases: Sequence[str] | None = None, *,
             embeddings: ArrayLike | None = None, use_templates: bool = True, title: str | None = None,
             encoder: EncoderLike | None = None) -> Path:
    """Scatter of actions on (moral score = oriented PC1, PC2), both divided by the norm; labels = phrases.

    Args:
        direction: a fitted direction (with ``components`` of at least 2 rows for the y axis, else y = 0).
        path: PNG to write.
        phrases: actions to plot (default the fit phrases).
        embeddings: their ``(n, dim)`` embeddings (default: computed with templates).
        use_templates: embed the phrases through their 10 questions (when ``embeddings`` is not given).
        title: the figure title.
        encoder: overrides the direction's encoder.
    """
    phrases = list(phrases) if phrases is not None else list(direction.fit_phrases or [])
    if not phrases:
        raise ValueError("plot_pc1 needs phrases (the direction has no fit_phrases)")
    emb = embeddings if embeddings is not None else direction.embed(phrases, use_templates, encoder=encoder)
    coords = direction.pca_coordinates(emb)
    x = coords[:, 0]
    y = coords[:, 1] if coords.shape[1] > 1 else np.zeros_like(x)
    fig = _figure((8, 6))
    ax = fig.add_subplot()
    ax.scatter(x, y, c=x, cmap="RdYlGn", vmin=-1, vmax=1, s=18, edgecolors="k", linewidths=0.3)
    for xi, yi, label in zip(x, y, phrases):
        ax.annotate(label, (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("moral score (PC1, oriented: kill < 0)")
    ax.set_ylabel("PC2 / norm")
    ax.set_title(title or f"MoralDirection of {direction.encoder_name} ({direction.language})", fontsize=9)
    return _save(fig, path)


def plot_user_study(result: Mapping[str, Any], path: str | os.PathLike, *, title: str | None = None,
                    annotate: bool = True) -> Path:
    """Scatter of model scores vs human scores from :func:`user_study_correlation` / :func:`correlate`, with r."""
    m, h = np.asarray(result["model"]), np.asarray(result["human"])
    fig = _figure((6, 5))
    ax = fig.add_subplot()
    ax.scatter(h, m, s=14, c=np.where(h >= 0, "tab:green", "tab:red"), alpha=0.8)
    if len(h) > 1:
        slope, icpt = np.polyfit(h, m, 1)
        xs = np.linspace(-1, 1, 10)
        ax.plot(xs, slope * xs + icpt, color="k", lw=0.8)
    if annotate:
        for a, hi, mi in zip(result["actions"], h, m):
            ax.annotate(a, (hi, mi), fontsize=5, alpha=0.7)
    ax.set_xlabel("human score 2·Yes/(Yes+No) − 1")
    ax.set_ylabel("MoralDirection score")
    ax.set_title(title or (f"{result.get('study', 'user study')} ({result.get('language', 'en')}): "
                           f"r = {result['r']:.3f} (n = {result['n']}, p = {result['p']:.1e})"), fontsize=9)
    return _save(fig, path)


def plot_mfq(foundations: Mapping[str, float], path: str | os.PathLike, human: str | Sequence[str] | None = "us",
             *, title: str | None = None) -> Path:
    """Bars of MFQ foundation scores next to published human means (0–5 scale, second axis).

    Args:
        foundations: foundation -> score (from :func:`~hf_ext.moral.mfq.score_mfq`).
        human: key(s) of :data:`~hf_ext.moral.mfq.HUMAN_MEANS` (``"us"``, ``"cs"``, ``"zh"``, ``"de"``) or ``None``.
    """
    from .mfq import FOUNDATIONS, HUMAN_MEANS

    keys = [human] if isinstance(human, str) else list(human or [])
    for k in keys:
        if k not in HUMAN_MEANS:
            raise ValueError(f"unknown human reference {k!r}; use one of {sorted(HUMAN_MEANS)}")
    fig = _figure((7, 3.5))
    ax = fig.add_subplot()
    xs = np.arange(len(FOUNDATIONS))
    width = 0.8 / (1 + len(keys))
    ax.bar(xs - 0.4 + width / 2, [foundations[f] for f in FOUNDATIONS], width, label="model (MD score)",
           color="tab:blue")
    ax.set_ylabel("MD foundation score")
    ax.axhline(0, color="grey", lw=0.5)
    if keys:
        ax2 = ax.twinx()
        for j, k in enumerate(keys, start=1):
            ax2.bar(xs - 0.4 + width / 2 + j * width, HUMAN_MEANS[k]["means"], width, alpha=0.6,
                    label=f"humans: {HUMAN_MEANS[k]['source']}", color=f"C{j}")
        ax2.set_ylim(0, 5)
        ax2.set_ylabel("human mean (0–5)")
        ax2.legend(fontsize=6, loc="upper right")
    ax.set_xticks(xs, [f.capitalize() for f in FOUNDATIONS])
    ax.legend(fontsize=6, loc="upper left")
    ax.set_title(title or "MFQ foundation scores", fontsize=9)
    return _save(fig, path)
