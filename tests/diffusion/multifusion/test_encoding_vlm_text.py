"""Interleaved encoder on VLMs it used to refuse (issue 17): text items through a VLM whose config names no image
placeholder id (MiniCPM-V, a Llava with the id removed), and models whose own positions do not count from 0
(Kosmos-2.5). References: the model's own forward on the laid-out ids, one row at a time."""

from __future__ import annotations

import pytest
import torch
import transformers
from PIL import Image

from hf_ext.diffusion.multifusion import InterleavedEncoder
from hf_ext.testing import tiny_causal_lm, tiny_llava, tiny_tokenizer
from tests.conformance.shrink import shrink_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ITEMS = [["ab", "c", "de"], ["x", "yz"]]  # rows of different length: the second is right-padded


def _seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build().eval()


def _llava_without_placeholder():
    model, _ = tiny_llava(with_processor=False)
    model.config.image_token_id = None
    return model


def _minicpm():
    return _seeded(lambda: transformers.MiniCPMV4_6ForConditionalGeneration(
        shrink_config(transformers.MiniCPMV4_6Config)))


def _kosmos25():
    return _seeded(lambda: transformers.Kosmos2_5ForConditionalGeneration(shrink_config(transformers.Kosmos2_5Config)))


@torch.no_grad()
def _own_rows(model, lay):
    """Last hidden state of each row alone, unpadded, with the model's own default positions."""
    rows = []
    for b in range(lay.input_ids.shape[0]):
        ids = lay.input_ids[b][lay.attention_mask[b].bool()][None]
        rows.append(model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[-1][0])
    return rows


@pytest.mark.parametrize("build", [_llava_without_placeholder, _minicpm, _kosmos25, lambda: tiny_causal_lm("llama")],
                         ids=["llava-no-image-token", "minicpmv4_6", "kosmos-2.5", "llama"])
@torch.no_grad()
def test_text_items_equal_the_models_own_forward_per_row(build):
    model = build()
    enc = InterleavedEncoder(model, tiny_tokenizer())
    out = enc(ITEMS)
    lay = enc.layout(ITEMS)
    for b, own in enumerate(_own_rows(model, lay)):
        torch.testing.assert_close(out.hidden_states[b, : own.shape[0]], own, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("build", [_llava_without_placeholder, _minicpm], ids=["llava-no-image-token", "minicpmv4_6"])
def test_an_image_item_without_a_placeholder_id_is_refused(build):
    model = build()
    processor = tiny_llava()[1].image_processor
    enc = InterleavedEncoder(model, tiny_tokenizer(), processor)
    with pytest.raises(ValueError, match=f"{type(model).__name__} has no config.image_token_id"):
        enc(["a", Image.new("RGB", (32, 32))])
