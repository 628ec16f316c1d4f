"""Seeded tiny MultiFusion / M-VADER components (offline, CPU, fp32) for tests, the tour, notebooks and benchmarks.

Example:
    >>> from hf_ext.diffusion.multifusion import MultiFusionPipeline
    >>> pipe = MultiFusionPipeline(**tiny_multifusion_components(encoder="magma", family="gpt2"))
    >>> type(pipe.encoder).__name__, pipe.unet.config.cross_attention_dim
    ('MagmaEncoder', 32)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import CLIPImageProcessorPil, CLIPVisionModel

    from .modeling_multifusion import MagmaEncoder

ENCODER_KINDS = ("llava", "magma", "text")
PROJECTION_KINDS = ("module", "text_proj")


def tiny_vision_tower(seed: int = 0) -> CLIPVisionModel:
    """A seeded tiny ``CLIPVisionModel`` (hidden 32, 2 layers, 32×32 images, 8×8 patches → 16 patch tokens)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, projection_dim=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPVisionModel(cfg).eval()


def tiny_image_processor() -> CLIPImageProcessorPil:
    """A PIL CLIP image processor resizing / cropping to 32×32 (the tiny towers' input size)."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def tiny_magma_encoder(family: str = "llama", seed: int = 0, *, adapter_downsample: int | None = 4,
                       adapter_location: str = "mlp", **lm_kwargs: Any) -> MagmaEncoder:
    """A :class:`~.modeling_multifusion.MagmaEncoder` over a tiny causal LM of ``family`` and :func:`tiny_vision_tower`.

    ``lm_kwargs`` go to :func:`hf_ext.tiny.tiny_causal_lm` (``hidden_size``, ``num_layers`` …).
    """
    from hf_ext.tiny import tiny_causal_lm

    from .modeling_multifusion import MagmaEncoder

    lm = tiny_causal_lm(family, seed=seed, **lm_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        enc = MagmaEncoder.from_parts(lm, tiny_vision_tower(seed), adapter_downsample=adapter_downsample,
                                      adapter_location=adapter_location)
    return enc.eval()


def tiny_multifusion_components(seed: int = 0, *, encoder: str = "llava", family: str = "llama",
                                projection: str = "module", encoder_layer: int = -1) -> dict[str, Any]:
    """Components of a tiny :class:`~.pipeline_multifusion.MultiFusionPipeline`.

    Args:
        seed: weights are a deterministic function of it.
        encoder: ``"llava"`` (:func:`hf_ext.testing.tiny_llava`), ``"magma"`` (:func:`tiny_magma_encoder` over
            ``family``) or ``"text"`` (a bare tiny causal LM, text-only prompts).
        family: causal-LM family of the ``magma`` / ``text`` encoders.
        projection: ``"module"`` (a :class:`MultiFusionProjector` 64 → 32 in front of the tiny SD UNet) or
            ``"text_proj"`` (the UNet built with ``encoder_hid_dim=64, encoder_hid_dim_type="text_proj"``).
        encoder_layer: stored in the pipeline config.

    Returns:
        ``dict(encoder, tokenizer, image_processor, projection, unet, vae, scheduler, encoder_layer)``; the UNet, VAE
        and scheduler are those of :func:`hf_ext.testing.tiny_sd_components` (cross-attention width 32, 32×32 images).
    """
    from diffusers import UNet2DConditionModel

    from hf_ext.tiny import tiny_causal_lm, tiny_llava, tiny_sd_components, tiny_tokenizer

    from .modeling_multifusion import MultiFusionProjector

    if encoder not in ENCODER_KINDS:
        raise ValueError(f"encoder={encoder!r} is not one of {ENCODER_KINDS}")
    if projection not in PROJECTION_KINDS:
        raise ValueError(f"projection={projection!r} is not one of {PROJECTION_KINDS}")
    sd = tiny_sd_components(seed)
    if encoder == "llava":
        model, processor = tiny_llava(seed)
        tokenizer, image_processor = processor.tokenizer, processor.image_processor
    elif encoder == "magma":
        model, tokenizer, image_processor = tiny_magma_encoder(family, seed), tiny_tokenizer(), tiny_image_processor()
    else:
        model, tokenizer, image_processor = tiny_causal_lm(family, seed=seed), tiny_tokenizer(), None
    d_lm = model.hidden_size if encoder == "magma" else model.config.get_text_config().hidden_size
    unet = sd["unet"]
    proj = None
    if projection == "module":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 2)
            proj = MultiFusionProjector(d_lm, unet.config.cross_attention_dim).eval()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            params = {k: v for k, v in unet.config.items() if not k.startswith("_")}
            unet = UNet2DConditionModel(**{**params, "encoder_hid_dim": d_lm, "encoder_hid_dim_type": "text_proj"}).eval()
    return dict(encoder=model, tokenizer=tokenizer, image_processor=image_processor, projection=proj, unet=unet,
                vae=sd["vae"], scheduler=sd["scheduler"], encoder_layer=encoder_layer)
