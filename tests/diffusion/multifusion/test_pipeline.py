"""MultiFusionPipeline / MVaderPipeline: output types, save/load round trip, guidance with image negatives, caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hf_ext.diffusion.multifusion import MultiFusionPipeline, tiny_multifusion_components
from hf_ext.diffusion.mvader import MVaderPipeline

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def _pipe(cls=MultiFusionPipeline, **kw):
    pipe = cls(**tiny_multifusion_components(**kw))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return _pipe()


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_output_types(pipe, red_image):
    prompt = [red_image, "a green apple"]
    pil = pipe(prompt, num_inference_steps=2, generator=_gen()).images
    arr = pipe(prompt, num_inference_steps=2, generator=_gen(), output_type="np").images
    lat = pipe(prompt, num_inference_steps=2, generator=_gen(), output_type="latent").images
    assert isinstance(pil[0], Image.Image) and pil[0].size == (32, 32)
    assert arr.shape == (1, 32, 32, 3) and 0 <= arr.min() and arr.max() <= 1
    assert lat.shape == (1, 4, 16, 16)
    np.testing.assert_allclose(np.asarray(pil[0]), (arr[0] * 255).round().astype(np.uint8), atol=1)
    two = pipe([[red_image, "x"], ["y"]], num_images_per_prompt=2, num_inference_steps=1, generator=_gen(),
               output_type="latent").images
    assert two.shape == (4, 4, 16, 16)


@pytest.mark.parametrize("kw", [dict(), dict(encoder="magma", family="gpt2"), dict(projection="text_proj")],
                         ids=["llava+projector", "magma+projector", "llava+text_proj"])
def test_save_load_round_trip_gives_identical_latents(tmp_path, red_image, kw):
    pipe = _pipe(**kw)
    prompt = [red_image, "a green apple"]
    before = pipe(prompt, weights=[1.0, 5.0], num_inference_steps=3, generator=_gen(7), output_type="latent").images
    pipe.save_pretrained(tmp_path)
    again = MultiFusionPipeline.from_pretrained(tmp_path)
    again.set_progress_bar_config(disable=True)
    assert type(again.encoder) is type(pipe.encoder)
    assert (again.projection is None) == (pipe.projection is None)
    after = again(prompt, weights=[1.0, 5.0], num_inference_steps=3, generator=_gen(7), output_type="latent").images
    assert torch.equal(before, after)


def test_guidance_with_image_and_multimodal_negatives(pipe, red_image, noise_image):
    neg_text = pipe.encode_prompt([[""]])
    torch.testing.assert_close(neg_text.hidden_states, pipe.interleaved_encoder().encode([""]).hidden_states)
    neg_img = pipe.encode_prompt([red_image])
    assert neg_img.hidden_states.shape[1] == 1 + pipe.interleaved_encoder().num_image_tokens
    base = pipe(["a green apple"], num_inference_steps=2, generator=_gen(), output_type="latent").images
    with_img = pipe(["a green apple"], negative_prompt=red_image, num_inference_steps=2, generator=_gen(),
                    output_type="latent").images
    multi = pipe(["a green apple"], negative_prompt=[noise_image, "blurry"], negative_weights=[1.0, 2.0],
                 num_inference_steps=2, generator=_gen(), output_type="latent").images
    assert torch.isfinite(with_img).all() and torch.isfinite(multi).all()
    assert not torch.allclose(base, with_img) and not torch.allclose(with_img, multi)


def test_cached_prompt_embeds_equal_uncached(pipe, red_image):
    prompt = [red_image, "a green apple"]
    cached = pipe.encode_prompt(prompt, weights=[1.0, 3.0])
    neg = pipe.encode_prompt([""])
    a = pipe(prompt, weights=[1.0, 3.0], num_inference_steps=2, generator=_gen(), output_type="latent").images
    b = pipe(prompt_embeds=cached, negative_prompt_embeds=neg, num_inference_steps=2, generator=_gen(),
             output_type="latent").images
    assert torch.equal(a, b)


def test_weights_and_cross_attention_weighting(pipe, red_image):
    prompt = [red_image, "a green apple"]
    kw = dict(num_inference_steps=2, output_type="latent", guidance_scale=3.0)
    plain = pipe(prompt, generator=_gen(), **kw).images
    ones = pipe(prompt, weights=[1.0, 1.0], cross_attention_weighting=True, generator=_gen(), **kw).images
    torch.testing.assert_close(plain, ones, rtol=1e-5, atol=1e-5)
    enc_only = pipe(prompt, weights=[1.0, 20.0], generator=_gen(), **kw).images
    both = pipe(prompt, weights=[1.0, 20.0], cross_attention_weighting=True, generator=_gen(), **kw).images
    assert not torch.allclose(plain, enc_only) and not torch.allclose(enc_only, both)


def test_no_guidance_path(pipe):
    out = pipe(["x"], guidance_scale=1.0, num_inference_steps=2, generator=_gen(), output_type="latent").images
    assert out.shape == (1, 4, 16, 16)


def test_bad_inputs(pipe, red_image):
    with pytest.raises(ValueError, match="output_type"):
        pipe(["x"], output_type="gif")
    with pytest.raises(ValueError, match="exactly one"):
        pipe()
    with pytest.raises(ValueError, match="2 items but 1 weights"):
        pipe(["x", red_image], weights=[1.0], num_inference_steps=1)
    with pytest.raises(ValueError, match="empty"):
        pipe([], num_inference_steps=1)
    with pytest.raises(ValueError, match="2 negative prompts for 1"):
        pipe(["x"], negative_prompt=[["a"], ["b"]], num_inference_steps=1)
    with pytest.raises(ValueError, match="multiples of 2"):
        pipe(["x"], height=33, num_inference_steps=1)
    comps = tiny_multifusion_components()
    comps["projection"] = None
    with pytest.raises(ValueError, match="cross_attention_dim"):
        MultiFusionPipeline(**comps)
    text = _pipe(encoder="text", family="gpt2")
    with pytest.raises(ValueError, match="image encoder"):
        text([red_image, "x"], num_inference_steps=1)


def test_mvader_pipeline(tmp_path, red_image, noise_image):
    mf = _pipe(encoder="magma", family="qwen2")
    mv = MVaderPipeline.from_multifusion(mf)
    assert mv.encoder is mf.encoder and mv.unet is mf.unet
    prompt = [red_image, "in the style of", noise_image]  # several images in one prompt
    a = mf(prompt, num_inference_steps=2, generator=_gen(), output_type="latent").images
    b = mv(prompt, num_inference_steps=2, generator=_gen(), output_type="latent").images
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="no per-item token weighting"):
        mv(prompt, weights=[1.0, 1.0, 1.0])
    with pytest.raises(TypeError, match="S-MAGMA"):
        MVaderPipeline(**tiny_multifusion_components())
    mv.save_pretrained(tmp_path)
    again = MVaderPipeline.from_pretrained(tmp_path)
    again.set_progress_bar_config(disable=True)
    assert torch.equal(again(prompt, num_inference_steps=2, generator=_gen(), output_type="latent").images, b)


def test_from_pipe_carries_the_components_over(red_image, caplog):
    """diffusers' ``from_pipe`` keeps a model component only when its type is in the target's ``__init__``
    annotations: with them, every component is shared and the outputs are the source pipeline's."""
    mf = _pipe(encoder="magma", family="llama")
    with caplog.at_level("WARNING", logger="diffusers"):
        mv = MVaderPipeline.from_pipe(mf)
    assert not [r for r in caplog.records if "not switched over" in r.getMessage()]
    assert all(getattr(mv, name) is getattr(mf, name) for name in ("encoder", "unet", "vae", "projection"))
    prompt = [red_image, "a red ball"]
    a = mf(prompt, num_inference_steps=2, generator=_gen(), output_type="latent").images
    b = mv(prompt, num_inference_steps=2, generator=_gen(), output_type="latent").images
    assert torch.equal(a, b)


