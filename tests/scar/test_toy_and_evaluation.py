"""The end-to-end toy experiment (detection, steering, FDT) and the evaluation helpers against independent references."""

from __future__ import annotations

import pytest
import torch

from hf_ext.scar import ScarAdapter, auroc, steering_fdt, toxicity_scores
from hf_ext.testing import tiny_causal_lm


@pytest.mark.slow
def test_toy_experiment_detects_and_steers():
    from hf_ext.scar.toy import run_toy_experiment

    res = run_toy_experiment(seed=0, progress=False)
    assert res["auroc"] > 0.9, res["auroc"]  # held-out sentences
    assert res["rate_away"] < res["rate_base"] - 0.2, (res["rate_away"], res["rate_base"], res["generations"]["away"])
    assert res["rate_towards"] > res["rate_base"] + 0.2, (res["rate_towards"], res["rate_base"])
    n = res["max_new_tokens"]
    assert res["fdt_alpha_1"] == n  # error-preserving α = 1 is the base model exactly
    assert res["fdt_alpha_near_1"] >= 0.75 * n and res["fdt_replace_alpha_1"] >= 0.5 * n
    card = res["adapter"].model_card(detection_auroc={"concept": res["auroc"]}, fdt={"α=1.1": res["fdt_alpha_near_1"]})
    assert "detection AUROC" in card.text and "mean FDT vs base" in card.text


def test_auroc_matches_pairwise_count_with_ties():
    """AUROC is P(s_pos > s_neg) + ½ P(s_pos = s_neg): count every positive/negative pair (independent of sklearn)."""
    pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (200,), generator=g).float()  # many ties
    labels = (torch.rand(200, generator=g) < 0.4).long()
    pos, neg = scores[labels == 1].tolist(), scores[labels == 0].tolist()
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    assert auroc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-12)
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="both classes"):
        auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="0/1"):
        auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="same length"):
        auroc([0.1, 0.2, 0.3], [0, 1])


def test_toxicity_scores_default_and_pluggable():
    pytest.importorskip("profanity_check")
    benign, rude = toxicity_scores(["have a nice day with your family", "you stupid fucking idiot"])
    assert rude > 0.5 > benign
    assert toxicity_scores(["a", "bb"], scorer=lambda t: [len(x) for x in t]) == [1.0, 2.0]
    with pytest.raises(ValueError, match="unknown toxicity scorer"):
        toxicity_scores(["a"], scorer="perspective")
    with pytest.raises(ValueError, match="returned 1 scores"):
        toxicity_scores(["a", "b"], scorer=lambda t: [0.0])


def test_steering_fdt_against_base_not_itself():
    """Reference pitfall 4: its fdt_S_1.0 compares the SAE model with itself (always N). Here FDT is vs the base."""
    model = tiny_causal_lm("llama", seed=2)
    scar = ScarAdapter.for_model(model, layer=0, site="block", concepts=["c"], seed=0).attach(model)
    prompts = [[1, 5 + i, 9, 20 + i] for i in range(6)]
    n = 12
    exact = steering_fdt(model, scar, prompts, {"c": 1.0}, output="error_preserving", max_new_tokens=n)
    assert exact["fdt"].tolist() == [n] * 6
    rec = steering_fdt(model, scar, prompts, None, reconstruct=True, ref=exact["ref"])
    assert rec["fdt"].float().mean() < n  # a random SAE's reconstruction error changes greedy generations
    # the reference's bug, reproduced: the "reference" generations come from the SAE model itself
    from hf_ext.dtm.divergence import reference, score

    with scar.reconstruct():
        self_ref = reference(model, prompts, max_new_tokens=n, eos_token_id=[], progress=False)
        assert score(model, self_ref).fdt.tolist() == [n] * 6
    with pytest.raises(ValueError, match="steering="):
        steering_fdt(model, scar, prompts, None, ref=exact["ref"])
