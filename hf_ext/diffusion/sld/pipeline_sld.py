"""``SafeLatentDiffusionPipeline``: maintained Safe Latent Diffusion for Stable Diffusion 1.x/2.x (ε and v prediction).

A drop-in replacement for diffusers' deprecated ``StableDiffusionPipelineSafe`` (same ``sld_*`` keywords, same
output fields, bit-identical latents for the same seed, scheduler and concept) built on ``StableDiffusionPipeline``'s
encoding, latent preparation and decoding, with the reference's bugs fixed (see the spec's §1.5):

1. ``unsafe_images`` has one entry per image (the reference hard-codes 2);
2. a single SLD step implementation with explicit argument names (the reference's dead ``perform_safety_guidance``
   swaps uncond/text);
3. the concept is encoded on the execution device (works under CPU offload);
4. ``safety_concept`` is part of the pipeline config, so it survives ``save_pretrained``/``from_pretrained``;
5. decoding divides by the VAE scaling factor exactly like ``StableDiffusionPipeline`` (SLD off → identical images);
6. the scheduler is used as given (no silent ``steps_offset``/``clip_sample`` rewrite).

It adds presets (:class:`~hf_ext.diffusion.sld.guidance.SLDConfig`), warm-up as a fraction, several concepts,
``prompt_embeds``/``negative_prompt_embeds``/``safety_concept_embeds``, ``callback_on_step_end``,
``output_type="latent"``, custom ``timesteps``/``sigmas``, ``guidance_rescale``, ``clip_skip``, per-step
diagnostics, and skips the concept branch during warm-up when the momentum scale is 0 (same result, less compute).

Example:
    >>> from hf_ext.diffusion.sld import SafeLatentDiffusionPipeline, SLDConfig
    >>> from hf_ext.testing import tiny_sd_components
    >>> pipe = SafeLatentDiffusionPipeline(**tiny_sd_components())
    >>> out = pipe("a cat", num_inference_steps=4, sld_preset=SLDConfig.MAX, output_type="np")
    >>> out.images.shape, out.applied_safety_concept.startswith("an image showing")
    ((1, 32, 32, 3), True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from hf_ext.utils.logging import get_logger

from ._common import (
    DEFAULT_SAFETY_CONCEPT,
    SafeLatentDiffusionPipelineOutput,
    concept_for_config,
    expand_concept_embeds,
    flag_unsafe,
    normalize_concept_specs,
    postprocess_unsafe,
)
from .guidance import SLDConcept, SLDConfig
from .pipeline_mixin import SLDPipelineMixin

logger = get_logger(__name__)

__all__ = ["DEFAULT_SAFETY_CONCEPT", "SafeLatentDiffusionPipeline", "SafeLatentDiffusionPipelineOutput"]


class SafeLatentDiffusionPipeline(SLDPipelineMixin, StableDiffusionPipeline):
    r"""Text-to-image with Safe Latent Diffusion for SD 1.x/2.x checkpoints (any scheduler, ε or v prediction).

    Components are those of ``StableDiffusionPipeline``; ``safety_checker``/``feature_extractor``/``image_encoder``
    are optional. ``safety_concept`` (``str`` or list of ``str``, default :data:`DEFAULT_SAFETY_CONCEPT`) is a
    config entry. Load any SD folder with ``SafeLatentDiffusionPipeline.from_pretrained(path)`` or convert a
    loaded pipeline with ``SafeLatentDiffusionPipeline.from_pipe(pipe)``.

    Per step the UNet runs **once** on the batch ``[uncond, prompt, concept_1 … concept_K]`` (each ``B·n`` rows):
    3·B·n with one concept, 2·B·n with SLD off (or during a skipped warm-up step), B·n without CFG.

    Example:
        >>> import torch
        >>> from hf_ext.testing import tiny_sd_components
        >>> pipe = SafeLatentDiffusionPipeline(**tiny_sd_components(), safety_concept="violence")
        >>> g = torch.Generator().manual_seed(0)
        >>> pipe(["a", "b"], num_inference_steps=2, generator=g, output_type="latent").images.shape
        torch.Size([2, 4, 16, 16])
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->unet->vae"
    _optional_components = ["safety_checker", "feature_extractor", "image_encoder"]
    _exclude_from_cpu_offload = ["safety_checker"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        safety_checker: StableDiffusionSafetyChecker = None,
        feature_extractor: CLIPImageProcessor = None,
        image_encoder: CLIPVisionModelWithProjection = None,
        requires_safety_checker: bool = False,
        safety_concept: str | SLDConcept | list[str | SLDConcept | dict] = DEFAULT_SAFETY_CONCEPT,
    ):
        # Deliberately not StableDiffusionPipeline.__init__: it rewrites the scheduler's config in place.
        DiffusionPipeline.__init__(self)
        if safety_checker is not None and feature_extractor is None:
            raise ValueError("a safety_checker needs a feature_extractor (CLIPImageProcessor); pass one, or "
                             "safety_checker=None")
        self._warn_scheduler(scheduler)
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                              safety_checker=safety_checker, feature_extractor=feature_extractor,
                              image_encoder=image_encoder)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if getattr(self, "vae", None) else 8
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.register_to_config(requires_safety_checker=requires_safety_checker,
                                safety_concept=concept_for_config(normalize_concept_specs(safety_concept)))

    # ------------------------------------------------------------------ encoding
    def encode_safety_concept(self, concepts: Sequence[str], device: torch.device | str,
                              clip_skip: int | None = None) -> list[torch.Tensor]:
        """Encode each concept like a prompt (padded/truncated to the tokenizer's length) → list of ``(1, S, D)``
        on ``device`` (``clip_skip``: CLIP layers skipped from the end, as in ``encode_prompt``)."""
        out = []
        for concept in concepts:
            emb, _ = self.encode_prompt(concept, device, 1, False, None, clip_skip=clip_skip)
            out.append(emb)
        return out

    @staticmethod
    def _concept_embeds_list(safety_concept_embeds: Any) -> list[torch.Tensor]:
        raw = [safety_concept_embeds] if torch.is_tensor(safety_concept_embeds) else list(safety_concept_embeds)
        if not raw:
            raise ValueError("safety_concept_embeds is an empty list; give at least one tensor")
        return raw

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        guidance_scale: float = 7.5,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        safety_concept: str | SLDConcept | list[str | SLDConcept] | None = None,
        safety_concept_embeds: torch.Tensor | list[torch.Tensor] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        guidance_rescale: float = 0.0,
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
        r"""Generate images with SLD.

        Args:
            prompt: text or list of texts (or pass ``prompt_embeds`` ``(B, S, D)``).
            height, width: image size in pixels (multiples of 8; default from the UNet's ``sample_size``).
            num_inference_steps, timesteps, sigmas: the schedule (see ``StableDiffusionPipeline``).
            guidance_scale: s_g; SLD needs ``> 1`` (classifier-free guidance).
            negative_prompt / negative_prompt_embeds: replaces the "" unconditional branch.
            num_images_per_prompt: n; the UNet batch is (2 + K)·B·n with K concepts.
            generator, latents, eta: as in diffusers.
            safety_concept: per-call concept text(s); default ``self.safety_concept``.
            safety_concept_embeds: pre-computed concept embeddings, a ``(1 or B, S, D)`` tensor or a list of them
                (one per concept; a batch-B tensor gives a per-sample concept). Overrides ``safety_concept``.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            return_dict: ``False`` returns diffusers' 4-tuple ``(images, nsfw, applied_concept, unsafe_images)``.
            cross_attention_kwargs, guidance_rescale, clip_skip: as in ``StableDiffusionPipeline``.
            callback_on_step_end: ``fn(pipe, i, t, tensors) -> dict`` after each scheduler step (may replace
                ``latents``); tensors named in ``callback_on_step_end_tensor_inputs`` (default ``["latents"]``).
            sld_preset: a preset name (``"weak"``, ``"weak_diffusers"``, ``"medium"``, ``"strong"``, ``"max"``,
                ``"off"``), an :class:`SLDConfig` or a dict; default Medium (diffusers' defaults).
            sld_guidance_scale, sld_warmup_steps, sld_threshold, sld_momentum_scale, sld_mom_beta: diffusers'
                keywords; when given they override the preset. ``sld_warmup_steps`` may be a float fraction.
            sld_skip_warmup_concept: skip the concept branch during warm-up when ``sld_momentum_scale == 0``.
            return_sld_diagnostics: fill ``sld_diagnostics`` in the output.

        Returns:
            :class:`SafeLatentDiffusionPipelineOutput` or the 4-tuple.
        """
        # 0. Default height and width to unet
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor

        # 1. Check inputs. Raise error if not correct
        callback_on_step_end_tensor_inputs = self._start_call(
            height, width, output_type, callback_on_step_end_tensor_inputs, guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale, clip_skip=clip_skip, cross_attention_kwargs=cross_attention_kwargs)
        self.check_inputs(prompt, height, width, None, negative_prompt, prompt_embeds, negative_prompt_embeds,
                          None, None, callback_on_step_end_tensor_inputs)

        # 2. Define call parameters
        sld_kwargs = dict(sld_guidance_scale=sld_guidance_scale, sld_warmup_steps=sld_warmup_steps,
                          sld_threshold=sld_threshold, sld_momentum_scale=sld_momentum_scale, sld_mom_beta=sld_mom_beta)
        base, concepts, sld_on = self._sld_setup(guidance_scale, sld_preset, sld_kwargs, safety_concept)
        cfg = self.do_classifier_free_guidance
        batch_size, n_rows, device = self._call_parameters(prompt, prompt_embeds, num_images_per_prompt)

        # 3. Encode input prompt and the safety concepts: rows [uncond, prompt, concept_1 … concept_K]
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, device, num_images_per_prompt, cfg, negative_prompt, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, lora_scale=self._lora_scale, clip_skip=clip_skip)
        raw, configs, applied_concept = self._safety_concept_inputs(sld_on, base, concepts, safety_concept,
                                                                    safety_concept_embeds, device, clip_skip)
        concept_rows = [expand_concept_embeds(e, batch_size, num_images_per_prompt, device, prompt_embeds.dtype)
                        for e in raw]
        for e in concept_rows:
            if e.shape[1:] != prompt_embeds.shape[1:]:
                raise ValueError(f"safety concept embeds have shape {tuple(e.shape[1:])} per row but the prompt "
                                 f"embeds have {tuple(prompt_embeds.shape[1:])}; use the same text encoder/length")
        if cfg:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds, *concept_rows])

        # 4. Prepare timesteps and 5. latent variables
        timesteps, num_inference_steps, latents = self._timesteps_and_latents(
            num_inference_steps, timesteps, sigmas, n_rows, height, width, prompt_embeds.dtype, device, generator, latents)

        # 6. Prepare extra step kwargs and the guidance-scale embedding
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        timestep_cond = self._timestep_cond(n_rows, device, latents.dtype)

        # 7. Denoising loop
        runner = self._runner(configs, guidance_scale, len(timesteps), sld_skip_warmup_concept,
                              return_sld_diagnostics)
        state = {"latents": latents, "prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_prompt_embeds}
        latents = self._denoise(timesteps, num_inference_steps, state,
                                unet_inputs={"encoder_hidden_states": "prompt_embeds"}, runner=runner, n_rows=n_rows,
                                n_concepts=len(concept_rows), extra_step_kwargs=extra_step_kwargs,
                                timestep_cond=timestep_cond, callback_on_step_end=callback_on_step_end,
                                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs)

        # 8. Decode and run the safety checker
        if output_type == "latent":
            image, has_nsfw, unsafe = latents, None, None
        else:
            image = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False,
                                    generator=generator)[0]
            image, has_nsfw, originals = flag_unsafe(self, image, device, state["prompt_embeds"].dtype)
            do_denormalize = [True] * image.shape[0] if has_nsfw is None else [not f for f in has_nsfw]
            image = self.image_processor.postprocess(image, output_type=output_type, do_denormalize=do_denormalize)
            unsafe = postprocess_unsafe(self, originals, has_nsfw, output_type)
        return self._sld_output(image, has_nsfw, unsafe, applied_concept, runner, return_sld_diagnostics, return_dict)
