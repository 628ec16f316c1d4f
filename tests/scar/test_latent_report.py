"""SCAR latent report against a naive loop: one unpadded forward per text, the activation captured with a
``register_forward_hook`` written here, the SAE encoded one token at a time, all (value, text, position) sorted."""

from __future__ import annotations

import json

import pytest
import torch

from hf_ext.scar import LatentReport, ScarAdapter
from hf_ext.testing import tiny_causal_lm, tiny_tokenizer

TEXTS = ["you are awful and mean", "have a nice day", "ok", "the cat sat on the mat, then it left quietly", "zzz yy x"]


def _naive(model, module, adapter, tok, latents, activation, top_k):
    found = {lat: [] for lat in latents}
    per_text = []
    for i, text in enumerate(TEXTS):
        ids = tok(text, return_tensors="pt")["input_ids"]
        seen = []

        def grab(mod, args, out, seen=seen):
            seen.append(out[0] if isinstance(out, tuple) else out)

        handle = module.register_forward_hook(grab)
        try:
            with torch.no_grad():
                model(ids, use_cache=False)
        finally:
            handle.remove()
        acts = []
        for pos in range(ids.shape[1]):
            with torch.no_grad():
                h, z = adapter.encode(seen[0][0, pos][None])[:2]
            a = (h if activation == "latents" else z)[0]
            acts.append([float(a[lat]) for lat in latents])
            for lat in latents:
                if a[lat] > 0:
                    found[lat].append((float(a[lat]), i, pos))
        per_text.append(acts)
    return {lat: sorted(v, key=lambda e: (-e[0], e[1], e[2])) for lat, v in found.items()}, per_text


@pytest.mark.parametrize("family, site, activation", [("gpt2", "block", "latents"), ("llama", "attention", "pre_activations"),
                                                      ("gpt_neox", "mlp", "latents")])
def test_latent_report_matches_naive_loop(family, site, activation, tmp_path):
    model, tok = tiny_causal_lm(family, seed=4), tiny_tokenizer()
    adapter = ScarAdapter.for_model(model, layer=1, site=site, concepts=["a", "b"], n_latents=128, k=16, seed=2)
    adapter.attach(model)
    try:
        module = adapter.hooked_module(model)
        latents = [0, 1, 7, 50, 127]
        report = adapter.latent_report(TEXTS, tok, latents=["a", "b", 7, 50, 127], top_k=6, window=3,
                                       activation=activation, batch_size=2)
    finally:
        adapter.detach()
    ref, per_text = _naive(model, module, adapter, tok, latents, activation, 6)
    assert report.latents == latents and report.labels == ["a", "b", "latent 7", "latent 50", "latent 127"]
    assert sum(len(c) for c in report.contexts) >= 10  # not vacuous
    for k, lat in enumerate(latents):
        got = report.contexts[k]
        # the same top values; each context's value is the naive value at its (text, position) (equal values,
        # e.g. BOS in every text, may come in either order)
        assert [c.value for c in got] == pytest.approx([v for v, _, _ in ref[lat][:6]], rel=1e-4, abs=1e-5)
        for c in got:
            assert c.value == pytest.approx(per_text[c.text_index][c.position][k], rel=1e-4, abs=1e-5)
        assert len({(c.text_index, c.position) for c in got}) == len(got)
        cut = ref[lat][6][0] if len(ref[lat]) > 6 else float("-inf")  # the best value left out
        assert {(t, p) for v, t, p in ref[lat] if v > cut + 1e-4} <= {(c.text_index, c.position) for c in got}
        for c in got:  # the window: tokens and activations of the neighbours
            n = len(per_text[c.text_index])
            lo, hi = max(0, c.position - 3), min(n, c.position + 4)
            assert c.center == c.position - lo and len(c.tokens) == hi - lo
            assert c.activations == pytest.approx([per_text[c.text_index][p][k] for p in range(lo, hi)], rel=1e-4, abs=1e-5)
            assert "".join(c.tokens) == tok.decode(tok(TEXTS[c.text_index])["input_ids"][lo:hi])
    assert report.num_tokens == sum(len(tok(t)["input_ids"]) for t in TEXTS)
    # persistence and HTML
    back = LatentReport.load(report.save(tmp_path / "r.json"))
    assert back == report
    html = report.save(tmp_path / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("class='ctx'") == sum(len(c) for c in report.contexts)
    json.dumps(report.to_dict())


def test_latent_report_bad_input():
    model = tiny_causal_lm("gpt2")
    adapter = ScarAdapter.for_model(model, layer=0, n_latents=32, k=4).attach(model)
    tok = tiny_tokenizer()
    try:
        with pytest.raises(ValueError, match="latents must be"):
            adapter.latent_report(["hi"], tok, latents=[32])
        with pytest.raises(ValueError, match="top_k=0"):
            adapter.latent_report(["hi"], tok, top_k=0)
        with pytest.raises(ValueError, match="activation="):
            adapter.latent_report(["hi"], tok, activation="h")
        with pytest.raises(TypeError, match="texts must be"):
            adapter.latent_report("hi", tok)
        with pytest.raises(ValueError, match="unknown concept"):
            adapter.latent_report(["hi"], tok, latents=["nope"])
        assert len(adapter.latent_report(["hi there"], tok, latents="all", top_k=1).latents) == 32
    finally:
        adapter.detach()
    with pytest.raises(FileNotFoundError, match="path="):
        LatentReport.load("/nonexistent/report.json")
