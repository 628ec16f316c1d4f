"""AtMan refuses a model whose logits read later tokens (XLNet without a permutation mask): Δ compares
teacher-forced target losses, which such a model would compute while seeing the targets (issue 17)."""

from __future__ import annotations

import pytest
import torch

from hf_ext.atman import AtManExplainer
from hf_ext.core.inputs import max_positions
from hf_ext.core.model_checks import check_causal
from tests.conformance.catalog import build


def test_atman_refuses_a_model_that_is_not_causal_naming_it():
    model = build("xlnet")
    with pytest.raises(ValueError, match=r"'xlnet' \(XLNetLMHeadModel\) is not a causal LM"):
        AtManExplainer(model, None, progress=False).explain_ids(torch.tensor([3, 4, 5, 6]), torch.tensor([7, 8]))


def causal_or_refused(model) -> bool:
    """Whether ``model`` is causal; where it is not, first assert that AtMan refuses it naming the type.

    transformers 5.17's Doge (the oldest supported release) lets later tokens change earlier logits: the tiny
    model's logits at every position move by ~0.2 when only the last token changes (5.25: exactly 0). AtMan once
    explained it silently; tests that compare AtMan with a naive loop on Doge run only where it is causal.
    """
    try:
        check_causal(model)
    except ValueError:
        family = model.config.model_type
        with pytest.raises(ValueError, match=f"'{family}'.*not a causal LM"):
            AtManExplainer(model, None, progress=False).explain_ids(torch.tensor([3, 4, 5, 6]), torch.tensor([7, 8]))
        return False
    return True


def test_a_negative_context_length_means_no_limit():
    # XLNet's config says max_position_embeddings=-1 (relative positions): AtMan once refused every prompt with
    # "longer than the model's context of -1 positions"
    model = build("xlnet")
    assert model.config.max_position_embeddings == -1
    assert max_positions(model) is None
