"""SCAR adapter oracles (spec scar.md §8), against hand-written formulas and naive loops, on several families."""

from __future__ import annotations

import threading

import pytest
import torch

from hf_ext.core.anatomy import get_anatomy
from hf_ext.scar import ScarAdapter, ScarConfig, ScarModel, nmse
from hf_ext.testing import tiny_causal_lm

FAMILIES = ("llama", "gpt2", "gpt_neox", "qwen2", "opt")
IDS = torch.tensor([[1, 5, 6, 7, 8, 9], [1, 10, 11, 12, 13, 14]])


def _model(family="llama", seed=0):
    return tiny_causal_lm(family, seed=seed)


def _adapter(model, *, layer=1, site="mlp", concepts=("a", "b"), bias0=None, **kw):
    scar = ScarAdapter.for_model(model, layer=layer, site=site, concepts=list(concepts), seed=1, **kw)
    if bias0 is not None:  # make the conditioned latents active on (most) tokens
        with torch.no_grad():
            scar.latent_bias[: len(concepts)] = bias0
    return scar.attach(model)


def _site(model, scar):
    a = get_anatomy(model)
    return a.mlp_outputs[scar.config.layer] if scar.config.site == "mlp" else a.layers[scar.config.layer]


class Observer:
    """Captures the site's output before (prepend) and after the adapter's hook."""

    def __init__(self, module):
        self.before, self.after = [], []
        self.handles = [module.register_forward_hook(lambda m, a, o: self.before.append(o.detach().clone()), prepend=True),
                        module.register_forward_hook(lambda m, a, o: self.after.append(o.detach().clone()))]

    def close(self):
        for h in self.handles:
            h.remove()


def naive_sae(scar, x):
    """Hand-written reference forward per token (python loops over tokens; unbiased std as torch.std)."""
    W_e, W_d = scar.encoder.weight.detach().double(), scar.decoder.weight.detach().double()
    b_pre, b_lat = scar.pre_bias.detach().double(), scar.latent_bias.detach().double()
    eps, k = scar.config.eps, scar.config.k
    zs, hs, outs, sds = [], [], [], []
    for tok in x.double():
        d = tok.numel()
        mu = sum(tok.tolist()) / d
        sd = (sum((v - mu) ** 2 for v in tok.tolist()) / (d - 1)) ** 0.5
        xn = (tok - mu) / (sd + eps)
        z = W_e @ (xn - b_pre) + b_lat
        order = sorted(range(z.numel()), key=lambda i: -float(z[i]))[:k]
        h = torch.zeros_like(z)
        for i in order:
            h[i] = max(float(z[i]), 0.0)
        outs.append((W_d @ h + b_pre) * sd + mu)
        zs.append(z)
        hs.append(h)
        sds.append(sd)
    return torch.stack(zs), torch.stack(hs), torch.stack(outs), torch.tensor(sds, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------- off mode, formula


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("site", ["mlp", "block"])
def test_off_mode_is_bit_identical_and_reconstruct_matches_formula(family, site):
    model = _model(family)
    with torch.no_grad():
        before = model(IDS).logits
    scar = _adapter(model, site=site)
    obs = Observer(_site(model, scar))
    with torch.no_grad():
        off = model(IDS).logits
        with scar.reconstruct():
            model(IDS)
    obs.close()
    assert torch.equal(off, before)
    assert torch.equal(obs.before[0], obs.after[0])  # off: the hook left the site untouched
    x = obs.before[1].reshape(-1, obs.before[1].shape[-1])
    _, _, x_hat, _ = naive_sae(scar, x)
    torch.testing.assert_close(obs.after[1].reshape(x.shape).double(), x_hat, atol=1e-4, rtol=1e-4)
    scar.detach()
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, before)


def test_topk_bounds_and_indices():
    scar = ScarAdapter(ScarConfig(n_inputs=16, n_latents=64, k=8), seed=0)
    with torch.no_grad():
        scar.latent_bias.normal_(0, 1, generator=torch.Generator().manual_seed(0))
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(1))
    h, z, _, _ = scar.encode(x)
    assert bool((h >= 0).all()) and int((h > 0).sum(-1).max()) <= 8
    for row_h, row_z in zip(h, z):
        top = set(sorted(range(64), key=lambda i: -float(row_z[i]))[:8])
        nz = set(torch.nonzero(row_h).flatten().tolist())
        assert nz <= top and nz == {i for i in top if row_z[i] > 0}
        assert torch.equal(row_h[list(top)], row_z[list(top)].relu())


