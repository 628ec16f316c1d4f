"""``SafeLatentDiffusionXLPipeline``: Safe Latent Diffusion for SDXL (two text encoders, pooled embeds, time ids).

The safety concept is encoded like a prompt by both text encoders, so it supplies ``prompt_embeds`` **and**
``pooled_prompt_embeds``; the micro-conditioning ``add_time_ids`` of the concept branch are the prompt's. One UNet
call per step on ``[uncond, prompt, concept…]``. With SLD off the latents equal ``StableDiffusionXLPipeline``'s.

Note: s_S and λ are scale-dependent; the SD 1.x presets transfer to SDXL's ε-prediction UNet only approximately
(the paper tuned them on SD 1.4).

Example:
    >>> from hf_ext.diffusion.sld import SafeLatentDiffusionXLPipeline
    >>> from hf_ext.testing import tiny_sdxl_components
    >>> pipe = SafeLatentDiffusionXLPipeline(**tiny_sdxl_components())
    >>> pipe("a cat", num_inference_steps=2, sld_preset="max", output_type="latent").images.shape
    torch.Size([1, 4, 16, 16])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import (
    CLIPImageProcessor,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
)

from hf_ext.utils.logging import get_logger

from ._common import (
    DEFAULT_SAFETY_CONCEPT,
    concept_for_config,
    expand_concept_embeds,
    normalize_concept_specs,
)
from .guidance import SLDConcept, SLDConfig
from .pipeline_mixin import SLDPipelineMixin

logger = get_logger(__name__)

__all__ = ["SafeLatentDiffusionXLPipeline"]


class SafeLatentDiffusionXLPipeline(SLDPipelineMixin, StableDiffusionXLPipeline):
    r"""SDXL text-to-image with Safe Latent Diffusion (same keywords and presets as
    :class:`~hf_ext.diffusion.sld.SafeLatentDiffusionPipeline`).

    ``safety_concept`` is a config entry (saved with the pipeline). The concept branch reuses the prompt's
    ``add_time_ids`` and the concept's own pooled embedding; ``safety_concept_embeds`` may be a pair
    ``(embeds (1|B, S, D), pooled (1|B, P))`` or a list of such pairs.

    Example:
        >>> import torch
        >>> from hf_ext.testing import tiny_sdxl_components
        >>> pipe = SafeLatentDiffusionXLPipeline(**tiny_sdxl_components(), safety_concept=["violence", "nudity"])
        >>> g = torch.Generator().manual_seed(0)
        >>> out = pipe("a cat", num_inference_steps=2, generator=g, sld_warmup_steps=0, output_type="np")
        >>> out.images.shape, out.applied_safety_concept
        ((1, 32, 32, 3), ['violence', 'nudity'])
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        text_encoder_2: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        tokenizer_2: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        image_encoder: CLIPVisionModelWithProjection = None,
        feature_extractor: CLIPImageProcessor = None,
        force_zeros_for_empty_prompt: bool = True,
        add_watermarker: bool | None = None,
        safety_concept: str | SLDConcept | list[str | SLDConcept | dict] = DEFAULT_SAFETY_CONCEPT,
    ):
        super().__init__(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                         tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, image_encoder=image_encoder,
                         feature_extractor=feature_extractor, force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
                         add_watermarker=add_watermarker)
        self.register_to_config(safety_concept=concept_for_config(normalize_concept_specs(safety_concept)))

    def encode_safety_concept(self, concepts: Sequence[str], device: torch.device | str,
                              clip_skip: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Encode each concept with both text encoders → list of ``(embeds (1, S, D), pooled (1, P))`` on ``device``
        (``clip_skip``: CLIP layers skipped from the end, as in ``encode_prompt``)."""
        out = []
        for concept in concepts:
            emb, _, pooled, _ = self.encode_prompt(prompt=concept, prompt_2=concept, device=device,
                                                   num_images_per_prompt=1, do_classifier_free_guidance=False,
                                                   clip_skip=clip_skip)
            out.append((emb, pooled))
        return out

    @staticmethod
    def _concept_embeds_list(safety_concept_embeds: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        pairs = [safety_concept_embeds] if isinstance(safety_concept_embeds, tuple) else list(safety_concept_embeds)
        if not pairs or not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
            raise ValueError("safety_concept_embeds for SDXL must be a (embeds, pooled) pair or a non-empty "
                             "list of such pairs")
        return pairs

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        prompt_2: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        guidance_scale: float = 5.0,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_2: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        safety_concept: str | SLDConcept | list[str | SLDConcept] | None = None,
        safety_concept_embeds: Any = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        guidance_rescale: float = 0.0,
        original_size: tuple[int, int] | None = None,
        crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
        clip_skip: int | None = None,
        callback_on_step_end: Callable[[Any, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        sld_preset: str | SLDConfig | dict | None = None,
        sld_guidance_scale: float | None = None,
        sld_warmup_steps: int | float | None = None,
        sld_threshold: float | None = None,
        sld_momentum_scale: float | None = None,
        sld_mom_beta: float | None = None,
        sld_skip_warmup_concept: bool = True,
        return_sld_diagnostics: bool = False,
    ):
        r"""Generate SDXL images with SLD. Arguments as ``StableDiffusionXLPipeline`` plus the SLD ones of
        :meth:`SafeLatentDiffusionPipeline.__call__` (``safety_concept``, ``safety_concept_embeds``, ``sld_preset``,
        ``sld_*``, ``sld_skip_warmup_concept``, ``return_sld_diagnostics``). ``guidance_scale`` defaults to 5.0 as
        in diffusers' SDXL pipeline. Returns :class:`SafeLatentDiffusionPipelineOutput` (``nsfw_content_detected``
        and ``unsafe_images`` are ``None``: SDXL has no safety checker) or its 4-tuple.
        """
        # 0. Default height and width to unet
        height = height or self.default_sample_size * self.vae_scale_factor
        width = width or self.default_sample_size * self.vae_scale_factor
        original_size = original_size or (height, width)
        target_size = target_size or (height, width)

        # 1. Check inputs. Raise error if not correct
        callback_on_step_end_tensor_inputs = self._start_call(
            height, width, output_type, callback_on_step_end_tensor_inputs, guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale, clip_skip=clip_skip, cross_attention_kwargs=cross_attention_kwargs)
        self._denoising_end = None
        self.check_inputs(prompt, prompt_2, height, width, None, negative_prompt, negative_prompt_2, prompt_embeds,
                          negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds, None, None,
                          callback_on_step_end_tensor_inputs)

        # 2. Define call parameters
        sld_kwargs = dict(sld_guidance_scale=sld_guidance_scale, sld_warmup_steps=sld_warmup_steps,
                          sld_threshold=sld_threshold, sld_momentum_scale=sld_momentum_scale, sld_mom_beta=sld_mom_beta)
        base, concepts, sld_on = self._sld_setup(guidance_scale, sld_preset, sld_kwargs, safety_concept)
        cfg = self.do_classifier_free_guidance
        batch_size, n_rows, device = self._call_parameters(prompt, prompt_embeds, num_images_per_prompt)

        # 3. Encode input prompt and the safety concepts (both text encoders: embeds and pooled embeds)
        (prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds,
         negative_pooled_prompt_embeds) = self.encode_prompt(
            prompt=prompt, prompt_2=prompt_2, device=device, num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=cfg, negative_prompt=negative_prompt, negative_prompt_2=negative_prompt_2,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds, negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            lora_scale=self._lora_scale, clip_skip=clip_skip)
        pairs, configs, applied_concept = self._safety_concept_inputs(sld_on, base, concepts, safety_concept,
                                                                      safety_concept_embeds, device, clip_skip)
        concept_rows: list[torch.Tensor] = []
        concept_pooled: list[torch.Tensor] = []
        for emb, pooled in pairs:
            concept_rows.append(expand_concept_embeds(emb, batch_size, num_images_per_prompt, device,
                                                      prompt_embeds.dtype))
            pooled = pooled.unsqueeze(0) if pooled.dim() == 1 else pooled
            concept_pooled.append(expand_concept_embeds(pooled.unsqueeze(1), batch_size, num_images_per_prompt,
                                                        device, prompt_embeds.dtype).squeeze(1))
        n_concepts = len(concept_rows)

        # 4. Prepare timesteps and 5. latent variables
        timesteps, num_inference_steps, latents = self._timesteps_and_latents(
            num_inference_steps, timesteps, sigmas, n_rows, height, width, prompt_embeds.dtype, device, generator, latents)

        # 6. Prepare extra step kwargs
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # 7. Prepare added time ids & embeddings: the concept rows reuse the prompt's time ids
        if self.text_encoder_2 is None:
            projection_dim = int(pooled_prompt_embeds.shape[-1])
        else:
            projection_dim = self.text_encoder_2.config.projection_dim
        add_time_ids = self._get_add_time_ids(original_size, crops_coords_top_left, target_size,
                                              dtype=prompt_embeds.dtype, text_encoder_projection_dim=projection_dim)
        add_time_ids = add_time_ids.to(device).repeat(n_rows, 1)
        add_text_embeds = pooled_prompt_embeds
        if cfg:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds, *concept_rows], dim=0)
            add_text_embeds = torch.cat([negative_pooled_prompt_embeds, add_text_embeds, *concept_pooled], dim=0)
            add_time_ids = torch.cat([add_time_ids] * (2 + n_concepts), dim=0)
        prompt_embeds = prompt_embeds.to(device)
        add_text_embeds = add_text_embeds.to(device)

        # 8. Denoising loop
        timestep_cond = self._timestep_cond(n_rows, device, latents.dtype)
        runner = self._runner(configs, guidance_scale, len(timesteps), sld_skip_warmup_concept,
                              return_sld_diagnostics)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        state = {"latents": latents, "prompt_embeds": prompt_embeds, "add_text_embeds": add_text_embeds,
                 "add_time_ids": add_time_ids}
        latents = self._denoise(timesteps, num_inference_steps, state,
                                unet_inputs={"encoder_hidden_states": "prompt_embeds", "text_embeds": "add_text_embeds",
                                             "time_ids": "add_time_ids"},
                                runner=runner, n_rows=n_rows, n_concepts=n_concepts,
                                extra_step_kwargs=extra_step_kwargs, timestep_cond=timestep_cond,
                                callback_on_step_end=callback_on_step_end,
                                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs)

        # 9. Decode (upcast the VAE where needed, undo the latent statistics, watermark)
        image = latents if output_type == "latent" else self._decode_latents(latents, output_type)
        return self._sld_output(image, None, None, applied_concept, runner, return_sld_diagnostics, return_dict)

    def _decode_latents(self, latents: torch.Tensor, output_type: str):
        needs_upcasting = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
        if needs_upcasting:
            self.upcast_vae()
            latents = latents.to(next(iter(self.vae.post_quant_conv.parameters())).dtype)
        has_mean = getattr(self.vae.config, "latents_mean", None) is not None
        has_std = getattr(self.vae.config, "latents_std", None) is not None
        if has_mean and has_std:
            mean = torch.tensor(self.vae.config.latents_mean).view(1, 4, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(self.vae.config.latents_std).view(1, 4, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std / self.vae.config.scaling_factor + mean
        else:
            latents = latents / self.vae.config.scaling_factor
        image = self.vae.decode(latents, return_dict=False)[0]
        if needs_upcasting:
            self.vae.to(dtype=torch.float16)
        if self.watermark is not None:
            image = self.watermark.apply_watermark(image)
        return self.image_processor.postprocess(image, output_type=output_type)
