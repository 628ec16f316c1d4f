"""The peers' attribution methods against independent computations on a tiny model."""

import pytest
import torch

from hf_ext.core.scoring import teacher_forced_logprobs
from hf_ext.reproduce import attribution as attr
from hf_ext.reproduce.qa import QAFormat
from hf_ext.reproduce.reading import generate_items
from hf_ext.testing import tiny_causal_lm

pytest.importorskip("captum")


@pytest.fixture(scope="module")
def model():
    return tiny_causal_lm("llama", max_position_embeddings=512, seed=3)


@pytest.fixture(scope="module")
def prep(tokenizer):
    return QAFormat(tokenizer).prepare(generate_items(1, seed=7, min_sentences=3, max_sentences=3)[0])


def test_target_logprob_equals_core_teacher_forcing(model, prep):
    f = attr.TargetLogProb(model, torch.tensor(prep.prompt_ids), torch.tensor(prep.target_ids))
    got = f(torch.tensor([prep.prompt_ids + prep.target_ids[:-1]]))
    ref = teacher_forced_logprobs(model, [prep.prompt_ids], [prep.target_ids]).logprobs.sum()
    assert float(got) == pytest.approx(float(ref), abs=1e-5)
    with pytest.raises(ValueError, match="prompt"):
        f(torch.tensor([prep.prompt_ids]))


def test_gradient_x_input_equals_autograd(model, prep):
    got = attr.gradient_x_input(model, prep.prompt_ids, prep.target_ids)
    ids = torch.tensor([prep.prompt_ids + prep.target_ids[:-1]])
    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    T = len(prep.target_ids)
    logits = model(inputs_embeds=emb).logits[0, -T:]
    logits.log_softmax(-1)[torch.arange(T), torch.tensor(prep.target_ids)].sum().backward()
    expect = (emb.grad * emb)[0, : len(prep.prompt_ids)].sum(-1)
    assert torch.allclose(got, expect.detach(), atol=1e-5)


def test_integrated_gradients_is_complete(model, prep):
    scores, delta = attr.integrated_gradients(model, prep.prompt_ids, prep.target_ids, prep.passage_positions,
                                              n_steps=64)
    f = attr.TargetLogProb(model, torch.tensor(prep.prompt_ids), torch.tensor(prep.target_ids))
    ids = torch.tensor([prep.prompt_ids + prep.target_ids[:-1]])
    base = ids.clone()
    base[0, prep.passage_positions] = 0
    with torch.no_grad():
        gap = float(f(ids) - f(base))
    assert float(scores.sum()) == pytest.approx(gap, abs=2e-3 + 0.02 * abs(gap))  # completeness axiom
    assert delta < 2e-3 + 0.02 * abs(gap)
    outside = [p for p in range(len(prep.prompt_ids)) if p not in set(prep.passage_positions)]
    assert torch.all(scores[outside] == 0)  # positions equal in input and baseline get nothing


def test_feature_ablation_removes_sentences_from_the_text(model, tokenizer, prep):
    got = attr.feature_ablation(model, tokenizer, prep.template, prep.template_values, prep.target_ids)

    def logp(values):
        ids = tokenizer(prep.template.format(*values))["input_ids"]
        return float(teacher_forced_logprobs(model, [ids], [prep.target_ids]).logprobs.sum())

    full = logp(prep.template_values)
    expect = [full - logp([v if j != s else "" for j, v in enumerate(prep.template_values)])
              for s in range(len(prep.template_values))]
    assert got.tolist() == pytest.approx(expect, abs=1e-4)


def test_attention_and_aggregation(model, prep):
    att = attr.last_layer_attention(model, prep.prompt_ids, prep.target_ids)
    assert att.shape == (len(prep.prompt_ids),)
    assert 0 < float(att.sum()) <= 1 + 1e-5  # the rest goes to the target's own earlier tokens
    assert model.config._attn_implementation != "eager"  # restored
    assert attr.to_sentences(torch.arange(5.0), [[0, 4], [2]]).tolist() == [4.0, 2.0]
    out = attr.unit_scores_to_sentences([[0, 1], [2], [9]], torch.tensor([1.0, 2.0, 5.0]), [[0, 1], [2, 3]])
    assert out.tolist() == [1.0, 2.0]
    assert attr.random_scores(4, 1).tolist() == attr.random_scores(4, 1).tolist()
