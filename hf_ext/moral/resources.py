"""The shipped MoralDirection data (``hf_ext/moral/data/``): templates, verbs, user study, translations, references.

Everything here is read from small UTF-8 files copied (or trimmed) from the two MIT-licensed reference
repositories, ml-research/MoRT_NMI (© 2021 ml-research@TUDarmstadt) and KathyHaem/multiling-moral-bias
(© 2023 Katharina Hämmerl and co-authors); both licences sit next to the data (``data/LICENSE-*.txt``) and in
the repository's ``NOTICE``. ``data/README.md`` says where each file comes from.

Only the standard library is imported: these functions are cheap and safe in the CLI.

Example:
    >>> len(templates()), len(atomic_verbs()), len(context_phrases())
    (10, 64, 65)
    >>> user_study_counts("globalAMT")["kill people"]
    (28, 206)
    >>> round(human_scores("globalAMT")["kill people"], 6)
    -0.760684
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

__all__ = [
    "DATA_DIR",
    "LANGUAGES",
    "USER_STUDIES",
    "atomic_verbs",
    "context_phrases",
    "everyday_actions",
    "human_scores",
    "nmi_name_map",
    "reference_user_study_scores",
    "template_questions",
    "templates",
    "translated_questions",
    "user_study_counts",
    "user_study_questions",
    "verb_phrase_collection",
]

#: Folder of the shipped data files.
DATA_DIR = Path(__file__).resolve().parent / "data"
#: Languages with shipped translated questions (``"en"`` uses :func:`templates`).
LANGUAGES: tuple[str, ...] = ("en", "ar", "cs", "de", "zh")
#: The two user studies of Schramowski et al. (2022): Amazon MTurk (global) and the regional one.
USER_STUDIES: tuple[str, ...] = ("globalAMT", "regional")


def _check_choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not supported; use one of {', '.join(map(repr, valid))}")


@functools.lru_cache(maxsize=1)
def _lexicon() -> dict:
    return json.loads((DATA_DIR / "lexicon.json").read_text(encoding="utf-8"))


def templates() -> list[str]:
    """The 10 English question templates (``"Is it ok to {}?"`` …), in the reference order.

    Example:
        >>> templates()[0], templates()[-1]
        ('Is it ok to {}?', 'Is it exemplary to {}?')
    """
    return [t["question"] for t in _lexicon()["templates"]]


def atomic_verbs() -> list[str]:
    """The 64 atomic verbs the direction is fitted on (``actions_verbs_projection``), sorted.

    Example:
        >>> "kill" in atomic_verbs() and "trust" not in atomic_verbs()
        True
    """
    return list(_lexicon()["atomic_verbs"])


def context_phrases() -> list[str]:
    """The 65 context phrases (``actions_paper_projection_query``: "harm people" … "drink water"), scored only.

    Example:
        >>> context_phrases()[0], context_phrases()[-1]
        ('harm people', 'drink water')
    """
    return list(_lexicon()["context_phrases"])


def verb_phrase_collection() -> list[str]:
    """The 274 English phrases whose 10 questions were machine-translated (``verb-phrase-collection.txt``)."""
    text = (DATA_DIR / "verb-phrase-collection.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


@functools.lru_cache(maxsize=1)
def _translations() -> dict[str, dict[str, list[str]]]:
    raw = json.loads((DATA_DIR / "translated_questions.json").read_text(encoding="utf-8"))
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def translated_questions(language: str) -> dict[str, list[str]]:
    """English phrase -> its 10 machine-translated questions in ``language`` (``"ar"``, ``"cs"``, ``"de"``, ``"zh"``).

    The shipped table is trimmed to the atomic verbs, the context phrases and the user-study actions (180
    phrases; "eat humans" has no translation in the reference data). Chinese is in Traditional characters.

    Example:
        >>> translated_questions("de")["kill"][0]
        'Ist es in Ordnung zu töten?'
    """
    _check_choice("language", language, tuple(_translations()))
    return {k: list(v) for k, v in _translations()[language].items()}


def template_questions(phrase: str, language: str = "en") -> list[str]:
    """The 10 questions of ``phrase`` (English key) in ``language``: the templates for ``"en"``, else the translations.

    Raises:
        ValueError: unknown language, or a phrase without shipped translations in a non-English language.

    Example:
        >>> template_questions("kill")[:2]
        ['Is it ok to kill?', 'Should I kill?']
    """
    _check_choice("language", language, LANGUAGES)
    if language == "en":
        return [t.format(phrase) for t in templates()]
    table = _translations()[language]
    if phrase not in table:
        raise ValueError(
            f"no shipped {language!r} translation of the questions for {phrase!r} (only the atomic verbs, context "
            "phrases and user-study actions are shipped); pass your own translated questions instead, e.g. "
            "MoralDirection.score_questions([[q1, ..., q10]])"
        )
    return list(table[phrase])


def everyday_actions() -> dict[str, int]:
    """Action -> obvious moral sign (+1 / −1) of 60 everyday actions (30 each), written for hf_ext as a test set.

    Not taken from either study and not used to fit or tune anything: :func:`hf_ext.moral.measurement.measure_scorings`
    reports how often a scoring gets their sign right.

    Example:
        >>> acts = everyday_actions()
        >>> len(acts), sum(v > 0 for v in acts.values()), acts["kick a stray dog"]
        (60, 30, -1)
    """
    with open(DATA_DIR / "everyday_actions.csv", encoding="utf-8", newline="") as fh:
        return {row["action"]: int(row["sign"]) for row in csv.DictReader(fh)}


@functools.lru_cache(maxsize=2)
def _counts(study: str) -> dict[str, tuple[int, int]]:
    with open(DATA_DIR / f"userStudy_yes_no_{study}_fixed.csv", encoding="utf-8", newline="") as fh:
        return {row["Action"]: (int(row["Yes"]), int(row["No"])) for row in csv.DictReader(fh)}


def user_study_counts(study: str = "globalAMT") -> dict[str, tuple[int, int]]:
    """Action -> (Yes, No) answers of the user study ``"globalAMT"`` (116 actions, 234 each) or ``"regional"`` (113).

    Action names are the multilingual repository's ``*_fixed`` names (e.g. "smile at my friend"); see
    :func:`nmi_name_map` for the original NMI names.
    """
    _check_choice("study", study, USER_STUDIES)
    return dict(_counts(study))


def human_scores(study: str = "globalAMT") -> dict[str, float]:
    """Action -> human moral score 2·Yes/(Yes+No) − 1 ∈ [−1, 1] (``plt_UserstudyCorr.run_correlations``).

    Example:
        >>> round(human_scores()["smile at my friend"], 6), human_scores()["blame the government"]
        (0.965812, 0.0)
    """
    return {a: 2.0 * y / (y + n) - 1.0 for a, (y, n) in user_study_counts(study).items()}


def user_study_questions(study: str = "globalAMT") -> dict[str, str]:
    """Action -> the single question the participants saw (``userStudy_action_template_<study>_fixed.csv``).

    Used by the reference's "raw" variant (one question instead of the 10 templates).

    Example:
        >>> user_study_questions()["borrow a book"]
        'Is it polite to borrow a book?'
    """
    _check_choice("study", study, USER_STUDIES)
    with open(DATA_DIR / f"userStudy_action_template_{study}_fixed.csv", encoding="utf-8", newline="") as fh:
        rows = {row["action"]: row["question"].strip() for row in csv.DictReader(fh)}
    return {a: f"{rows[a]} {a}?" for a in user_study_counts(study) if a in rows}


def nmi_name_map() -> dict[str, str]:
    """Original NMI action name -> ``*_fixed`` name, for the 7 renamed actions ("smile to X" -> "smile at X" …)."""
    return dict(json.loads((DATA_DIR / "user_study_nmi_names.json").read_text(encoding="utf-8"))["nmi_to_fixed"])


def _read_pairs(path: Path, *, value_first: bool = False) -> dict[str, float]:
    out: dict[str, float] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh):
            if not row:
                continue
            key, value = (row[1], row[0]) if value_first else (row[0], row[1])
            try:
                out[key] = float(value)
            except ValueError:  # a header row
                continue
    return out


def reference_user_study_scores(study: str = "globalAMT", kind: str = "md") -> dict[str, float]:
    """Shipped reference scores of the user-study actions (bert-large-nli-mean-tokens, NMI), keyed by ``*_fixed`` names.

    Args:
        study: ``"globalAMT"`` or ``"regional"``.
        kind: ``"md"``: the MoralDirection scores ``BERT_subspace_qa_<study>_bias.csv`` (templates averaged);
            ``"md_raw"`` (regional only): ``BERT_subspace_raw_regional_bias.csv`` (the participants' single question);
            ``"human_p"``: the NMI's own human score file ``userStudy_scores_<study>.csv`` (Yes/(Yes+No) ∈ [0, 1]).

    Example:
        >>> round(reference_user_study_scores()["kill people"], 6)  # out of sample: not clipped to [-1, 1]
        -1.0
    """
    _check_choice("study", study, USER_STUDIES)
    _check_choice("kind", kind, ("md", "md_raw", "human_p"))
    if kind == "md_raw" and study != "regional":
        raise ValueError("kind='md_raw' reference scores are shipped for study='regional' only")
    name = {"md": f"nmi_BERT_subspace_qa_{study}_bias.csv", "md_raw": "nmi_BERT_subspace_raw_regional_bias.csv",
            "human_p": f"nmi_userStudy_scores_{study}.csv"}[kind]
    rename = nmi_name_map()
    return {rename.get(k, k): v for k, v in _read_pairs(DATA_DIR / name).items()}
