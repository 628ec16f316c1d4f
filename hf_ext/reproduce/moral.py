"""``hf-ext reproduce moral``: which scoring of action phrases agrees with people, plain phrase or question templates?

Runs :func:`hf_ext.moral.measurement.measure_scorings` with a sentence encoder's moral direction (default: the
bundled all-MiniLM-L6-v2 and its shipped direction; any sentence-transformers model path or Hub id gets its direction
fitted once and cached) and reports, for both scorings and both shipped user studies, Pearson r with the human
scores, the sign agreement overall and on the clearly rated actions, and on hf_ext's 60 everyday actions the sign
accuracy and AUROC. The quality figures are deterministic for a given encoder.

Example:
    >>> report = run("bundled")  # the full reproduction: minutes on CPU  # doctest: +SKIP
    >>> report.table("moral.user_study").rows[0]  # the full reproduction: minutes on CPU  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .report import Report, Table

#: The encoder a run uses unless told otherwise (``hf-ext reproduce moral`` without ``--model``).
DEFAULT_MODEL = "bundled"


@dataclass(frozen=True)
class Settings:
    """What a run measures.

    Attributes:
        studies: user studies (``"globalAMT"``, ``"regional"``).
        clear_threshold: ``|human score|`` from which a user-study action counts as clearly rated.
        batch_size: encoder batch size.
    """

    studies: tuple[str, ...] = ("globalAMT", "regional")
    clear_threshold: float = 0.5
    batch_size: int = 64


FULL = Settings()
QUICK = Settings(studies=("globalAMT",))


def run(model: str = DEFAULT_MODEL, *, quick: bool = False, settings: Settings | None = None, progress: bool = True,
        **overrides: Any) -> Report:
    """Measure plain vs template scoring with ``model``'s moral direction.

    Args:
        model: ``"bundled"`` (all-MiniLM-L6-v2, offline) or a sentence-transformers model path / Hub id.
        quick: :data:`QUICK` (one study) instead of :data:`FULL`.
        settings: explicit settings (override ``quick``).
        progress: progress bars while embedding.
        **overrides: fields of :class:`Settings`.

    Returns:
        The :class:`~hf_ext.reproduce.report.Report` (call ``.write()``).
    """
    from hf_ext.moral.measurement import SCORINGS, measure_scorings

    settings = replace(settings or (QUICK if quick else FULL), **overrides)
    if isinstance(settings.studies, list):
        settings = replace(settings, studies=tuple(settings.studies))
    report = Report("moral", model, quick, f"MoralDirection on {model}: plain phrases or question templates?")
    report.load.sample()
    from hf_ext.moral import cached_direction

    direction = cached_direction(model, "en", progress=progress)  # "bundled": the shipped direction
    res = measure_scorings(direction, studies=settings.studies, clear_threshold=settings.clear_threshold,
                           batch_size=settings.batch_size, progress=progress)
    report.load.sample()
    label = {"plain": "plain phrase", "templates": "10 question templates"}
    rows = []
    for study, by_scoring in res["user_study"].items():
        for scoring in SCORINGS:
            r = by_scoring[scoring]
            rows.append([study, label[scoring], r["n"], r["r"], r["sign_agreement"], r["n_signed"],
                         r["sign_agreement_clear"], r["n_clear"]])
    report.tables.append(Table(
        "moral.user_study", "User studies: agreement with the human ratings",
        ["study", "scoring", "actions", "Pearson r", "sign agreement", "signed", "sign agreement, clear", "clear"],
        rows, formats=["s", "s", "d", ".3f", ".1%", "d", ".1%", "d"],
        notes=f"Human score 2·Yes/(Yes+No) − 1; sign agreement over the actions with a non-zero human score, "
              f"'clear': |human score| ≥ {settings.clear_threshold} (at least {50 + 50 * settings.clear_threshold:.0f} % "
              "of the participants agree)."))
    rows = []
    for scoring in SCORINGS:
        e = res["everyday"][scoring]
        rows.append([label[scoring], e["n"], e["sign_accuracy"], e["accuracy_good"], e["accuracy_bad"], e["auroc"],
                     e["mean_good"], e["mean_bad"]])
    report.tables.append(Table(
        "moral.everyday", "Everyday actions with an obvious sign (hf_ext's test set)",
        ["scoring", "actions", "sign accuracy", "good > 0", "bad < 0", "AUROC good vs bad", "mean good", "mean bad"],
        rows, formats=["s", "d", ".1%", ".1%", ".1%", ".3f", ".3f", ".3f"],
        notes="hf_ext/moral/data/everyday_actions.csv: 30 good and 30 bad everyday actions written as a test set "
              "(not fitted or tuned on)."))
    report.summary.append(
        f"Encoder: {res['encoder'] or model}. An action phrase is scored either **plain** (the phrase embedded as it is, "
        "`MoralDirection.score(..., use_templates=False)`, the default) or with the paper's **10 question templates** "
        "(the mean embedding of 'Should I …?', 'Is it ok to …?' …). Both are projected on the same moral direction.")
    report.figures.update(settings={"studies": list(settings.studies), "clear_threshold": settings.clear_threshold},
                          measurement=res)
    report.plots.append(("moral_scorings.png", lambda path: _plot(res, path)))
    return report


def _plot(res: dict[str, Any], path) -> None:
    from matplotlib.figure import Figure

    from hf_ext.moral import resources

    human = resources.human_scores("globalAMT")
    every = resources.everyday_actions()
    fig = Figure(figsize=(9, 4), dpi=100, layout="tight")
    ax1, ax2 = fig.subplots(1, 2)
    for scoring, marker in (("plain", "o"), ("templates", "x")):
        s = res["scores"][scoring]
        ax1.scatter([human[a] for a in human], [s[a] for a in human], s=12, marker=marker, label=scoring)
        ax2.scatter([every[a] + (0.08 if scoring == "templates" else -0.08) for a in every], [s[a] for a in every], s=12,
                    marker=marker, label=scoring)
    ax1.set(xlabel="human score (globalAMT)", ylabel="moral score", title="user-study actions")
    ax2.set(xlabel="obvious sign (−1 bad, +1 good)", ylabel="moral score", title="everyday actions", xticks=[-1, 1])
    for ax in (ax1, ax2):
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend()
    fig.savefig(path)
