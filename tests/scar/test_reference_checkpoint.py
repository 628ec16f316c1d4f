"""Loading the released SCAR checkpoint layout (ml-research/SCAR ``LLama3_SAE``) and steering like the reference.

The synthetic checkpoints have exactly the release's names and shapes (``model.*`` + ``lm_head.weight`` of the base
Llama, ``SAE.encoder.weight [L, D]``, ``SAE.decoder.weight [D, L]``, ``SAE.pre_bias [D]``, ``SAE.latent_bias [L]``,
float16, sharded with an index, a ``config.json`` with ``hook_block_num`` / ``activation_k`` / ``n_latents``) at small
sizes with random values. The oracle is the reference's steering formula, written here as a forward hook on the MLP:
per-token normalisation with the unbiased std and ε = 1e-5, TopK + ReLU, latent 0 scaled where positive (or
replaced), decode, de-normalise, replace the MLP output.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import save_file

from hf_ext.scar import ScarAdapter
from hf_ext.testing import tiny_causal_lm

IDS = torch.tensor([[1, 5, 6, 7, 8, 9], [1, 10, 11, 12, 13, 14]])


def reference_release(folder, base, *, block, k, n_latents=None, seed=0, dtype=torch.float16, config=True):
    """Write a reference-layout checkpoint for ``base`` in two safetensors shards + index (+ config.json)."""
    h = base.config.hidden_size
    n_latents = n_latents or 6 * h
    g = torch.Generator().manual_seed(seed)
    sae = {"SAE.pre_bias": 0.1 * torch.randn(h, generator=g),
           "SAE.encoder.weight": torch.randn(n_latents, h, generator=g) / math.sqrt(h),
           "SAE.latent_bias": 0.1 * torch.randn(n_latents, generator=g),
           "SAE.decoder.weight": torch.randn(h, n_latents, generator=g) / math.sqrt(k)}
    sae["SAE.latent_bias"][0] = 3.0  # the conditioned latent is active on most tokens, so steering changes outputs
    base_state = {"model." + n: t for n, t in base.model.state_dict().items()}
    base_state["lm_head.weight"] = base.lm_head.weight.detach()
    shards = {"model-00001-of-00002.safetensors": base_state, "model-00002-of-00002.safetensors": sae}
    folder.mkdir(parents=True)
    weight_map = {}
    for name, part in shards.items():
        save_file({n: t.detach().to(dtype).contiguous() for n, t in part.items()}, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    if config:
        cfg = {**base.config.to_dict(), "model_type": "llama3_SAE", "architectures": ["LLama3_SAE"],
               "base_model_name": "meta-llama/Meta-Llama-3-8B", "hook_block_num": block, "n_latents": n_latents,
               "n_inputs": h, "activation": "topk", "activation_k": k, "site": "mlp", "tied": False,
               "normalize": False,  # what the release's config says; the reference ignores it (hard-coded True)
               "mod_features": None, "mod_threshold": None, "mod_replacement": None, "mod_scaling": None,
               "torch_dtype": "float16"}
        (folder / "config.json").write_text(json.dumps(cfg))
    return {n: t.to(dtype).float() for n, t in sae.items()}


def reference_hook(sae, k, *, scaling=None, replacement=None, eps=1e-5):
    """The reference's HookedTransformer_with_SAE_suppresion with mod_features=0 (TopK), from its formulas."""
    enc, dec = sae["SAE.encoder.weight"], sae["SAE.decoder.weight"]
    pre, lat = sae["SAE.pre_bias"], sae["SAE.latent_bias"]

    def hook(module, args, output):
        mu = output.mean(-1, keepdim=True)
        centred = output - mu
        sd = centred.std(-1, keepdim=True)  # torch's default: unbiased
        z = (centred / (sd + eps) - pre) @ enc.T + lat
        top = z.topk(k, dim=-1)
        h = torch.zeros_like(z).scatter(-1, top.indices, top.values.relu())
        c = h[..., 0]
        if replacement is not None:
            c = torch.full_like(c, replacement)
        elif scaling is not None:
            c = torch.where(c > 0, c * scaling, torch.where(c < 0, c * -scaling, c))
        h = torch.cat([c[..., None], h[..., 1:]], -1)
        return (h @ dec.T + pre) * sd + mu

    return hook


def _logits_with(model, block, hook):
    handle = model.model.layers[block].mlp.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(IDS).logits
    finally:
        handle.remove()


