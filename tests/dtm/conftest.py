"""Shared DTM fixtures: greedy references of the session's tiny models (built once, read-only)."""

from __future__ import annotations

import pytest

PROMPTS = [[1, 40, 41, 42, 43, 44], [1, 50], [1, 60, 61, 62], [1, 70, 71, 72, 73, 74, 75, 76, 77]]
N = 24
_REFS: dict = {}


def make_ref(model, family):
    from hf_ext.dtm import reference

    if family not in _REFS:
        _REFS[family] = reference(model, PROMPTS, max_new_tokens=N, eos_token_id=[], progress=False)
    return _REFS[family]


@pytest.fixture
def ref(causal_lm, family):
    return make_ref(causal_lm, family)