def test_normalize_flag_is_honoured():
    """Reference pitfall 2: its config's normalize is ignored (always True); here False really skips the LN."""
    cfg = ScarConfig(n_inputs=8, n_latents=32, k=4, normalize=False)
    scar = ScarAdapter(cfg, seed=0)
    x = torch.randn(3, 8) * 5 + 2
    h, z, _, _ = scar.encode(x)
    torch.testing.assert_close(z, x @ scar.encoder.weight.t() - scar.pre_bias @ scar.encoder.weight.t() + scar.latent_bias)
    torch.testing.assert_close(scar.decode(h), h @ scar.decoder.weight.t() + scar.pre_bias)
    on = ScarAdapter(ScarConfig(n_inputs=8, n_latents=32, k=4, normalize=True), seed=0)
    assert not torch.allclose(on.encode(x)[1], z)


# ----------------------------------------------------------------------------------------------- steering


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_steering_delta_is_rank_one_along_decoder_column(family):
    model = _model(family)
    scar = _adapter(model, bias0=0.6)
    obs = Observer(_site(model, scar))
    with torch.no_grad():
        with scar.reconstruct():
            model(IDS)
        for alpha in (-3.0, 0.0, 5.0):
            with scar.steer({"a": alpha}, output="replace"):
                model(IDS)
    obs.close()
    x = obs.before[0].reshape(-1, obs.before[0].shape[-1])
    _, h, x_hat1, sd = naive_sae(scar, x)
    assert bool((h[:, 0] > 0).any()) and bool((h[:, 0] == 0).any()), "need tokens with and without latent 0"
    d0 = scar.decoder.weight[:, 0].detach().double()
    torch.testing.assert_close(obs.after[0].reshape(x.shape).double(), x_hat1, atol=1e-4, rtol=1e-4)  # α=1 ≡ reconstruct
    for i, alpha in enumerate((-3.0, 0.0, 5.0)):
        steered = obs.after[1 + i].reshape(x.shape).double()
        expected = (alpha - 1) * (h[:, 0] * sd)[:, None] * d0[None, :]
        torch.testing.assert_close(steered - obs.after[0].reshape(x.shape).double(), expected, atol=1e-4, rtol=1e-4)
        assert torch.equal(steered[h[:, 0] == 0], obs.after[0].reshape(x.shape).double()[h[:, 0] == 0])
    # α = 0 equals ablating latent 0 by hand
    h_abl = h.clone()
    h_abl[:, 0] = 0
    W_d, b_pre = scar.decoder.weight.detach().double(), scar.pre_bias.detach().double()
    mu = x.double().mean(-1, keepdim=True)
    torch.testing.assert_close(obs.after[2].reshape(x.shape).double(), (h_abl @ W_d.t() + b_pre) * sd[:, None] + mu,
                               atol=1e-4, rtol=1e-4)


def reference_modify_single(latents, f, alpha):
    """The reference's ``modify_single`` indexing (spec §6.1): a copy for a list ``f``, so nothing changes."""
    latents_scaled = latents.clone()
    mask = latents_scaled[:, :, f] > 0
    latents_scaled[:, :, f][mask] *= alpha
    return latents_scaled


