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
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    rescale_noise_cfg,
    retrieve_timesteps,
)
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from hf_ext.utils.logging import get_logger

from ._common import (
    DEFAULT_SAFETY_CONCEPT,
    EMBEDS_CONCEPT,
    SafeLatentDiffusionPipelineOutput,
    check_size,
    concept_for_config,
    expand_concept_embeds,
    flag_unsafe,
    normalize_concepts,
    postprocess_unsafe,
    resolve_sld_config,
)
from .guidance import SLDConfig, SLDGuidanceRunner

logger = get_logger(__name__)

__all__ = ["DEFAULT_SAFETY_CONCEPT", "SafeLatentDiffusionPipeline", "SafeLatentDiffusionPipelineOutput"]


class _SLDConceptMixin:
    """``safety_concept`` stored in the pipeline config (a property over ``self.config.safety_concept``)."""

    @property
    def safety_concept(self) -> str | list[str]:
        """The default safety concept text (or list of texts) of this pipeline; saved with ``save_pretrained``."""
        return self.config.safety_concept

    @safety_concept.setter
    def safety_concept(self, concept: str | list[str]) -> None:
        self.register_to_config(safety_concept=concept_for_config(normalize_concepts(concept)))

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``DiffusionPipeline.save_pretrained`` plus a ``pipeline.py`` shim, so that plain diffusers can load the
        folder: ``DiffusionPipeline.from_pretrained(d, custom_pipeline=d, trust_remote_code=True)`` (hf_ext must be
        installed where it is loaded)."""
        from pathlib import Path

        super().save_pretrained(save_directory, *args, **kwargs)
        cls = type(self)
        Path(save_directory, "pipeline.py").write_text(
            f'"""Loads hf_ext\'s {cls.__name__} (needs `pip install "hf-ext[diffusion]"`)."""\n\n'
            f"from {cls.__module__} import {cls.__name__}  # noqa: F401\n", encoding="utf-8")

    @staticmethod
    def _warn_scheduler(scheduler) -> None:
        offset = getattr(getattr(scheduler, "config", None), "steps_offset", 1)
        if offset != 1:
            logger.info("scheduler %s has steps_offset=%s (SD checkpoints use 1); it is used as given. diffusers' SD "
                        "pipelines would silently rewrite it to 1.", type(scheduler).__name__, offset)

    def _sld_setup(self, guidance_scale, sld_preset, sld_kwargs, safety_concept):
        config = resolve_sld_config(sld_preset, sld_kwargs)
        concepts = normalize_concepts(self.config.safety_concept if safety_concept is None else safety_concept)
        cfg = self.do_classifier_free_guidance
        enabled = config.enabled and cfg
        if config.enabled and not cfg:
            logger.warning("SLD needs classifier-free guidance: guidance_scale=%s <= 1, so SLD is off for this call",
                           guidance_scale)
        return config, concepts, enabled


