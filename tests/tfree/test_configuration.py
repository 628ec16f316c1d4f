"""TFreeConfig over backbone configs whose strict fields take no ``None`` (issue 17: CWM's ``bos_token_id``)."""

from __future__ import annotations

import transformers

from hf_ext.tfree import TFreeConfig
from tests.conformance.shrink import shrink_config


def test_strict_backbone_bos_field_gets_a_valid_id():
    text = shrink_config(transformers.CwmConfig)
    config = TFreeConfig(text_config=text, hash_vocab_size=512, num_activations=4)
    assert config.bos_token_id is None  # T-FREE itself has no BOS word
    assert isinstance(config.text_config.bos_token_id, int)
    assert config.text_config.eos_token_id == config.eos_token_id
