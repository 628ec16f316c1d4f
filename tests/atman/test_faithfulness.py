"""Deletion AUC on a constructed case (a tiny model trained to copy one fixed prompt position), the evaluate
module, and image-tile explanations on a tiny Llava (reference: removing the tile from ``attention_mask``)."""

from __future__ import annotations

import string

import pytest
import torch

from hf_ext.atman import AtManExplainer, deletion_auc
from hf_ext.testing import LLAVA_IMAGE_TOKEN_ID, tiny_causal_lm, tiny_llava, tiny_llava_inputs, tiny_tokenizer

LETTERS = string.ascii_lowercase
COPY_INDEX = 3  # the target is the prompt's 3rd letter (character index 2)


@pytest.fixture(scope="module")
def copy_model():
    """A 1-layer tiny Llama trained (seeded, ~2 s) to output the prompt's 3rd letter after 8 letters."""
    tok = tiny_tokenizer()
    model = tiny_causal_lm("llama", seed=0, hidden_size=32, num_layers=1).train()
    letter_ids = torch.tensor(tok.convert_tokens_to_ids(list(LETTERS)))
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(250):
        letters = letter_ids[torch.randint(0, 26, (64, 8), generator=gen)]
        ids = torch.cat([torch.ones(64, 1, dtype=torch.long), letters], 1)
        logits = model(ids).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, letters[:, COPY_INDEX - 1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert loss.item() < 0.5, f"the copy task did not train (loss {loss.item():.2f})"
    return model, tok


def test_deletion_auc_beats_random(copy_model):
    model, tok = copy_model
    ex = AtManExplainer(model, tok, suppression_factor=0.0, max_batch_size=16, progress=False)
    prompt = "qwertyui"
    target = prompt[COPY_INDEX - 1]
    exp = ex.explain(prompt, target)
    assert int(exp.importance().argmax()) == COPY_INDEX  # BOS is unit 0: the copied letter is the most relevant
    res = deletion_auc(ex, prompt, target, n_random=8, seed=0, explanation=exp)
    assert res["atman_curve"][1] < 0.2  # the probability collapses after the first deletion
    assert res["faithfulness"] > 0.2, res  # random − AtMan AUC, with a margin


def test_evaluate_module(copy_model):
    import evaluate

    from hf_ext.metrics import metric_path

    model, tok = copy_model
    metric = evaluate.load(metric_path("atman"))
    res = metric.compute(prompts=["qwertyui", "asdfghjk"], targets=["e", "d"], model=model, tokenizer=tok, n_random=4)
    assert len(res["relevance"]) == 2 and len(res["relevance"][0]) == 9 and res["units"][0][1] == "q"
    assert res["mean_faithfulness"] > 0.2 and res["mean_atman_auc"] < res["mean_random_auc"]
    with pytest.raises(ValueError, match="model="):
        metric.compute(prompts=["a"], targets=["b"])


@torch.no_grad()
def test_image_tiles_equal_masking_and_prefix_reuse():
    model, _ = tiny_llava(with_processor=False)
    inputs = tiny_llava_inputs(model, batch=1, text_len=3)
    target = torch.tensor([40, 41, 42])
    vision_calls = []
    handle = model.get_submodule("model.vision_tower").register_forward_hook(lambda *a: vision_calls.append(1))
    try:
        exp = AtManExplainer(model, suppression_factor=0.0, max_batch_size=3, progress=False).explain_image(inputs, target, tile=2)
    finally:
        handle.remove()
    assert len(vision_calls) == 1  # the vision tower runs once (base pass); manipulation is in the language model
    assert exp.image_grid == (2, 2) and len(exp.units) == 4
    no_reuse = AtManExplainer(model, suppression_factor=0.0, prefix_reuse=False, progress=False).explain_image(inputs, target, tile=2)
    torch.testing.assert_close(exp.delta, no_reuse.delta, atol=1e-5, rtol=1e-5)

    ids = torch.cat([inputs["input_ids"], target[:-1].view(1, -1)], 1)
    L, P = ids.shape[1], inputs["input_ids"].shape[1]
    pos = torch.arange(L).view(1, -1)

    def ce(mask):
        logits = model(input_ids=ids, pixel_values=inputs["pixel_values"], attention_mask=mask, position_ids=pos).logits[0, P - 1:]
        return torch.nn.functional.cross_entropy(logits, target, reduction="none")

    base = ce(torch.ones(1, L, dtype=torch.long))
    image = (inputs["input_ids"][0] == LLAVA_IMAGE_TOKEN_ID).nonzero().flatten()
    assert sorted(p for u in exp.units for p in u.positions) == image.tolist()
    for unit, delta in zip(exp.units, exp.delta):
        mask = torch.ones(1, L, dtype=torch.long)
        mask[0, unit.positions] = 0
        torch.testing.assert_close(delta, base - ce(mask), atol=2e-5, rtol=1e-4)
    assert exp.delta.abs().max() > 1e-4
    assert "<table" in exp.to_html()