class SafeLatentDiffusionPipeline(_SLDConceptMixin, StableDiffusionPipeline):
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
        safety_concept: str | list[str] = DEFAULT_SAFETY_CONCEPT,
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
                                safety_concept=concept_for_config(normalize_concepts(safety_concept)))

    # ------------------------------------------------------------------ encoding
    def encode_safety_concept(self, concepts: Sequence[str], device, clip_skip: int | None = None) -> list[torch.Tensor]:
        """Encode each concept like a prompt (padded/truncated to the tokenizer's length) → list of ``(1, S, D)``."""
        out = []
        for concept in concepts:
            emb, _ = self.encode_prompt(concept, device, 1, False, None, clip_skip=clip_skip)
            out.append(emb)
        return out

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
        safety_concept: str | list[str] | None = None,
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
        if callback_on_step_end_tensor_inputs is None:
            callback_on_step_end_tensor_inputs = ["latents"]
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        check_size(height, width, 8)
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")
        self.check_inputs(prompt, height, width, None, negative_prompt, prompt_embeds, negative_prompt_embeds,
                          None, None, callback_on_step_end_tensor_inputs)
        self._guidance_scale = guidance_scale
        self._guidance_rescale = guidance_rescale
        self._clip_skip = clip_skip
        self._cross_attention_kwargs = cross_attention_kwargs
        self._interrupt = False

        sld_kwargs = dict(sld_guidance_scale=sld_guidance_scale, sld_warmup_steps=sld_warmup_steps,
                          sld_threshold=sld_threshold, sld_momentum_scale=sld_momentum_scale, sld_mom_beta=sld_mom_beta)
        config, concepts, sld_on = self._sld_setup(guidance_scale, sld_preset, sld_kwargs, safety_concept)
        cfg = self.do_classifier_free_guidance

        if prompt is not None and isinstance(prompt, str):
            batch_size = 1
        elif prompt is not None:
            batch_size = len(prompt)
        else:
            batch_size = prompt_embeds.shape[0]
        n_rows = batch_size * num_images_per_prompt
        device = self._execution_device

        lora_scale = cross_attention_kwargs.get("scale", None) if cross_attention_kwargs is not None else None
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, device, num_images_per_prompt, cfg, negative_prompt, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, lora_scale=lora_scale, clip_skip=clip_skip)

        concept_rows: list[torch.Tensor] = []
        if sld_on:
            if safety_concept_embeds is not None:
                raw = [safety_concept_embeds] if torch.is_tensor(safety_concept_embeds) else list(safety_concept_embeds)
                if not raw:
                    raise ValueError("safety_concept_embeds is an empty list; give at least one tensor")
                applied_concept: Any = concept_for_config(concepts) if safety_concept is not None else EMBEDS_CONCEPT
            else:
                raw = self.encode_safety_concept(concepts, device, clip_skip)
                applied_concept = concept_for_config(concepts)
            concept_rows = [expand_concept_embeds(e, batch_size, num_images_per_prompt, device, prompt_embeds.dtype)
                            for e in raw]
            for e in concept_rows:
                if e.shape[1:] != prompt_embeds.shape[1:]:
                    raise ValueError(f"safety concept embeds have shape {tuple(e.shape[1:])} per row but the prompt "
                                     f"embeds have {tuple(prompt_embeds.shape[1:])}; use the same text encoder/length")
        else:
            applied_concept = None
        n_concepts = len(concept_rows)

        if cfg:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds, *concept_rows])

        timesteps, num_inference_steps = retrieve_timesteps(self.scheduler, num_inference_steps, device, timesteps,
                                                            sigmas)
        latents = self.prepare_latents(n_rows, self.unet.config.in_channels, height, width, prompt_embeds.dtype,
                                       device, generator, latents)
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        timestep_cond = None
        if self.unet.config.time_cond_proj_dim is not None:
            gs_tensor = torch.tensor(self.guidance_scale - 1).repeat(n_rows)
            timestep_cond = self.get_guidance_scale_embedding(
                gs_tensor, embedding_dim=self.unet.config.time_cond_proj_dim).to(device=device, dtype=latents.dtype)

        runner = SLDGuidanceRunner(config, guidance_scale=guidance_scale, num_timesteps=len(timesteps),
                                   skip_warmup_concept=sld_skip_warmup_concept,
                                   return_diagnostics=return_sld_diagnostics) if sld_on else None
        num_warmup_steps = len(timesteps) - num_inference_steps * self.scheduler.order
        self._num_timesteps = len(timesteps)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                if not cfg:
                    n_branch = 1
                elif sld_on and runner.concept_needed(i):
                    n_branch = 2 + n_concepts
                else:
                    n_branch = 2
                embeds = prompt_embeds if n_branch * n_rows == prompt_embeds.shape[0] else prompt_embeds[:n_branch * n_rows]
                latent_model_input = torch.cat([latents] * n_branch) if cfg else latents
                if hasattr(self.scheduler, "scale_model_input"):
                    latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)
                noise_pred = self.unet(latent_model_input, t, encoder_hidden_states=embeds, timestep_cond=timestep_cond,
                                       cross_attention_kwargs=cross_attention_kwargs, return_dict=False)[0]
                if cfg:
                    chunks = noise_pred.chunk(n_branch)
                    noise_pred_uncond, noise_pred_text = chunks[0], chunks[1]
                    if sld_on:
                        noise_pred = runner(i, noise_pred_uncond, noise_pred_text, list(chunks[2:]) or None)
                    else:
                        noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
                    if guidance_rescale > 0.0:
                        noise_pred = rescale_noise_cfg(noise_pred, noise_pred_text, guidance_rescale=guidance_rescale)
                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]

                if callback_on_step_end is not None:
                    local = {"latents": latents, "prompt_embeds": prompt_embeds,
                             "negative_prompt_embeds": negative_prompt_embeds}
                    outputs = callback_on_step_end(self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs})
                    latents = outputs.pop("latents", latents)
                    prompt_embeds = outputs.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = outputs.pop("negative_prompt_embeds", negative_prompt_embeds)
                if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % self.scheduler.order == 0):
                    progress_bar.update()

        if output_type == "latent":
            image, has_nsfw, originals = latents, None, None
        else:
            image = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False,
                                    generator=generator)[0]
            image, has_nsfw, originals = flag_unsafe(self, image, device, prompt_embeds.dtype)
            do_denormalize = [True] * image.shape[0] if has_nsfw is None else [not f for f in has_nsfw]
            image = self.image_processor.postprocess(image, output_type=output_type, do_denormalize=do_denormalize)
        unsafe = postprocess_unsafe(self, originals, has_nsfw, output_type) if output_type != "latent" else None
        self.maybe_free_model_hooks()
        out = SafeLatentDiffusionPipelineOutput(
            images=image, nsfw_content_detected=has_nsfw, unsafe_images=unsafe,
            applied_safety_concept=applied_concept,
            sld_diagnostics=runner.diagnostics if (runner is not None and return_sld_diagnostics) else None)
        return out if return_dict else out.to_tuple()
