"""``hf-ext reproduce scar``: its pieces against naive computations and the whole run on a tiny model (the quick run on
SmolLM2 is in tests/real/test_reproduce_scar.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hf_ext.reproduce import scar as rs
from hf_ext.reproduce.scar_data import CONCEPTS, concept_data, content_words, german_share, immoral_actions


@pytest.mark.parametrize("concept", CONCEPTS)
def test_splits_share_no_template_and_no_content_word(concept):
    d = concept_data(concept, seed=3)
    assert not content_words(d.train_phrases) & content_words(d.test_phrases)
    assert not set(d.train_templates) & set(d.test_templates)
    assert set(d.train_labels) == set(d.test_labels) == {0, 1}
    assert not set(d.train_texts) & set(d.test_texts)


def test_immoral_labels_follow_the_ratings():
    actions = immoral_actions()
    assert actions["kill people"] == 1 and actions["smile at my friend"] == 0 and actions["kick a stray dog"] == 1
    assert "blame the government" not in actions  # not clearly rated (human score 0)


def test_german_share_and_probes():
    assert german_share(["Ich gehe heute nach Hause.", "I am going home today."]) == [1.0, 0.0]
    g = torch.Generator().manual_seed(0)
    y = np.array([0, 1] * 20)
    x = torch.randn(40, 8, generator=g) + torch.as_tensor(y, dtype=torch.float32)[:, None] * 3
    res = rs.probe_aurocs(x[:20], y[:20], x[20:], y[20:])
    assert res["logistic_regression"] == 1.0 and res["difference_of_means"] == 1.0


def test_mean_nll_and_sae_quality_against_naive():
    from hf_ext.scar import ScarAdapter, ScarConfig
    from hf_ext.testing import tiny_causal_lm, tiny_tokenizer

    model, tok = tiny_causal_lm("llama"), tiny_tokenizer()
    texts = ["hello there", "a much longer text to pad the batch"]
    want = []
    for t in texts:
        ids = tok(t, return_tensors="pt").input_ids
        want.append((float(model(ids, labels=ids).loss), ids.shape[1] - 1))
    expected = sum(loss * n for loss, n in want) / sum(n for _, n in want)
    assert rs.mean_nll(model, tok, texts, max_length=64) == pytest.approx(expected, rel=1e-5)
    adapter = ScarAdapter(ScarConfig(n_inputs=16, n_latents=64, k=4), seed=0)
    acts = torch.randn(50, 16, generator=torch.Generator().manual_seed(1))
    q = rs.sae_quality(adapter, acts)
    out = adapter(acts)
    naive_ev = 1 - ((acts - out.reconstruction) ** 2).sum() / ((acts - acts.mean(0)) ** 2).sum()
    assert q["explained_variance"] == pytest.approx(float(naive_ev)) and 0 < q["l0"] <= 4


def test_whole_run_on_a_tiny_model(tmp_path):
    from hf_ext.scar import ScarAdapter
    from hf_ext.testing import tiny_causal_lm, tiny_tokenizer

    tiny_causal_lm("llama", num_layers=3).save_pretrained(tmp_path / "base")
    tiny_tokenizer().save_pretrained(tmp_path / "base")
    report = rs.run(str(tmp_path / "base"), quick=True, progress=False, max_train_texts=24, max_test_texts=16,
                    strengths=[-4.0, 4.0])
    out = report.write(tmp_path / "report")
    data = json.loads((out / "report.json").read_text())
    tables = {t["key"]: t for t in data["tables"]}
    assert [r[0] for r in tables["scar.detection"]["rows"]] == list(CONCEPTS)
    assert len(tables["scar.steering"]["rows"]) == 2 * 4  # base, SAE inserted, two strengths per concept
    for concept in CONCEPTS:
        res = data["figures"]["concepts"][concept]
        base = res["steering"][0]
        assert base["setting"] == "base model" and base["fdt"] == report.figures["settings"]["max_new_tokens"]
        assert math.isclose(base["perplexity"], math.exp(res["quality"]["ce_base"]))
        adapter = ScarAdapter.from_pretrained(out / f"adapter-{concept}")
        assert adapter.config.concepts == [concept] and adapter.config.layer == data["figures"]["layer"]
        card = (out / f"adapter-{concept}" / "README.md").read_text()
        assert "model-index" in card and f"{res['detection']['scar']}" in card
