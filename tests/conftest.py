"""Shared fixtures: tiny seeded models built once per session (offline, CPU, fp32)."""

from __future__ import annotations

import pytest
import torch

from hf_ext.testing import CAUSAL_LM_FAMILIES, tiny_causal_lm, tiny_tokenizer

# The offline environment variables are set by the repository's root conftest.py (loaded first).

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


_MODELS: dict = {}


def _model(family: str):
    if family not in _MODELS:
        _MODELS[family] = tiny_causal_lm(family, seed=0)
    return _MODELS[family]


@pytest.fixture(scope="session", params=CAUSAL_LM_FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def causal_lm(family):
    """The session's tiny causal LM of ``family`` (shared: tests must leave it as they found it)."""
    return _model(family)


@pytest.fixture(scope="session")
def causal_lms():
    """All five tiny causal LMs, keyed by family."""
    return {f: _model(f) for f in CAUSAL_LM_FAMILIES}
