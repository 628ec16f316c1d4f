"""SCAR hook sites (attention output, residual stream before/after a layer, any named module) on three families.

Reference: hooks written here with ``register_forward_hook`` / ``register_forward_pre_hook`` directly on modules
found by their transformers attribute names (no hf_ext anatomy or hook code): they capture the activation, and for the
steered output they put the SAE's reconstruction (``adapter(x).reconstruction``, the autoencoder's own forward) in
place of it. The adapter's capture and ``reconstruct()`` must give the same tensors, and its saved config must
reattach to the same site.
"""

from __future__ import annotations

import pytest
import torch

from hf_ext.scar import ScarAdapter, ScarConfig
from hf_ext.testing import tiny_causal_lm

LAYER = 1
# per family: (decoder layers, attention attribute, mlp attribute, a named module with a hidden-size output)
_NAMES = {
    "llama": (lambda m: m.model.layers, "self_attn", "mlp", "model.layers.1.self_attn.o_proj"),
    "gpt2": (lambda m: m.transformer.h, "attn", "mlp", "transformer.h.1.attn.c_proj"),
    "gpt_neox": (lambda m: m.gpt_neox.layers, "attention", "mlp", "gpt_neox.layers.1.attention.dense"),
}
SITES = ["mlp", "block", "residual_post", "residual_pre", "attention", "module"]


def _reference_module(model, family, site):
    layers, attn, mlp, named = _NAMES[family]
    layer = layers(model)[LAYER]
    return {"mlp": getattr(layer, mlp), "attention": getattr(layer, attn), "module": model.get_submodule(named)}.get(site, layer)


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _independent(model, family, site, ids, replace_with=None):
    """(captured activation [B, T, D], logits) with a hook written here; ``replace_with(x)`` swaps the activation."""
    module = _reference_module(model, family, site)
    seen = []
    if site == "residual_pre":
        def pre(mod, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            seen.append(x.detach().clone())
            if replace_with is None:
                return None
            new = replace_with(x)
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})
        handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    else:
        def post(mod, args, output):
            x = _first(output)
            seen.append(x.detach().clone())
            if replace_with is None:
                return None
            new = replace_with(x)
            return (new, *output[1:]) if isinstance(output, tuple) else new
        handle = module.register_forward_hook(post)
    try:
        with torch.no_grad():
            logits = model(ids, use_cache=False).logits
    finally:
        handle.remove()
    return seen[0], logits


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_site_matches_independent_hook(family, site, tmp_path):
    model = tiny_causal_lm(family, seed=2)
    ids = torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    kwargs = {"site_module": _NAMES[family][3]} if site == "module" else {}
    adapter = ScarAdapter.for_model(model, layer=LAYER, site=site, n_latents=96, k=8, seed=1, **kwargs).attach(model)
    try:
        ref_x, ref_plain = _independent(model, family, site, ids)
        got_x = adapter.run_capture(model, {"input_ids": ids}, activations=True)
        torch.testing.assert_close(got_x, ref_x.reshape(got_x.shape), rtol=0, atol=0)
        with torch.no_grad():
            plain = model(ids, use_cache=False).logits  # attached but dormant: the base model, bit for bit
        assert torch.equal(plain, ref_plain)

        def recon(x):
            return adapter(x.reshape(-1, x.shape[-1])).reconstruction.to(x.dtype).view_as(x)

        _, ref_steered = _independent(model, family, site, ids, replace_with=recon)
        with torch.no_grad(), adapter.reconstruct():
            steered = model(ids, use_cache=False).logits
        torch.testing.assert_close(steered, ref_steered, rtol=1e-5, atol=1e-6)
        assert (steered - plain).abs().max() > 1e-4  # the site is really replaced
        # the saved config names the site and reattaches to the same module
        adapter.save_pretrained(tmp_path)
    finally:
        adapter.detach()
    loaded = ScarAdapter.from_pretrained(tmp_path)
    assert loaded.config.site == site and loaded.config.site_module == kwargs.get("site_module")
    loaded.attach(model)
    try:
        assert loaded.hooked_module(model) is _reference_module(model, family, site)
        with torch.no_grad(), loaded.reconstruct():
            torch.testing.assert_close(model(ids, use_cache=False).logits, steered, rtol=0, atol=0)
    finally:
        loaded.detach()


def test_residual_pre_is_previous_block_output():
    model = tiny_causal_lm("llama", seed=2)
    ids = torch.randint(3, 100, (1, 6), generator=torch.Generator().manual_seed(1))
    pre = ScarAdapter.for_model(model, layer=1, site="residual_pre", n_latents=64, k=4).attach(model)
    post = ScarAdapter.for_model(model, layer=0, site="residual_post", n_latents=64, k=4)
    try:
        a = pre.run_capture(model, {"input_ids": ids}, activations=True)
    finally:
        pre.detach()
    post.attach(model)
    try:
        b = post.run_capture(model, {"input_ids": ids}, activations=True)
    finally:
        post.detach()
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_site_validation():
    with pytest.raises(ValueError, match="site='module' needs site_module"):
        ScarConfig(n_inputs=8, site="module")
    with pytest.raises(ValueError, match="only used with site='module'"):
        ScarConfig(n_inputs=8, site="mlp", site_module="x")
    with pytest.raises(ValueError, match="site must be one of .*, got 'nowhere'"):
        ScarConfig(n_inputs=8, site="nowhere")
    model = tiny_causal_lm("llama")
    adapter = ScarAdapter.for_model(model, layer=0, site="module", site_module="model.layers.0.nope")
    with pytest.raises(ValueError, match="site_module='model.layers.0.nope' is not a submodule"):
        adapter.attach(model)


def test_residual_pre_reads_keyword_hidden_states():
    """A decoder layer called with ``hidden_states=`` (no positional input) is hooked on that keyword."""
    model = tiny_causal_lm("llama", seed=2)
    adapter = ScarAdapter.for_model(model, layer=0, site="residual_pre", n_latents=64, k=4)
    x = torch.randn(1, 3, 64, generator=torch.Generator().manual_seed(0))
    from hf_ext.core.hooks import activate

    with activate(adapter._token, {"mode": "reconstruct"}):
        args, kwargs = adapter._pre_hook(None, (), {"hidden_states": x, "other": 1})
        positional, _ = adapter._pre_hook(None, (x, 2), {})
    expected = adapter(x.reshape(-1, 64)).reconstruction.view_as(x)
    assert args == () and kwargs["other"] == 1
    torch.testing.assert_close(kwargs["hidden_states"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(positional[0], expected, rtol=1e-5, atol=1e-6)
    assert positional[1] == 2
    assert adapter._pre_hook(None, (x,), {}) is None  # dormant outside a mode
    with activate(adapter._token, {"mode": "reconstruct"}), pytest.raises(ValueError, match="without hidden states"):
        adapter._pre_hook(torch.nn.Identity(), (), {"other": 1})
