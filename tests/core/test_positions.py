"""Position ids of families that do not count from 0 (issue 17, silently-wrong cases): Kosmos-2.5 counts its
sinusoidal positions from ``padding_idx + 1`` and derives them from the pad tokens, so hf_ext's 0-based
``position_ids`` shifted every position embedding (teacher-forced log-probs off by up to 0.04). Scoring and the
greedy reference are compared with the model's own forward and ``generate`` on each prompt alone."""

from __future__ import annotations

import pytest
import torch
import transformers

from hf_ext.core.inputs import prepare_batch, takes_mask_positions
from hf_ext.core.reference import greedy_reference
from hf_ext.core.scoring import teacher_forced_logprobs
from hf_ext.testing import tiny_causal_lm
from tests.conformance.shrink import shrink_config

PROMPTS = [[1, 40, 41], [1, 50, 51, 52, 53], [1, 60]]
CONTS = [[42, 43, 44], [54], [61, 62, 63, 64]]


@pytest.fixture(scope="module")
def kosmos():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return transformers.Kosmos2_5ForConditionalGeneration(shrink_config(transformers.Kosmos2_5Config)).eval()


def test_takes_mask_positions(kosmos):
    assert takes_mask_positions(tiny_causal_lm("llama")) is True
    assert takes_mask_positions(kosmos) is False
    assert "position_ids" not in prepare_batch(kosmos, PROMPTS)


@torch.no_grad()
def test_teacher_forced_logprobs_equal_the_models_own_forward(kosmos):
    scores = teacher_forced_logprobs(kosmos, PROMPTS, CONTS)
    for b, (p, c) in enumerate(zip(PROMPTS, CONTS)):
        logits = kosmos(input_ids=torch.tensor([p + c])).logits[0].float()
        naive = torch.stack([logits[len(p) - 1 + t].log_softmax(-1)[c[t]] for t in range(len(c))])
        torch.testing.assert_close(scores.logprobs[b, : len(c)], naive, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_greedy_reference_equals_generate_on_each_prompt(kosmos):
    ref = greedy_reference(kosmos, PROMPTS, max_new_tokens=5, eos_token_id=[], progress=False)
    for p, c in zip(PROMPTS, ref["continuation_ids"]):
        out = kosmos.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                              max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert out[0, len(p):].tolist() == list(c)


def test_atman_refuses_positions_that_do_not_count_from_zero(kosmos):
    from hf_ext.atman import AtManExplainer

    with pytest.raises(NotImplementedError, match="'kosmos-2.5'.*count from 0"):
        AtManExplainer(kosmos, None, progress=False).explain_ids(torch.tensor(PROMPTS[0]), torch.tensor(CONTS[0]))


def _tiny(config_cls, model_cls):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return model_cls(shrink_config(config_cls)).eval()


def test_positions_through_kwargs_count_only_where_they_are_read():
    """Evolla's forward takes position_ids only through ``**kwargs`` (its inner model reads them); Mamba's swallows
    them; Bloom (ALiBi) has none to read."""
    evolla = _tiny(transformers.EvollaConfig, transformers.EvollaForProteinText2Text)
    assert takes_mask_positions(evolla) is True
    assert "position_ids" in prepare_batch(evolla, PROMPTS)
    for config_cls, model_cls in ((transformers.MambaConfig, transformers.MambaForCausalLM),
                                  (transformers.BloomConfig, transformers.BloomForCausalLM)):
        assert takes_mask_positions(_tiny(config_cls, model_cls)) is False, model_cls.__name__


@torch.no_grad()
def test_left_padded_scoring_through_kwargs_positions_equals_each_row_alone():
    evolla = _tiny(transformers.EvollaConfig, transformers.EvollaForProteinText2Text)
    scores = teacher_forced_logprobs(evolla, PROMPTS, CONTS)
    for b, (p, c) in enumerate(zip(PROMPTS, CONTS)):
        logits = evolla(input_ids=torch.tensor([p + c]), use_cache=False).logits[0].float()
        naive = torch.stack([logits[len(p) - 1 + t].log_softmax(-1)[c[t]] for t in range(len(c))])
        torch.testing.assert_close(scores.logprobs[b, : len(c)], naive, atol=1e-4, rtol=1e-4)
