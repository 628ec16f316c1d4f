"""AtMan refuses a model whose logits read later tokens (XLNet without a permutation mask): Δ compares
teacher-forced target losses, which such a model would compute while seeing the targets (issue 17)."""

from __future__ import annotations

import pytest
import torch

from hf_ext.atman import AtManExplainer
from hf_ext.core.inputs import max_positions
from tests.conformance.catalog import build


def test_atman_refuses_a_model_that_is_not_causal_naming_it():
    model = build("xlnet")
    with pytest.raises(ValueError, match=r"'xlnet' \(XLNetLMHeadModel\) is not a causal LM"):
        AtManExplainer(model, None, progress=False).explain_ids(torch.tensor([3, 4, 5, 6]), torch.tensor([7, 8]))


def test_a_negative_context_length_means_no_limit():
    # XLNet's config says max_position_embeddings=-1 (relative positions): AtMan once refused every prompt with
    # "longer than the model's context of -1 positions"
    model = build("xlnet")
    assert model.config.max_position_embeddings == -1
    assert max_positions(model) is None
