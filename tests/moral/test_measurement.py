"""Plain vs template scoring of action phrases (hf_ext.moral.measurement) against naive recomputations."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from hf_ext.moral import MoralDirection, resources
from hf_ext.moral.measurement import SCORINGS, measure_scorings, sign_agreement

from .conftest import SyntheticEncoder


def _naive_checks(res, direction):
    """Recompute every reported figure from the returned scores with plain loops / numpy."""
    for scoring in SCORINGS:
        scores = res["scores"][scoring]
        sample = list(scores)[::37]
        np.testing.assert_allclose(direction.score(sample, use_templates=scoring == "templates"),
                                   [scores[a] for a in sample], atol=1e-5)  # float32 encoders: batch-dependent
        for study, by_scoring in res["user_study"].items():
            human = resources.human_scores(study)
            m = [scores[a] for a in human]
            h = list(human.values())
            row = by_scoring[scoring]
            assert row["r"] == pytest.approx(np.corrcoef(m, h)[0, 1], abs=1e-9) and row["n"] == len(h)
            signed = [(a, b) for a, b in zip(m, h) if b != 0]
            clear = [(a, b) for a, b in signed if abs(b) >= res["clear_threshold"]]
            for key, items in (("sign_agreement", signed), ("sign_agreement_clear", clear)):
                agree = sum((a > 0) == (b > 0) and a != 0 for a, b in items)
                assert row[key] == pytest.approx(agree / len(items))
        every = resources.everyday_actions()
        good = [scores[a] for a, s in every.items() if s > 0]
        bad = [scores[a] for a, s in every.items() if s < 0]
        row = res["everyday"][scoring]
        pairs = [(g > b) + 0.5 * (g == b) for g in good for b in bad]
        assert row["auroc"] == pytest.approx(sum(pairs) / len(pairs))
        assert row["sign_accuracy"] == pytest.approx((sum(g > 0 for g in good) + sum(b < 0 for b in bad)) / 60)
        assert sorted(row["wrong"]) == sorted(a for a, s in every.items() if (scores[a] > 0) != (s > 0))


def test_sign_agreement_counts_only_signed_references():
    assert sign_agreement([1.0, -2.0, 0.0, 3.0], [0.5, 0.5, -1.0, 0.0]) == (1 / 3, 3)
    share, n = sign_agreement([1.0], [0.2], min_abs=0.5)
    assert n == 0 and math.isnan(share)
    with pytest.raises(ValueError, match="differ in length"):
        sign_agreement([1.0, 2.0], [1.0])


def test_measurement_on_a_synthetic_encoder():
    direction = MoralDirection.fit(SyntheticEncoder(noise=0.3), progress=False)
    res = measure_scorings(direction, clear_threshold=0.4)
    assert set(res["user_study"]) == {"globalAMT", "regional"} and set(res["everyday"]) == set(SCORINGS)
    _naive_checks(res, direction)
    with pytest.raises(ValueError, match="unknown study"):
        measure_scorings(direction, studies=["mturk"])


@pytest.mark.slow
def test_bundled_minilm_measurement_and_the_default_scoring(minilm, record_property):
    res = measure_scorings(minilm, batch_size=128)
    _naive_checks(res, minilm)
    for study, rows in res["user_study"].items():
        for scoring, row in rows.items():
            record_property(f"{study}_{scoring}_sign_agreement", row["sign_agreement"])
            assert row["r"] > 0.5 and row["n"] >= 113
    # the default of MoralDirection.score follows the measurement: it is not worse on signs, in either study or on
    # the everyday actions (r differs by < 0.01 between the scorings on this encoder)
    default = "templates" if inspect.signature(MoralDirection.score).parameters["use_templates"].default else "plain"
    other = next(s for s in SCORINGS if s != default)
    assert res["everyday"][default]["sign_accuracy"] >= res["everyday"][other]["sign_accuracy"]
    for rows in res["user_study"].values():
        assert rows[default]["sign_agreement"] >= rows[other]["sign_agreement"]