def test_multi_feature_steering_changes_outputs_unlike_reference():
    lat = torch.rand(1, 3, 6) + 0.1
    assert torch.equal(reference_modify_single(lat, [0, 1], -100.0), lat)  # the reference bug: silently no-op
    assert not torch.equal(reference_modify_single(lat, 0, -100.0), lat)
    model = _model("llama")
    scar = _adapter(model, bias0=0.6)
    with torch.no_grad():
        with scar.reconstruct():
            rec = model(IDS).logits
        with scar.steer({"a": -100.0}, output="replace"):
            one = model(IDS).logits
        with scar.steer({"a": -100.0, "b": -100.0}, output="replace"):
            both = model(IDS).logits
        with scar.steer({"b": -100.0}, output="replace"):
            only_b = model(IDS).logits
    assert not torch.allclose(both, rec) and not torch.allclose(both, one) and not torch.allclose(both, only_b)


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2", "opt"])
def test_error_preserving_alpha_one_is_base_and_delta_formula(family):
    model = _model(family)
    with torch.no_grad():
        base = model(IDS).logits
    scar = _adapter(model, bias0=0.6)
    obs = Observer(_site(model, scar))
    with torch.no_grad():
        with scar.steer({"a": 1.0, "b": 1.0}, output="error_preserving"):
            same = model(IDS).logits
        with scar.steer({"a": torch.tensor([4.0, 1.0])}, output="error_preserving"):
            mixed = model(IDS).logits
    obs.close()
    assert torch.equal(same, base)
    assert torch.equal(mixed[1], base[1]) and not torch.allclose(mixed[0], base[0])
    # x + x̂(steered) − x̂ on row 0 (first layer hooked once per forward: after[1] is the mixed run)
    x = obs.before[1].reshape(-1, obs.before[1].shape[-1])
    _, h, _, sd = naive_sae(scar, x)
    d0 = scar.decoder.weight[:, 0].detach().double()
    n_row = x.shape[0] // 2
    expected = x.double() + (3.0 * (h[:, 0] * sd))[:, None] * d0
    expected[n_row:] = x[n_row:].double()
    torch.testing.assert_close(obs.after[1].reshape(x.shape).double(), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_per_row_strengths_equal_separate_runs_in_generate(family):
    model = _model(family)
    scar = _adapter(model, bias0=0.6)
    sm = ScarModel(scar.config, model=model, adapter=scar)
    ids = IDS[:, :4]
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    alphas = torch.tensor([-30.0, 25.0])
    batched = sm.generate(ids, steering={"a": alphas}, steering_output="replace", **kw)
    for r in range(2):
        single = sm.generate(ids[r:r + 1], steering={"a": float(alphas[r])}, steering_output="replace", **kw)
        assert torch.equal(batched[r:r + 1], single)
    # cache consistency under steering
    no_cache = sm.generate(ids, steering={"a": alphas}, steering_output="replace", use_cache=False, **kw)
    assert torch.equal(batched, no_cache)
    with scar.steer({"a": alphas}, output="replace"):  # the context manager gives the same as the generate kwarg
        assert torch.equal(model.generate(ids, **kw), batched)
    assert torch.equal(sm.generate(ids, **kw), model.generate(ids, **kw))  # no steering: the base model


def test_steering_is_per_context_and_restored_after_exception():
    model = _model("llama")
    scar = _adapter(model, bias0=0.6)
    with torch.no_grad():
        base = model(IDS).logits
    seen = {}

    def other_thread():
        with torch.no_grad():
            seen["logits"] = model(IDS).logits

    with pytest.raises(RuntimeError, match="boom"), scar.steer({"a": -50.0}, output="replace"):
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        raise RuntimeError("boom")
    assert torch.equal(seen["logits"], base)  # another thread never sees this context's steering
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, base)


# ----------------------------------------------------------------------------------------------- detection, losses


def test_detect_equals_sigmoid_of_hand_computed_logits():
    from hf_ext.testing import tiny_tokenizer

    model, tok = _model("gpt2"), tiny_tokenizer()
    scar = _adapter(model, layer=0)
    texts = ["hello there", "a cat"]
    det = scar.detect(texts, tok)
    obs = Observer(_site(model, scar))
    enc = tok(texts, return_tensors="pt", padding=True)
    from hf_ext.core.inputs import position_ids_from_mask

    with torch.no_grad():
        model(**enc, position_ids=position_ids_from_mask(enc.attention_mask))
    obs.close()
    x = obs.before[0]
    z, _, _, _ = naive_sae(scar, x.reshape(-1, x.shape[-1]))
    probs = torch.sigmoid(z[:, :2]).reshape(2, -1, 2).float()
    mask = enc.attention_mask.bool()
    torch.testing.assert_close(det.token_probs[mask], probs[mask], atol=1e-5, rtol=1e-5)
    assert bool((det.token_probs[~mask] == 0).all())
    torch.testing.assert_close(det.sequence_probs[1], probs[1][mask[1]].mean(0), atol=1e-5, rtol=1e-5)
    assert det.for_concept("b").shape == (2,)