@pytest.mark.parametrize("block, k, num_layers", [(1, 24, 2), (0, 8, 3), (2, 100, 3)])
def test_steering_matches_the_reference_formula(tmp_path, block, k, num_layers):
    base = tiny_causal_lm("llama", num_layers=num_layers, seed=block)
    sae = reference_release(tmp_path / "scar", base, block=block, k=k)
    scar = ScarAdapter.from_reference_checkpoint(tmp_path / "scar", model=base, concepts=["toxicity"])
    cfg = scar.config
    assert (cfg.layer, cfg.k, cfg.n_latents, cfg.n_inputs, cfg.site) == (block, k, 6 * 64, 64, "mlp")
    assert cfg.normalize and cfg.base_model_name_or_path == "meta-llama/Meta-Llama-3-8B"
    torch.testing.assert_close(scar.decoder.weight, sae["SAE.decoder.weight"], rtol=0, atol=0)
    with torch.no_grad():
        base_logits = base(IDS).logits
    recon = None
    for alpha in (-100.0, 0.0, 2.5, 100.0):
        want = _logits_with(base, block, reference_hook(sae, k, scaling=alpha))
        with torch.no_grad(), scar.steer({"toxicity": alpha}):
            got = base(IDS).logits
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(got, base_logits, atol=1e-3)  # the SAE is really in the forward
    for value in (0.0, 7.0):
        want = _logits_with(base, block, reference_hook(sae, k, replacement=value))
        with torch.no_grad(), scar.steer({"toxicity": value}, op="replace"):
            torch.testing.assert_close(base(IDS).logits, want, rtol=1e-4, atol=1e-4)
    want = _logits_with(base, block, reference_hook(sae, k))  # mod_features set, no modification: plain SAE
    with torch.no_grad(), scar.reconstruct():
        recon = base(IDS).logits
    torch.testing.assert_close(recon, want, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # mod_features = None: the base model, bit for bit
        assert torch.equal(base(IDS).logits, base_logits)


def test_state_dict_and_trainer_checkpoint_sources(tmp_path):
    base = tiny_causal_lm("llama")
    sae = reference_release(tmp_path / "scar", base, block=1, k=16, config=False)
    with pytest.raises(ValueError, match="layer= is required"):
        ScarAdapter.from_reference_checkpoint(tmp_path / "scar")
    full = {"model.embed_tokens.weight": torch.zeros(3, 64), **sae}
    from_dict = ScarAdapter.from_reference_checkpoint(full, layer=1, k=16)
    bare = {name[len("SAE."):]: t for name, t in sae.items()}
    torch.save({"models_state_dict": [bare]}, tmp_path / "state_dict.pth")  # the reference trainer's checkpoint
    from_trainer = ScarAdapter.from_reference_checkpoint(tmp_path / "state_dict.pth", layer=1, k=16)
    for adapter in (from_dict, from_trainer):
        assert adapter.config.concepts == ["concept"] and adapter.encoder.weight.dtype == torch.float32
        for name in ("encoder.weight", "decoder.weight", "pre_bias", "latent_bias"):
            torch.testing.assert_close(adapter.state_dict()[name], sae["SAE." + name], rtol=0, atol=0)


def test_only_the_sae_shard_is_downloaded_from_the_hub(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    base = tiny_causal_lm("llama")
    reference_release(tmp_path / "repo", base, block=1, k=16)
    asked = []

    def fake_download(repo_id, filename, revision=None, **kwargs):
        asked.append((repo_id, filename, revision))
        src = tmp_path / "repo" / filename
        if not src.is_file():
            raise EntryNotFoundError(filename)
        dst = tmp_path / "cache" / filename
        dst.parent.mkdir(exist_ok=True)
        shutil.copy(src, dst)
        return str(dst)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    scar = ScarAdapter.from_reference_checkpoint("AIML-TUDA/SCAR", revision="llama3-l384-b1-k16")
    assert scar.config.k == 16 and scar.config.layer == 1
    names = [name for _, name, _ in asked]
    assert "model-00002-of-00002.safetensors" in names and "model-00001-of-00002.safetensors" not in names
    assert {rev for _, _, rev in asked} == {"llama3-l384-b1-k16"}


def test_bad_checkpoints_raise(tmp_path):
    base = tiny_causal_lm("llama")
    sae = reference_release(tmp_path / "scar", base, block=1, k=16)
    cfg_path = tmp_path / "scar" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "n_latents": 12288}))  # the reference repo's own, pre-conversion value
    with pytest.raises(ValueError, match="stale"):
        ScarAdapter.from_reference_checkpoint(tmp_path / "scar")
    cfg_path.write_text(json.dumps({**cfg, "activation": "jumprelu"}))
    with pytest.raises(ValueError, match="'jumprelu'"):
        ScarAdapter.from_reference_checkpoint(tmp_path / "scar")
    with pytest.raises(ValueError, match="JumpReLU threshold"):
        ScarAdapter.from_reference_checkpoint({**sae, "SAE.threshold": torch.zeros(384)}, layer=1, k=16)
    with pytest.raises(ValueError, match="no SCAR SAE"):
        ScarAdapter.from_reference_checkpoint({"lm_head.weight": torch.zeros(2, 2)}, layer=1, k=1)
    with pytest.raises(ValueError, match="SAE.decoder.weight has shape"):
        ScarAdapter.from_reference_checkpoint({**sae, "SAE.decoder.weight": torch.zeros(64, 10)}, layer=1, k=16)
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="hidden size 32"):  # another base model
        ScarAdapter.from_reference_checkpoint(tmp_path / "scar", model=tiny_causal_lm("llama", hidden_size=32))
    with pytest.raises(FileNotFoundError, match="not found"):
        ScarAdapter.from_reference_checkpoint(tmp_path / "missing")
