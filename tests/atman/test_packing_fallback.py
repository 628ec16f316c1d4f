"""AtMan's packed perturbations are checked once against a plain forward and dropped where they are not exact.

Families where packing is not exact: differential attention (DiffLlama: two softmaxes per head) and latent-KV
caches (DeepSeek-V3's multi-head latent attention: the cache does not hold the keys attention sees). Reference:
one forward per unit with a 4D mask that removes / down-weights the unit's key (``tests/conformance/cells.py``).
"""

from __future__ import annotations

import pytest
import torch
import transformers

from tests.conformance.cells import check_atman
from tests.conformance.shrink import shrink_config


@pytest.mark.parametrize("config_class", ["DiffLlamaConfig", "DeepseekV3Config"])
def test_explanations_equal_a_naive_masked_loop_where_packing_is_not_exact(config_class):
    config = shrink_config(getattr(transformers, config_class))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
    check_atman(model, config.model_type)
