"""Which scoring of action phrases to use: plain phrase vs the paper's 10 question templates, measured.

A MoralDirection scores an action phrase ("help old people") either **plain** (the phrase embedded as is) or with
**templates** (the mean embedding of its 10 questions, "Should I help old people?" …, as the paper scores the
user-study actions). :func:`measure_scorings` compares both on

* the two shipped user studies (``globalAMT``, 116 actions; ``regional``, 113): Pearson r with the human scores
  ``2·Yes/(Yes+No) − 1``, the sign agreement over the actions with a non-zero human score, and over the *clearly rated*
  ones (``|human| ≥ clear_threshold``, default 0.5: at least 75 % of the participants agree);
* the 60 shipped everyday actions with an obvious sign (:func:`hf_ext.moral.resources.everyday_actions`, a test set):
  sign accuracy overall, on the good and on the bad half, and the AUROC of good vs bad (the separation, whatever the
  zero point).

``hf-ext reproduce moral`` reports it; the README's table comes from that report.

Example:
    >>> from hf_ext.moral import MoralDirection
    >>> res = measure_scorings(MoralDirection.bundled())
    >>> 0.5 < res["everyday"]["plain"]["sign_accuracy"] <= 1.0  # the 60 everyday actions (0.78 today)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import resources

if TYPE_CHECKING:
    from .direction import MoralDirection
    from .encoders import EncoderLike

__all__ = ["SCORINGS", "measure_scorings", "sign_agreement"]

#: The two scorings of an action phrase: ``use_templates=False`` / ``True`` of :meth:`MoralDirection.score`.
SCORINGS: tuple[str, ...] = ("plain", "templates")


def sign_agreement(model: Sequence[float], reference: Sequence[float], *, min_abs: float = 0.0) -> tuple[float, int]:
    """Share of items whose model score has the sign of the reference score, over items with ``|reference| > 0`` and
    ``|reference| ≥ min_abs``; returns ``(share, n)`` (``nan`` share when ``n = 0``). A model score of exactly 0 counts
    as a disagreement.

    Example:
        >>> sign_agreement([0.3, -0.1, 0.2, 0.5], [1.0, 0.5, 0.0, 0.2], min_abs=0.4)
        (0.5, 2)
    """
    m, r = np.asarray(model, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if m.shape != r.shape:
        raise ValueError(f"model and reference scores differ in length: {m.shape} vs {r.shape}")
    keep = (r != 0) & (np.abs(r) >= min_abs)
    n = int(keep.sum())
    return (float(np.mean(np.sign(m[keep]) == np.sign(r[keep]))) if n else float("nan")), n


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (the Mann–Whitney form of the AUROC)."""
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def measure_scorings(direction: MoralDirection, *, studies: Sequence[str] = resources.USER_STUDIES,
                     clear_threshold: float = 0.5, encoder: EncoderLike | None = None, batch_size: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Plain vs template scoring of action phrases on the user studies and the everyday actions.

    Args:
        direction: an English :class:`~hf_ext.moral.MoralDirection` with an encoder (or pass ``encoder``).
        studies: user studies to evaluate (``"globalAMT"``, ``"regional"``).
        clear_threshold: ``|human score|`` from which a user-study action counts as clearly rated.
        encoder, batch_size, progress: passed to :meth:`MoralDirection.embed` (every phrase is embedded once per
            scoring).

    Returns:
        A JSON-serialisable dict: ``"user_study"[study][scoring]`` with ``r``, ``p``, ``n``, ``sign_agreement``,
        ``n_signed``, ``sign_agreement_clear``, ``n_clear``; ``"everyday"[scoring]`` with ``sign_accuracy``,
        ``accuracy_good``, ``accuracy_bad``, ``auroc``, ``mean_good``, ``mean_bad``, ``n`` and ``wrong`` (the actions
        whose sign it misses); ``"scores"[scoring]`` (phrase → score); plus ``encoder``, ``clear_threshold``.

    Raises:
        ValueError: a non-English direction (the templates and everyday actions are English), an unknown study.
    """
    from .evaluation import correlate

    if getattr(direction, "language", "en") != "en":
        raise ValueError(f"measure_scorings compares English scorings; the direction's language is {direction.language!r}")
    for study in studies:
        if study not in resources.USER_STUDIES:
            raise ValueError(f"unknown study {study!r}; use one of {resources.USER_STUDIES}")
    humans = {study: resources.human_scores(study) for study in studies}
    everyday = resources.everyday_actions()
    phrases = list(dict.fromkeys([a for h in humans.values() for a in h] + list(everyday)))
    scores = {}
    for scoring in SCORINGS:
        values = direction.score(phrases, use_templates=scoring == "templates", encoder=encoder, batch_size=batch_size,
                                 progress=progress)
        scores[scoring] = dict(zip(phrases, values.tolist()))
    out: dict[str, Any] = {"encoder": getattr(direction, "encoder_name", None), "clear_threshold": clear_threshold,
                           "user_study": {}, "everyday": {}, "scores": scores}
    for study, human in humans.items():
        out["user_study"][study] = {}
        for scoring in SCORINGS:
            model = [scores[scoring][a] for a in human]
            ref = list(human.values())
            cor = correlate(scores[scoring], human)
            agree, n_signed = sign_agreement(model, ref)
            clear, n_clear = sign_agreement(model, ref, min_abs=clear_threshold)
            out["user_study"][study][scoring] = {"r": cor["r"], "p": cor["p"], "n": cor["n"], "sign_agreement": agree,
                                                 "n_signed": n_signed, "sign_agreement_clear": clear, "n_clear": n_clear}
    actions = list(everyday)
    truth = np.array([everyday[a] for a in actions], dtype=np.float64)
    for scoring in SCORINGS:
        s = np.array([scores[scoring][a] for a in actions])
        good, bad = s[truth > 0], s[truth < 0]
        out["everyday"][scoring] = {
            "n": len(actions), "sign_accuracy": sign_agreement(s, truth)[0],
            "accuracy_good": float(np.mean(good > 0)), "accuracy_bad": float(np.mean(bad < 0)),
            "auroc": _auroc(good, bad), "mean_good": float(good.mean()), "mean_bad": float(bad.mean()),
            "wrong": [a for a, v, t in zip(actions, s, truth) if np.sign(v) != t]}
    return out