def test_losses_nmse_bce_and_positive_gradient_scaling():
    x = torch.randn(6, 16)
    assert torch.equal(nmse(x, x), torch.zeros(6))
    torch.testing.assert_close(nmse(torch.zeros_like(x), x), torch.ones(6))
    y = torch.tensor([1.0, 0.0, -1.0, 1.0, 0.0, 1.0])
    grads = {}
    for s in (1.0, 7.0):
        scar = ScarAdapter(ScarConfig(n_inputs=16, n_latents=32, k=4, pos_grad_scale=s, bce_weight=0.5), seed=0)
        out = scar(x, y)
        z0 = out.pre_activations[:, 0].detach()
        t = (y * (y >= 0))
        bce_ref = -(t * torch.log(torch.sigmoid(z0)) + (1 - t) * torch.log(1 - torch.sigmoid(z0))).mean()
        torch.testing.assert_close(out.bce, bce_ref)
        torch.testing.assert_close(out.loss, nmse(out.reconstruction, x).mean() + 0.5 * bce_ref)
        out.loss.backward()
        grads[s] = scar.latent_bias.grad[0].clone()
        # d(0.5·BCE)/dz0 = 0.5·(σ(z0) − t)/N per token; scaled by s on positive tokens
        per_tok = 0.5 * (torch.sigmoid(z0) - t) / 6
        bce_grad = (per_tok * torch.where(t > 0, s, 1.0)).sum()
        rec_only = ScarAdapter(ScarConfig(n_inputs=16, n_latents=32, k=4), seed=0)
        rec_only(x).loss.backward()
        torch.testing.assert_close(grads[s], rec_only.latent_bias.grad[0] + bce_grad, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------------------------- persistence, dtypes, peft


def test_save_load_roundtrip_scarmodel_and_auto(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    import hf_ext  # noqa: F401  (registers ScarConfig/ScarModel)

    model = _model("llama")
    model.save_pretrained(tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    scar = _adapter(model, bias0=0.6)
    scar.config.base_model_name_or_path = str(tmp_path / "base")
    with torch.no_grad(), scar.steer({"a": -20.0}, output="replace"):
        want = model(IDS).logits
    scar.save_pretrained(tmp_path / "scar")
    files = sorted(p.name for p in (tmp_path / "scar").iterdir())
    assert files == ["README.md", "adapter_model.safetensors", "config.json", "hf_ext_manifest.json"]
    assert (tmp_path / "scar" / "adapter_model.safetensors").stat().st_size < 200_000  # adapter only, no base weights
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "scar"), ScarConfig)
    fresh = AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    loaded = ScarAdapter.from_pretrained(tmp_path / "scar", fresh)
    with torch.no_grad(), loaded.steer({"a": -20.0}, output="replace"):
        assert torch.equal(fresh(IDS).logits, want)
    auto = AutoModelForCausalLM.from_pretrained(tmp_path / "scar")  # loads the base named in the config
    assert isinstance(auto, ScarModel)
    with torch.no_grad():
        assert torch.equal(auto(IDS, steering={"a": -20.0}, steering_output="replace").logits, want)
        assert torch.equal(auto(IDS).logits, fresh(IDS).logits)
    scar.detach()


def test_base_mismatch_and_bad_inputs(tmp_path):
    llama, gpt2 = _model("llama"), _model("gpt2")
    scar = _adapter(llama)
    scar.save_pretrained(tmp_path / "a", card=False)
    with pytest.raises(ValueError, match="base model mismatch"):
        ScarAdapter.from_pretrained(tmp_path / "a", gpt2)
    with pytest.raises(ValueError, match="base model mismatch"):
        ScarAdapter.from_pretrained(tmp_path / "a", tiny_causal_lm("llama", hidden_size=32))
    with pytest.raises(ValueError, match="out of range"):
        ScarAdapter.for_model(llama, layer=5)
    with pytest.raises(ValueError, match="out of range"):
        ScarAdapter(ScarConfig(n_inputs=64, layer=7)).attach(llama)
    with pytest.raises(ValueError, match="site must be one of"):
        ScarAdapter.for_model(llama, layer=0, site="attn")
    with pytest.raises(ValueError, match="exceeds n_latents"):
        ScarConfig(n_inputs=8, n_latents=16, k=17)
    with pytest.raises(ValueError, match="does not exist"):
        with scar.steer({3: -1.0}):
            pass
    with pytest.raises(ValueError, match="unknown concept"):
        with scar.steer({"toxicity": -1.0}):
            pass
    with pytest.raises(ValueError, match="unknown steering op"):
        with scar.steer({"a": -1.0}, op="add"):
            pass
    with pytest.raises(ValueError, match="1-D"):
        with scar.steer({"a": torch.ones(2, 2)}):
            pass
    with pytest.raises(ValueError, match="finite"):
        with scar.steer({"a": float("nan")}):
            pass
    with pytest.raises(ValueError, match="batch has"), torch.no_grad(), scar.steer({"a": torch.ones(3)}):
        llama(IDS)
    with pytest.raises(ValueError, match="already attached"):
        scar.attach(llama)
    with pytest.raises(ValueError, match="labels have"):
        scar(torch.randn(4, 64), torch.zeros(4, 3))
    with pytest.raises(FileNotFoundError):
        ScarAdapter.from_pretrained(tmp_path)
    scar.detach()


def test_bf16_base_and_peft_lora():
    peft = pytest.importorskip("peft")
    model = _model("llama").to(torch.bfloat16)
    with torch.no_grad():
        base = model(IDS).logits
    scar = _adapter(model, bias0=0.6)  # adapter stays fp32
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, base)
        with scar.steer({"a": 1.0}, output="error_preserving"):
            assert torch.equal(model(IDS).logits, base)
        with scar.steer({"a": -50.0}, output="replace"):
            steered = model(IDS).logits
    assert steered.dtype == torch.bfloat16 and not torch.equal(steered, base)
    scar.detach()

    lora_base = _model("llama")
    lora = peft.get_peft_model(lora_base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.eval()
    with torch.no_grad():
        lora_out = lora(input_ids=IDS).logits
    scar = _adapter(lora, bias0=0.6)
    with torch.no_grad():
        assert torch.equal(lora(input_ids=IDS).logits, lora_out)
        with scar.steer({"a": 1.0}, output="error_preserving"):
            assert torch.equal(lora(input_ids=IDS).logits, lora_out)
        with scar.steer({"a": -50.0}, output="replace"):
            assert not torch.allclose(lora(input_ids=IDS).logits, lora_out)
    assert scar.detect(IDS).token_probs.shape == (2, 6, 2)


def test_model_card_names_base_model_and_hub_export_files(tmp_path):
    from huggingface_hub import ModelCard

    scar = ScarAdapter(ScarConfig(n_inputs=16, n_latents=64, k=8, layer=25, concepts=["toxicity"],
                                  base_model_name_or_path="meta-llama/Meta-Llama-3-8B", base_model_type="llama"))
    scar.save_pretrained(tmp_path, detection_auroc={"toxicity": 0.93}, repo_id="me/scar")
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.base_model == "meta-llama/Meta-Llama-3-8B" and "scar" in card.data.tags
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert "layer 25" in card.text and "0.930" in card.text and 'from_pretrained("me/scar")' in card.text
    assert "`0` = toxicity" in card.text


@pytest.mark.gpu
def test_cuda_bf16_base_with_bf16_adapter():
    model = _model("llama").to("cuda", torch.bfloat16)
    ids = IDS.to("cuda")
    with torch.no_grad():
        base = model(ids).logits
    scar = _adapter(model, bias0=0.6).to(dtype=torch.bfloat16)
    assert scar.encoder.weight.is_cuda
    with torch.no_grad():
        assert torch.equal(model(ids).logits, base)
        with scar.steer({"a": 1.0}, output="error_preserving"):
            assert torch.equal(model(ids).logits, base)
        with scar.steer({"a": torch.tensor([-50.0, 1.0], device="cuda")}, output="error_preserving"):
            steered = model(ids).logits
    assert torch.equal(steered[1], base[1]) and not torch.equal(steered[0], base[0])
