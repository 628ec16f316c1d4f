"""SCAR training: activation cache vs a manual hook, Trainer (cached and end to end), Accelerate 1 vs 2 processes."""

from __future__ import annotations

import pytest
import torch

from hf_ext.core.anatomy import get_anatomy
from hf_ext.scar import ScarAdapter, build_activation_dataset, train_scar, train_scar_end_to_end
from hf_ext.scar.toy import concept_corpus
from hf_ext.testing import tiny_causal_lm, tiny_tokenizer


def test_activation_cache_matches_manual_hook_per_text():
    model, tok = tiny_causal_lm("llama"), tiny_tokenizer()
    scar = ScarAdapter.for_model(model, layer=0, site="mlp", concepts=["c"]).attach(model)
    texts = ["ab.cd", "hello", "xy"]
    dot = tok.convert_tokens_to_ids(".")
    ds = build_activation_dataset(model, tok, texts, [1, -1, 0], adapter=scar, eos_token_id=dot, progress=False)
    rows = ds[:]
    want_acts, want_labels = [], []
    site = get_anatomy(model).mlp_outputs[0]
    for text, label in zip(texts, [1, -1, 0]):
        seen = []
        handle = site.register_forward_hook(lambda m, a, o, seen=seen: seen.append(o[0]))
        ids = tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            model(ids)
        handle.remove()
        ids = ids[0].tolist()
        keep = ids.index(dot) if dot in ids else len(ids)  # tokens from the first EOS on are dropped
        want_acts.append(seen[0][:keep])
        want_labels += [label] * keep
    torch.testing.assert_close(rows["activations"], torch.cat(want_acts), atol=1e-5, rtol=1e-5)
    assert rows["labels"][:, 0].tolist() == want_labels  # the sequence label copied to every token, -1 kept
    assert rows["sequence_id"].tolist() == [i for i, a in enumerate(want_acts) for _ in range(a.shape[0])]
    with pytest.raises(ValueError, match="labels must be"):
        build_activation_dataset(model, tok, texts, [1, 0], adapter=scar, progress=False)


def test_trainer_on_cached_activations_and_end_to_end_learn():
    from hf_ext.scar.evaluation import detection_auroc
    from hf_ext.scar.toy import train_toy_lm

    model, tok = train_toy_lm(0, steps=60, progress=False)
    texts, labels = concept_corpus(120, seed=5)
    test_texts, test_labels = concept_corpus(60, seed=6)
    scar = ScarAdapter.for_model(model, layer=-1, site="block", concepts=["concept"], n_latents=96, k=8).attach(model)
    before = detection_auroc(scar, test_texts, test_labels, tok)["concept"]
    ds = build_activation_dataset(model, tok, texts, labels, adapter=scar, progress=False)
    _, log = train_scar(scar, ds, epochs=3, batch_size=64, lr=3e-3, logging_steps=5, progress=False)
    losses = [row["loss"] for row in log if "loss" in row]
    assert losses[-1] < losses[0] and {"nmse", "bce"} <= set(log[0])
    after = detection_auroc(scar, test_texts, test_labels, tok)["concept"]
    assert after > 0.9 and after > before

    fresh = ScarAdapter.for_model(model, layer=-1, site="block", concepts=["concept"], n_latents=96, k=8, seed=3)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    scar.detach()
    _, log = train_scar_end_to_end(model, tok, fresh, texts, labels, epochs=2, batch_size=16, lr=3e-3, logging_steps=3,
                                   progress=False)
    losses = [row["loss"] for row in log if "loss" in row]
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in base_state.items())  # the base stays frozen
    assert detection_auroc(fresh, test_texts, test_labels, tok)["concept"] > 0.9
