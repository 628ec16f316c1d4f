"""The seeded reading-comprehension generator: determinism, one evidence sentence, distractor kinds."""

import re

import pytest

from hf_ext.reproduce.reading import DISTRACTOR_KINDS, RELATIONS, generate_items


def test_same_seed_same_items_other_seed_other_items():
    assert generate_items(30, seed=5) == generate_items(30, seed=5)
    assert generate_items(30, seed=5) != generate_items(30, seed=6)


@pytest.mark.parametrize("seed", [0, 11, 123])
def test_exactly_one_sentence_holds_the_answer_and_distractors_are_hard(seed):
    for it in generate_items(60, seed=seed, min_sentences=3, max_sentences=8):
        values = RELATIONS[it.relation][0]
        holders = [i for i, s in enumerate(it.sentences) if re.search(rf"\b{it.answer}\b", s)]
        assert holders == [it.evidence]
        assert it.entity in it.sentences[it.evidence] and it.entity in it.question
        assert it.kinds[it.evidence] == "evidence" and it.kinds.count("evidence") == 1
        assert {"entity", "same_type"} <= set(it.kinds) <= {"evidence", *DISTRACTOR_KINDS}
        for s, kind in zip(it.sentences, it.kinds):
            if kind in ("entity", "decoy"):
                assert s.startswith(it.entity)
            if kind in ("same_type", "decoy"):  # a same-type answer that is not the answer
                assert any(re.search(rf"\b{v}\b", s) for v in values if v != it.answer)
        assert 3 <= len(it.sentences) <= 8


def test_sentences_are_generated_not_copied_and_varied():
    items = generate_items(200, seed=1)
    assert len({it.passage for it in items}) == 200
    assert {it.relation for it in items} == set(RELATIONS)
    assert {it.evidence for it in items} >= {0, 1, 2, 3}


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"n": True}, {"n": 3, "min_sentences": 2},
                                    {"n": 3, "min_sentences": 6, "max_sentences": 5}, {"n": 3, "max_sentences": 99}])
def test_bad_arguments(kwargs):
    n = kwargs.pop("n")
    with pytest.raises(ValueError):
        generate_items(n, **kwargs)
