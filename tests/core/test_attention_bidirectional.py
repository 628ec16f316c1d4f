"""PaliGemma's Gemma is bidirectional (``is_causal=False``) but the model builds a causal mask for it whenever an
attention mask is passed: the model's own forward gives a row different numbers padded and unpadded. Attention
controls must not silently pick one meaning there: without a mask they match the model's own forward with a 4D
mask that removes the key; with a mask they refuse, naming the type (issue 17, silently-wrong cases)."""

from __future__ import annotations

import pytest
import torch
import transformers

from hf_ext.atman import AtManExplainer
from hf_ext.core.attention import attention_controls
from tests.conformance.shrink import shrink_config


@pytest.fixture(scope="module")
def paligemma():
    config = shrink_config(transformers.PaliGemmaConfig)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return transformers.PaliGemmaForConditionalGeneration(config).eval()


IDS = torch.tensor([[1, 10, 11, 12, 13, 14]])


@torch.no_grad()
def test_the_models_own_forward_depends_on_passing_a_mask(paligemma):
    plain = paligemma(input_ids=IDS).logits
    masked = paligemma(input_ids=IDS, attention_mask=torch.ones_like(IDS), position_ids=torch.arange(6)[None]).logits
    # an all-ones 2D mask may be dropped by transformers (then the two agree); a padded row never is
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), IDS], dim=1)
    mask = torch.cat([torch.zeros(1, 2, dtype=torch.long), torch.ones_like(IDS)], dim=1)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    row = paligemma(input_ids=padded, attention_mask=mask, position_ids=pos).logits[:, 2:]
    assert (row - plain).abs().max() > 1e-3 or (masked - plain).abs().max() > 1e-3


@torch.no_grad()
def test_weight_zero_without_a_mask_equals_the_models_own_4d_mask(paligemma):
    T = IDS.shape[1]
    keep = torch.ones(1, 1, T, T, dtype=torch.bool)
    keep[..., 3] = False  # key 3 removed for every query (the module sees every key: bidirectional)
    bias = torch.zeros(1, 1, T, T).masked_fill(~keep, torch.finfo(torch.float32).min)
    reference = paligemma(input_ids=IDS, attention_mask=bias, position_ids=torch.arange(T)[None]).logits
    w = torch.ones(1, T)
    w[0, 3] = 0.0
    with attention_controls(paligemma, w):
        controlled = paligemma(input_ids=IDS).logits
    torch.testing.assert_close(controlled, reference, atol=1e-4, rtol=1e-4)
    assert (controlled - paligemma(input_ids=IDS).logits).abs().max() > 1e-5


@torch.no_grad()
def test_a_padding_mask_is_refused_naming_the_type(paligemma):
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), IDS], dim=1)
    mask = torch.cat([torch.zeros(1, 2, dtype=torch.long), torch.ones_like(IDS)], dim=1)
    with pytest.raises(NotImplementedError, match="'paligemma'.*bidirectional"):
        with attention_controls(paligemma, torch.ones(1, 8)):
            paligemma(input_ids=padded, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0))
    # AtMan scores teacher-forced targets: the prefix-LM's bidirectional attention is refused before any control
    with pytest.raises(ValueError, match="'paligemma'.*not a causal LM"):
        AtManExplainer(paligemma, None, progress=False).explain_ids(IDS[0], torch.tensor([20, 21]))
