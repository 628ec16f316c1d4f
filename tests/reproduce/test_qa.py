"""Prompt rendering, sentence positions, answer location, deletion curves and ranks of the AtMan reproduction."""

import math

import pytest
import torch

from hf_ext.core.scoring import teacher_forced_logprobs
from hf_ext.reproduce.qa import QAFormat, _locate_answer, curve_auc, deletion_curves, rank_of
from hf_ext.reproduce.reading import generate_items


@pytest.fixture(scope="module")
def fmt(tokenizer):
    return QAFormat(tokenizer)


def test_template_and_positions_cover_each_sentence(fmt, tokenizer):
    for it in generate_items(10, seed=2):
        prep = fmt.prepare(it)
        assert prep.template.format(*prep.template_values) == prep.prompt
        for sentence, pos in zip(it.sentences, prep.sentence_positions):
            text = "".join(prep.prompt[s:e] for s, e in (prep.offsets[p] for p in pos))
            assert text.strip() == sentence  # char tokenizer: the tokens spell the sentence (and a space)
        assert prep.target == " " + it.answer


def test_answer_prefix_joins_the_prompt(fmt):
    it = generate_items(1, seed=0)[0]
    prep = fmt.prepare(it, " He is a", " farmer")
    assert prep.prompt.endswith("Answer: He is a") and prep.target == " farmer"


def test_locate_answer_in_a_reply(tokenizer):
    ids = tokenizer(" Ben works as a farmer.\nMore", add_special_tokens=False)["input_ids"]
    # character tokens: the space before the answer is its own token, so it stays in the prefix
    assert _locate_answer(tokenizer, ids, "farmer", ("baker", "farmer")) == (" Ben works as a ", "farmer")
    ids = tokenizer(" a baker, not a farmer", add_special_tokens=False)["input_ids"]
    assert _locate_answer(tokenizer, ids, "farmer", ("baker", "farmer")) is None  # another value comes first
    ids = tokenizer(" unknown\nfarmer", add_special_tokens=False)["input_ids"]
    assert _locate_answer(tokenizer, ids, "farmer", ("farmer",)) is None  # only the first line counts


def test_deletion_curve_matches_direct_scoring(fmt, tokenizer):
    model = __import__("hf_ext.testing", fromlist=["tiny_causal_lm"]).tiny_causal_lm("llama", max_position_embeddings=512)
    it = generate_items(1, seed=4, min_sentences=3, max_sentences=3)[0]
    prep = fmt.prepare(it)
    curves = deletion_curves(model, fmt, prep, {"a": [2, 0, 1]})
    assert curves["a"][0] == pytest.approx(1.0)

    def mean_logp(sentences):
        prompt = fmt.render(sentences, it.question)[0]
        ids = tokenizer(prompt)["input_ids"]
        return float(teacher_forced_logprobs(model, [ids], [prep.target_ids]).logprobs.mean())

    full = mean_logp(list(it.sentences))
    expect = [1.0, math.exp(mean_logp([it.sentences[0], it.sentences[1]]) - full),
              math.exp(mean_logp([it.sentences[1]]) - full), math.exp(mean_logp([]) - full)]
    assert curves["a"] == pytest.approx(expect, rel=1e-4)


def test_curve_auc_and_ranks():
    assert curve_auc([1.0, 1.0]) == 1.0
    assert curve_auc([1.0, 0.5, 0.0]) == pytest.approx(0.5)
    assert rank_of(torch.tensor([3.0, 1.0, 2.0]), 0) == 1.0
    assert rank_of(torch.tensor([3.0, 1.0, 2.0]), 1) == 3.0
    assert rank_of(torch.tensor([1.0, 1.0, 1.0, 1.0]), 2) == 2.5
    with pytest.raises(ValueError):
        curve_auc([1.0])


def test_needs_a_fast_tokenizer_and_a_chat_template(tokenizer):
    with pytest.raises(TypeError, match="fast tokenizer"):
        QAFormat(object())
    with pytest.raises(ValueError, match="chat template"):
        QAFormat(tokenizer, chat=True)