@pytest.mark.gpu
def test_model_cpu_offload_on_gpu(red_image):
    pipe = _pipe()
    pipe.enable_model_cpu_offload()
    out = pipe([red_image, "x"], num_inference_steps=2, generator=_gen(), output_type="latent").images
    ref = _pipe().to("cuda")(["x"], num_inference_steps=1, output_type="latent").images
    assert out.shape == (1, 4, 16, 16) and ref.is_cuda


def test_component_loading_gotcha_counter_case(tmp_path, monkeypatch):
    """A projector module that only does ``import diffusers`` saves but does not reload (why ours imports by name)."""
    pkg = tmp_path / "gotcha_mod"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import diffusers\nimport torch\nfrom diffusers.configuration_utils import register_to_config\n\n\n"
        "class BadProjector(diffusers.ModelMixin, diffusers.ConfigMixin):\n"
        "    @register_to_config\n"
        "    def __init__(self, in_dim: int = 64, out_dim: int = 32, layer_norm: bool = True):\n"
        "        super().__init__()\n"
        "        self.linear = torch.nn.Linear(in_dim, out_dim)\n\n"
        "    def forward(self, x):\n"
        "        return self.linear(x)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from gotcha_mod import BadProjector

    comps = tiny_multifusion_components()
    comps["projection"] = BadProjector()
    pipe = MultiFusionPipeline(**comps)
    pipe.save_pretrained(tmp_path / "saved")
    with pytest.raises(ValueError, match="loading methods"):
        MultiFusionPipeline.from_pretrained(tmp_path / "saved")


def test_model_cpu_offload_hooks_give_identical_latents(red_image):
    """CPU offload (accelerate hooks on encoder -> projection -> unet -> vae); on CPU the hooks run but move nothing."""
    pipe = _pipe(encoder="magma", family="gpt2")
    ref = pipe([red_image, "x"], num_inference_steps=2, generator=_gen(), output_type="latent").images
    pipe.enable_model_cpu_offload(device="cpu")
    assert len(pipe._all_hooks) == 4
    out = pipe([red_image, "x"], num_inference_steps=2, generator=_gen(), output_type="latent").images
    assert torch.equal(ref, out)
