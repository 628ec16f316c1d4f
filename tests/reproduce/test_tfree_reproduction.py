"""``hf-ext reproduce tfree``: corpus handling, the two evaluations against naive loops, and the quick run."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from hf_ext.reproduce import tfree as rt

TEXT = ("The cat sat on the mat. The cat sat on the hat. A dog sat on the mat, and the cat sat on the dog. "
        "The hat is on the cat.")


def test_chunks_targets_and_split():
    docs = ["one two three four five", "alpha  beta\ngamma"]
    pieces = rt.chunks(docs, 2)
    assert pieces == [("one two ", True), ("three four ", False), ("five", False), ("alpha  beta\n", True),
                      ("gamma", False)]
    assert "".join(t for t, _ in pieces[:3]) == docs[0]
    assert rt.target_words("a b, c  d e1 f") == [(2, "b"), (5, "c"), (8, "d"), (10, "e"), (13, "f")]
    train, held = rt.split_documents([f"doc {i}" for i in range(200)])
    assert 5 < len(held) < 40 and not set(train) & set(held)
    assert rt.split_documents([f"doc {i}" for i in range(200)]) == (train, held)


def _train(arm, steps=60):
    settings = rt.Settings(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, steps=steps, batch_size=4,
                           warmup=5, lr=1e-2)
    pieces = rt.chunks([TEXT] * 4, 8)
    return rt.train_arm(arm, pieces, settings, seed=0, progress=False)


def test_bpe_greedy_next_word_and_nll_against_naive_generation():
    settings = rt.Settings(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    arm = rt.BPEArm(settings, 0, rt.train_bpe([TEXT] * 3, 300))
    _train(arm)
    res = arm.evaluate(TEXT)
    naive = []
    for c, word in rt.target_words(TEXT):  # greedy generation from the context, then the first word it spells
        ids = [arm.eot_id] + arm.tok.encode(TEXT[: c - 1]).ids
        out = []
        with torch.no_grad():
            for _ in range(8):
                nxt = int(arm.model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
                if nxt == arm.eot_id:
                    break
                out.append(nxt)
        m = re.match(r" ?([^\W\d_]*)", arm.tok.decode(out))
        naive.append(m.group(1) == word)
    assert res["hits"]["decode"] == naive and any(naive)
    ids = torch.tensor([[arm.eot_id] + arm.tok.encode(TEXT).ids])
    with torch.no_grad():
        loss = float(arm.model(input_ids=ids, labels=ids).loss)
    assert res["nll"] == pytest.approx(loss * (ids.shape[1] - 1), rel=1e-4)


def test_tfree_closed_dictionary_predictions_and_likelihood_against_naive():
    settings = rt.Settings(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, hash_vocab_size=512,
                           num_activations=4)
    arm = rt.TFreeArm(settings, 0, [TEXT])
    _train(arm)
    res = arm.evaluate(TEXT)
    tok, model = arm.tok, arm.model
    eot = tok.convert_tokens_to_ids(rt.EOT)
    words = tok.tokenize(TEXT)
    patterns = [sorted(set(tok.word_pattern(w).tolist())) for w in tok.words[: model.dictionary_size]]
    naive_hits, nll = [], 0.0
    with torch.no_grad():
        for c, word in rt.target_words(TEXT):  # the model on the context alone, argmax of its decode scores
            ctx = [eot] + tok.convert_tokens_to_ids(tok.tokenize(TEXT[: c - 1]))
            naive_hits.append(tok.words[int(model(input_ids=torch.tensor([ctx])).logits[0, -1].argmax())] == word)
        ids = [eot] + tok.convert_tokens_to_ids(words)
        x = model(input_ids=torch.tensor([ids]), return_activation_logits=True).activation_logits[0]
        for p in range(len(ids) - 1):  # −log softmax over the dictionary of Σ_{j ∈ P(w)} x_j
            scores = torch.stack([x[p, pat].sum() for pat in patterns])
            nll -= float(scores.log_softmax(0)[ids[p + 1]])
    assert res["hits"]["decode"] == naive_hits and len(naive_hits) == len(rt.target_words(TEXT))
    assert res["nll"] == pytest.approx(nll, rel=1e-4)
    assert res["units"] == len(words)


@pytest.mark.slow
def test_quick_run(tmp_path):
    from hf_ext.cli import main

    assert main(["reproduce", "tfree", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    rows = next(t for t in data["tables"] if t["key"] == "tfree.results")["rows"]
    assert [r[0] for r in rows] == ["T-FREE v=8000", "BPE 8,000"]
    for row in rows:
        assert 0 <= row[3] <= 1 and math.isfinite(row[6]) and row[6] > 0
    assert rows[0][1] == 2 * 8000 * 64
