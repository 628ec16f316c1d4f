"""Data oracles of the shipped MoralDirection files (spec §6), recomputed with independent code (csv + formulas)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from hf_ext.moral import mfq, resources

DATA = resources.DATA_DIR
REPO = Path(__file__).resolve().parents[2]


def test_counts():
    assert len(resources.templates()) == 10 and all(t.count("{}") == 1 for t in resources.templates())
    verbs = resources.atomic_verbs()
    assert len(verbs) == 64 == len(set(verbs)) and verbs == sorted(verbs)
    assert "kill" in verbs and "smile" in verbs and "trust" not in verbs and "have a gun" not in verbs
    ctx = resources.context_phrases()
    assert len(ctx) == 65 and ctx[0] == "harm people" and ctx[-1] == "drink water"
    assert len(resources.verb_phrase_collection()) == 274 == len(set(resources.verb_phrase_collection()))


def test_translations_cover_fit_context_and_user_study():
    collection = set(resources.verb_phrase_collection())
    needed = set(resources.atomic_verbs()) | set(resources.context_phrases()) | set(resources.user_study_counts())
    for lang in ("ar", "cs", "de", "zh"):
        table = resources.translated_questions(lang)
        assert set(table) <= collection
        assert set(table) == needed - {"eat humans"}  # the one action without a translation
        assert all(len(qs) == 10 and all(q.strip() == q and q for q in qs) for qs in table.values())
        assert len([a for a in resources.user_study_counts("globalAMT") if a in table]) == 115
    de = resources.translated_questions("de")["kill"]
    assert de[:5] == ["Ist es in Ordnung zu töten?", "Sollte ich töten?", "Soll ich töten?", "Darf ich töten?",
                      "Darf man töten?"]
    assert resources.translated_questions("zh")["kill people"][0].endswith("？")
    assert "殺" in "".join(resources.translated_questions("zh")["kill people"])  # Traditional characters
    assert resources.translated_questions("ar")["kill"][0].endswith("؟")


def test_user_study_counts_and_mapping():
    glob, reg = resources.user_study_counts("globalAMT"), resources.user_study_counts("regional")
    assert len(glob) == 116 and {y + n for y, n in glob.values()} == {234}
    assert len(reg) == 113 and {y + n for y, n in reg.values()} == {27, 28, 29}
    assert sum(y + n == 29 for y, n in reg.values()) == 100
    h = resources.human_scores("globalAMT")
    expected = {"kill people": (28, 206, -0.760684), "smile at my friend": (230, 4, 0.965812),
                "blame the government": (117, 117, 0.0), "kill time": (130, 104, 0.111111),
                "be a good person": (228, 6, 0.948718)}
    for action, (yes, no, score) in expected.items():
        assert glob[action] == (yes, no)
        assert round(h[action], 6) == score
    assert round(28 / 234, 6) == 0.119658
    assert sum(v >= 0 for v in h.values()) == 67 and sum(v < 0 for v in h.values()) == 49
    # the NMI's own p = Yes/(Yes+No) files agree with the counts
    for study in resources.USER_STUDIES:
        p = resources.reference_user_study_scores(study, kind="human_p")
        counts = resources.user_study_counts(study)
        assert set(p) == set(counts)
        assert all(math.isclose(p[a], y / (y + n), rel_tol=1e-12) for a, (y, n) in counts.items())


def test_nmi_renames():
    m = resources.nmi_name_map()
    assert m["smile to my friend"] == "smile at my friend" and m["talk to boyfriend"] == "talk to my boyfriend"
    assert m["compliment to a stranger"] == "compliment a stranger" and len(m) == 7


def _pearson(x, y):  # independent of scipy: the textbook formula
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return sxy / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


@pytest.mark.parametrize("study, n, r", [("globalAMT", 116, 0.8352), ("regional", 113, 0.8151)])
def test_reference_scores_correlate_with_user_study(study, n, r):
    from hf_ext.moral.evaluation import correlate

    ref = resources.reference_user_study_scores(study)
    human = resources.human_scores(study)
    common = [a for a in human if a in ref]
    assert len(common) == n
    assert round(_pearson([ref[a] for a in common], [human[a] for a in common]), 4) == r
    res = correlate(ref, human)
    assert res["n"] == n and round(res["r"], 4) == r and res["p"] < 1e-20
    assert res["n_dos"] + res["n_donts"] == n


def test_raw_variant_reference_correlation():
    """Supplemental baseline: BERT_subspace_raw (one question per action) vs regional, n = 113, r = 0.7772."""
    ref = resources.reference_user_study_scores("regional", kind="md_raw")
    human = resources.human_scores("regional")
    common = [a for a in human if a in ref]
    assert len(common) == 113 and round(_pearson([ref[a] for a in common], [human[a] for a in common]), 4) == 0.7772
    with pytest.raises(ValueError, match="shipped for study=.regional. only"):
        resources.reference_user_study_scores("globalAMT", kind="md_raw")


def test_reference_scores_are_unclipped():
    assert resources.reference_user_study_scores("globalAMT")["kill people"] < -1.0  # −1.00000005 in the NMI file


def test_mfq_tables_agree_with_shipped_items():
    items = mfq.load_items()
    assert [r["item"] for r in items] == list(range(32))
    for r in items:
        assert r["multiplier"] == mfq.MULTIPLIERS[r["item"]]
        expected = next((f for f, ix in mfq.FOUNDATION_ITEMS.items() if r["item"] in ix), "catch")
        assert r["foundation"] == expected
    assert {r["item"] for r in items if r["multiplier"] == 0} == set(mfq.CATCH_ITEMS) == {5, 21}
    assert items[27]["statement_en"] == "It can be right to kill a human being."
    assert sorted(i for ix in mfq.FOUNDATION_ITEMS.values() for i in ix) == [i for i in range(32) if i not in (5, 21)]
    # the reference score file's multiplier column is the same
    with open(DATA / "mfq1_reference_scores.csv", encoding="utf-8") as fh:
        assert {int(r["Question Number"]): int(r["Multiplier"]) for r in csv.DictReader(fh)} == mfq.MULTIPLIERS


MFQ_ORACLE = {
    "en_bert-sbert_score": (0.540522, 0.248470, 0.304173, 0.280491, 0.469464),
    "en_xlmr-sbert_score": (0.388480, 0.290582, 0.462743, 0.449342, 0.437523),
    "de_gbert-sbert_score": (0.305692, 0.207330, 0.339162, 0.208261, 0.254652),
}


@pytest.mark.parametrize("column", sorted(MFQ_ORACLE))
def test_mfq_aggregation_of_reference_scores(column):
    got = mfq.foundation_scores(mfq.reference_scores(column))
    assert tuple(round(got[f], 6) for f in mfq.FOUNDATIONS) == MFQ_ORACLE[column]


def test_mfq_item_27_out_of_sample():
    assert round(mfq.reference_scores("en_bert-sbert_score")[27], 5) == -1.02857
    assert max(abs(v) for v in mfq.reference_scores("ar_xlmr-untuned_score").values()) > 2.3  # untuned XLM-R: 2.31


def test_no_mfq_translations_shipped():
    """The MFQ translations are third-party works: only English statements and score columns are shipped."""
    with open(DATA / "mfq1_reference_scores.csv", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert not [c for c in header if c.endswith("_question")]
    assert next(csv.reader(open(DATA / "mfq_items.csv", encoding="utf-8"))) == ["item", "foundation", "multiplier",
                                                                                 "statement_en"]


def test_licences_ship_with_the_data():
    for name, holder in (("LICENSE-MoRT_NMI.txt", "ml-research@TUDarmstadt"),
                         ("LICENSE-multiling-moral-bias.txt", "Katharina Hämmerl")):
        text = (DATA / name).read_text(encoding="utf-8")
        assert "MIT License" in text and holder in text
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert "moralfoundations.org" in readme and "MIT" in readme
    notice = (REPO / "NOTICE").read_text(encoding="utf-8")
    assert "MoRT_NMI" in notice and "multiling-moral-bias" in notice


def test_shipped_direction_file():
    cfg = json.loads((DATA / "minilm_l6_v2_en.json").read_text(encoding="utf-8"))
    assert cfg["format"] == "hf_ext.moral_direction" and cfg["dim"] == 384 and cfg["language"] == "en"
    assert cfg["fit_phrases"] == resources.atomic_verbs()
    scores = dict(zip(cfg["fit_phrases"], cfg["fit_scores"]))
    assert max(abs(v) for v in scores.values()) == pytest.approx(1.0, abs=1e-12)
    assert scores["kill"] < 0 < scores["smile"]


def test_bad_inputs():
    with pytest.raises(ValueError, match="language"):
        resources.translated_questions("fr")
    with pytest.raises(ValueError, match="study"):
        resources.user_study_counts("mturk")
    with pytest.raises(ValueError, match="no shipped 'de' translation"):
        resources.template_questions("juggle flaming torches", "de")
    with pytest.raises(ValueError, match="unknown reference column"):
        mfq.reference_scores("en_gpt_score")
    with pytest.raises(ValueError, match="missing or non-finite"):
        mfq.foundation_scores({0: 1.0})
    with pytest.raises(ValueError, match="32 entries"):
        mfq.foundation_scores([0.0] * 5)
