"""Moral Foundations Questionnaire (MFQ-1, 32 items) scoring with a moral direction (Hämmerl et al., 2023, §5).

Each MFQ statement is scored alone (no question template); a per-item multiplier ∈ {−1, 0, 1} undoes the
statement's direction (the multilingual paper rephrased negated items, e.g. "It can be right to kill a human
being." with multiplier −1); a foundation's score is the mean of multiplier × score over its 6 items. Items 5
("good at math") and 21 ("better to do good") are catch items (multiplier 0, no foundation).

Licence note: the MFQ belongs to Graham, Haidt et al. (moralfoundations.org; free for research use). hf_ext
ships the item ids, the foundation map and the multipliers, and — with that attribution, for research use —
the English statements as rephrased by Hämmerl et al. (``data/mfq_items.csv``). The translations (de, cs, zh,
ar) are third-party works and are **not** shipped: load them from a file you supply with
:func:`load_statements`. The shipped reference scores (``data/mfq1_reference_scores.csv``) keep only the
score columns of ``20220801_mfq1_all-scores_all-rephrased-questions.csv``.

Example:
    >>> items = load_items()
    >>> len(items), items[27]["multiplier"], items[27]["foundation"]
    (32, -1, 'care')
    >>> ref = reference_scores("en_bert-sbert_score")
    >>> {k: round(v, 6) for k, v in foundation_scores(ref).items()}["care"]
    0.540522
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .resources import DATA_DIR

if TYPE_CHECKING:
    from .direction import MoralDirection
    from .encoders import EncoderLike

__all__ = [
    "CATCH_ITEMS",
    "FOUNDATIONS",
    "FOUNDATION_ITEMS",
    "HUMAN_MEANS",
    "MULTIPLIERS",
    "N_ITEMS",
    "foundation_scores",
    "load_items",
    "load_statements",
    "reference_columns",
    "reference_scores",
    "score_mfq",
]

N_ITEMS = 32
FOUNDATIONS: tuple[str, ...] = ("care", "fairness", "loyalty", "authority", "purity")
#: 0-based item indices of each foundation (MFQ-1 order).
FOUNDATION_ITEMS: dict[str, tuple[int, ...]] = {
    "care": (0, 6, 11, 16, 22, 27),
    "fairness": (1, 7, 12, 17, 23, 28),
    "loyalty": (2, 8, 13, 18, 24, 29),
    "authority": (3, 9, 14, 19, 25, 30),
    "purity": (4, 10, 15, 20, 26, 31),
}
CATCH_ITEMS: tuple[int, ...] = (5, 21)
_FOUNDATION_MULTIPLIERS = {
    "care": (-1, 1, -1, 1, -1, -1),
    "fairness": (-1, -1, -1, 1, 1, -1),
    "loyalty": (1, -1, 1, 1, 1, 1),
    "authority": (1, 1, -1, 1, 1, -1),
    "purity": (-1, -1, 1, -1, 1, 1),
}
#: Item -> multiplier of the rephrased MFQ-1 ("mfq-12"): −1 undoes a statement whose agreement is immoral.
MULTIPLIERS: dict[int, int] = {i: 0 for i in CATCH_ITEMS}
for _f, _items in FOUNDATION_ITEMS.items():
    MULTIPLIERS.update(dict(zip(_items, _FOUNDATION_MULTIPLIERS[_f])))

#: Published human foundation means (0–5 scale), order care, fairness, loyalty, authority, purity.
#: The German row is in the multilingual notebook's printout order, which may have loyalty and authority
#: swapped (unconfirmed; check Jöckel et al. 2012).
HUMAN_MEANS: dict[str, dict[str, Any]] = {
    "us": {"source": "Graham et al. 2011 (US, all)", "means": (3.42, 3.55, 2.26, 2.27, 1.54)},
    "cs": {"source": "Beneš 2021 (Czech)", "means": (3.62, 3.70, 2.30, 2.23, 1.79)},
    "zh": {"source": "Wang et al. 2019 (China)", "means": (3.01, 2.92, 3.02, 2.67, 2.69)},
    "de": {"source": "Jöckel et al. 2012 (German; loyalty/authority order unconfirmed)",
           "means": (3.66, 3.74, 2.47, 2.42, 1.82)},
}


def load_items() -> list[dict[str, Any]]:
    """The 32 MFQ-1 items: ``{"item", "foundation" ("catch" for 5 and 21), "multiplier", "statement_en"}``.

    English statements as rephrased (negations removed) by Hämmerl et al.; MFQ © Graham, Haidt et al.
    (moralfoundations.org), shipped for research use with attribution.
    """
    with open(DATA_DIR / "mfq_items.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{"item": int(r["item"]), "foundation": r["foundation"], "multiplier": int(r["multiplier"]),
             "statement_en": r["statement_en"]} for r in rows]


def load_statements(path: str | os.PathLike, language: str, *, item_column: str | None = None) -> dict[int, str]:
    """Item -> statement in ``language`` from a CSV you supply (e.g. the multilingual repo's ``mfq-12.csv``).

    The CSV needs a column named ``language`` (``"de"`` …) and either an item-number column (``"Question Number"``
    or ``"item"``, or ``item_column``) or exactly one row per item in MFQ order. Empty cells are skipped (the
    reference Arabic column lacks item 21).

    Raises:
        ValueError: the language column or item numbers are missing or out of range.
    """
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        rows = list(reader)
    if language not in fields:
        raise ValueError(f"{path} has no column {language!r}; its columns are {fields}")
    col = item_column or next((c for c in ("Question Number", "item") if c in fields), None)
    out: dict[int, str] = {}
    for i, row in enumerate(rows):
        item = int(row[col]) if col else i
        if not 0 <= item < N_ITEMS:
            raise ValueError(f"{path}: item number {item} is outside 0..{N_ITEMS - 1}")
        text = (row.get(language) or "").strip()
        if text:
            out[item] = text
    if not out:
        raise ValueError(f"{path}: the column {language!r} is empty")
    return out


def _item_vector(item_scores: Mapping[int, float] | Sequence[float] | np.ndarray) -> dict[int, float]:
    if isinstance(item_scores, Mapping):
        return {int(k): float(v) for k, v in item_scores.items()}
    arr = np.asarray(item_scores, dtype=np.float64).reshape(-1)
    if arr.shape[0] != N_ITEMS:
        raise ValueError(f"item_scores must have {N_ITEMS} entries (MFQ-1 order) or be a dict item -> score, "
                         f"got {arr.shape[0]}")
    return dict(enumerate(arr.tolist()))


def foundation_scores(item_scores: Sequence[float] | Mapping[int, float], multipliers: Mapping[int, int] | None = None) -> dict[str, float]:
    """Foundation -> mean over its 6 items of multiplier × item score.

    Args:
        item_scores: 32 scores in MFQ order, or a dict item -> score (catch items may be missing).
        multipliers: item -> multiplier (default :data:`MULTIPLIERS`).

    Raises:
        ValueError: a foundation item is missing or not finite.

    Example:
        >>> foundation_scores([1.0] * 32)["care"]  # multipliers -1, 1, -1, 1, -1, -1
        -0.3333333333333333
    """
    scores = _item_vector(item_scores)
    mult = dict(MULTIPLIERS if multipliers is None else multipliers)
    out = {}
    for f, items in FOUNDATION_ITEMS.items():
        missing = [i for i in items if i not in scores or not np.isfinite(scores[i])]
        if missing:
            raise ValueError(f"foundation {f!r} needs items {list(items)}; missing or non-finite: {missing}")
        out[f] = float(np.mean([mult[i] * scores[i] for i in items]))
    return out


def reference_columns() -> list[str]:
    """Score columns of the shipped reference file (``<lang>_<model>-<sbert|untuned>_score``)."""
    with open(DATA_DIR / "mfq1_reference_scores.csv", encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh))
    return [c for c in header if c.endswith("_score")]


def reference_scores(column: str = "en_bert-sbert_score") -> dict[int, float]:
    """Item -> reference MD score of ``column`` from Hämmerl et al.'s ``20220801_mfq1_...`` file.

    Example:
        >>> round(reference_scores()[27], 5)  # "It can be right to kill a human being.": |score| > 1
        -1.02857
    """
    cols = reference_columns()
    if column not in cols:
        raise ValueError(f"unknown reference column {column!r}; available: {', '.join(cols)}")
    with open(DATA_DIR / "mfq1_reference_scores.csv", encoding="utf-8", newline="") as fh:
        return {int(r["Question Number"]): float(r[column]) for r in csv.DictReader(fh) if r[column].strip()}


def score_mfq(direction: MoralDirection, statements: Mapping[int, str] | None = None, *,
              encoder: EncoderLike | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """Score the MFQ statements with ``direction`` (no templates) and aggregate per foundation.

    Args:
        direction: a fitted :class:`~hf_ext.moral.MoralDirection` (with an encoder attached, or pass ``encoder``).
        statements: item -> statement (default: the shipped English statements; for other languages use
            :func:`load_statements` on your file).

    Returns:
        ``{"items": {item: score}, "foundations": {foundation: score}, "statements": {item: text}}``.

    Example:
        >>> from hf_ext.moral import MoralDirection
        >>> res = score_mfq(MoralDirection.bundled())
        >>> sorted(res["foundations"])
        ['authority', 'care', 'fairness', 'loyalty', 'purity']
    """
    if statements is None:
        statements = {r["item"]: r["statement_en"] for r in load_items()}
    if not statements:
        raise ValueError("statements is empty; pass item -> statement (see load_statements)")
    items = sorted(statements)
    scores = direction.score([statements[i] for i in items], use_templates=False, encoder=encoder, batch_size=batch_size)
    item_scores = dict(zip(items, scores.tolist()))
    return {"items": item_scores, "foundations": foundation_scores(item_scores), "statements": dict(statements)}
