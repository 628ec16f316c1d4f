"""Stage B fusion tuning and stage A semantic tuning: learning, freezing, keyed randomness, resume, 2 processes."""

from __future__ import annotations

import pytest
import torch

from hf_ext.diffusion.multifusion import MultiFusionPipeline, tiny_multifusion_components
from hf_ext.diffusion.multifusion.training import (
    SENTENCE_PAIRS,
    FusionConfig,
    SemanticConfig,
    ShapesDataset,
    _sample_draws,
    denoising_loss,
    fusion_parameter_names,
    info_nce,
    load_checkpoint,
    train_fusion,
    train_semantic,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def _pipe(**kw):
    pipe = MultiFusionPipeline(**tiny_multifusion_components(**kw))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _state(pipe):
    out = {}
    for comp in ("encoder", "unet", "vae", "projection"):
        module = getattr(pipe, comp)
        if module is not None:
            out.update({f"{comp}.{n}": p.detach().clone() for n, p in module.named_parameters()})
    return out


def test_shapes_dataset_is_deterministic_and_captioned():
    a, b = ShapesDataset(4, seed=3), ShapesDataset(4, seed=3)
    item = a[2]
    assert item["caption"] == f"a {item['color']} {item['shape']}"
    assert item["image"].tobytes() == b[2]["image"].tobytes()
    center = item["image"].getpixel((16, 16))
    from hf_ext.diffusion.multifusion.training import COLORS

    assert center == COLORS[item["color"]]
    with pytest.raises(IndexError):
        a[4]
    with pytest.raises(ValueError, match="positive int"):
        ShapesDataset(0)


def test_stage_b_lowers_held_out_loss_and_freezes_everything_else():
    pipe = _pipe()
    train, held = ShapesDataset(32, seed=0), ShapesDataset(8, seed=99)
    before = _state(pipe)
    loss_before = denoising_loss(pipe, held, num_draws=2)
    res = train_fusion(pipe, train, FusionConfig(steps=12, batch_size=8, lr=1e-2, p_image=0.3), progress=False)
    loss_after = denoising_loss(pipe, held, num_draws=2)
    assert loss_after < loss_before - 0.01, (loss_before, loss_after)
    trainable = set(fusion_parameter_names(pipe))
    assert set(res.trainable) == trainable and any(".attn2." in n for n in trainable)
    assert any(n.startswith("projection.") for n in trainable)
    after = _state(pipe)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and changed <= trainable
    frozen = [n for n in before if n not in trainable]
    assert all(torch.equal(before[n], after[n]) for n in frozen)  # bit-identical
    assert all(not p.requires_grad for p in pipe.unet.parameters())


def test_keyed_randomness_does_not_depend_on_batch_layout():
    a = _sample_draws(0, 17, (4, 16, 16), 1000, 0.5, 0.1)
    b = _sample_draws(0, 17, (4, 16, 16), 1000, 0.5, 0.1)
    c = _sample_draws(0, 18, (4, 16, 16), 1000, 0.5, 0.1)
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert not torch.equal(a[2], c[2])


def test_resume_repeats_the_uninterrupted_run_and_checkpoints_are_safetensors(tmp_path):
    data = ShapesDataset(8, seed=1)
    cfg = dict(batch_size=2, lr=1e-2, p_image=0.5, p_uncond=0.25, seed=4)
    straight = _pipe(projection="text_proj")
    res_a = train_fusion(straight, data, FusionConfig(steps=4, **cfg), progress=False)
    resumed = _pipe(projection="text_proj")
    train_fusion(resumed, data, FusionConfig(steps=4, checkpoint_every=2, **cfg), output_dir=tmp_path / "run",
                 progress=False)
    ckpt = tmp_path / "run" / "checkpoint-2"
    assert sorted(p.name for p in ckpt.iterdir()) == ["hf_ext_manifest.json", "optimizer.json", "optimizer.safetensors",
                                                      "trainable.safetensors", "training_state.json"]
    fresh = _pipe(projection="text_proj")
    res_b = train_fusion(fresh, data, FusionConfig(steps=4, **cfg), resume_from=ckpt, progress=False)
    assert res_b.start_step == 2 and len(res_b.losses) == 4
    torch.testing.assert_close(torch.tensor(res_a.losses), torch.tensor(res_b.losses), rtol=1e-5, atol=1e-6)
    for (n, p), (_, q) in zip(straight.unet.named_parameters(), fresh.unet.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)
    params = {n: p for n, p in fresh.unet.named_parameters()}
    with pytest.raises(ValueError, match="do not match"):
        load_checkpoint(ckpt, params)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nowhere", params)


def test_fusion_config_validation():
    with pytest.raises(ValueError, match="p_image"):
        FusionConfig(p_image=1.5).validate()
    with pytest.raises(ValueError, match="batch_size"):
        FusionConfig(batch_size=0).validate()


def _semantic_setup(family):
    from hf_ext.diffusion.multifusion import InterleavedEncoder
    from hf_ext.diffusion.multifusion.tiny import tiny_image_processor, tiny_magma_encoder
    from hf_ext.testing import tiny_tokenizer

    model = tiny_magma_encoder(family)
    return model, InterleavedEncoder(model, tiny_tokenizer(), tiny_image_processor())


def _full_loss(enc):
    with torch.no_grad():
        a = enc.encode([[x] for x, _ in SENTENCE_PAIRS]).pooled()
        b = enc.encode([[y] for _, y in SENTENCE_PAIRS]).pooled()
        return info_nce(a, b, 0.05).item()


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_stage_a_bias_only_contrastive_tuning(family):
    model, enc = _semantic_setup(family)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss0 = _full_loss(enc)
    res = train_semantic(enc, SENTENCE_PAIRS, SemanticConfig(steps=15, batch_size=8, lr=1e-3), progress=False)
    assert _full_loss(enc) < loss0 - 0.1
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed and all(n.startswith("language_model.") and n.endswith(".bias") for n in changed)
    assert changed <= set(res.trainable)


def test_bitfit_on_a_bias_free_llama_suggests_lora_and_lora_starts_unchanged(red_image):
    from hf_ext.diffusion.mvader import enable_bitfit, enable_lora, trainable_parameter_names

    model, enc = _semantic_setup("llama")
    with pytest.raises(ValueError, match="enable_lora"):
        enable_bitfit(model)
    with torch.no_grad():
        ref = enc.encode(["hi", red_image]).hidden_states
    names = enable_lora(model, r=2)
    assert names and set(trainable_parameter_names(model)) == set(names) and all("lora_" in n for n in names)
    with torch.no_grad():
        torch.testing.assert_close(enc.encode(["hi", red_image]).hidden_states, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="at least 2"):
        train_semantic(enc, SENTENCE_PAIRS[:1], progress=False)
