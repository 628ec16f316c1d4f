"""The body the SD and SDXL Safe Latent Diffusion pipelines share: safety concepts, SLD set-up and the denoising loop.

:class:`SLDPipelineMixin` sits in front of diffusers' ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline``
in the two pipelines' bases. Where diffusers keeps near-identical pipelines in step with ``# Copied from``
comments (checked by its ``make fix-copies``), hf_ext has no such checker, so the common steps live here once and
each pipeline's ``__call__`` is its numbered list of steps (as diffusers writes them), calling these for the shared
ones: prompt batch size, the safety-concept embeddings, the guidance-scale embedding, the denoising loop with one
UNet call per step on ``[uncond, prompt, concept_1 … concept_K]`` and the output.

What differs stays in the pipelines: SDXL's second text encoder, pooled embeddings and micro-conditioning time ids
(passed to the loop as extra UNet inputs), and the decoding (SD's safety checker, SDXL's VAE upcast, latent
statistics and watermark).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    rescale_noise_cfg,
    retrieve_timesteps,
)

from hf_ext.utils.logging import get_logger
from hf_ext.utils.saving import atomic_directory, local_folder, verify_manifest
from hf_ext.utils.validation import check_size as check_count

from ._common import (
    EMBEDS_CONCEPT,
    SafeLatentDiffusionPipelineOutput,
    check_size,
    concept_for_config,
    concept_label,
    concepts_from_config,
    normalize_concept_specs,
    resolve_sld_config,
)
from .guidance import SLDConcept, SLDConfig, SLDGuidanceRunner

logger = get_logger(__name__)

__all__ = ["SLDPipelineMixin"]


class SLDPipelineMixin:
    """What a Safe Latent Diffusion pipeline adds to a diffusers Stable Diffusion pipeline (see the module doc).

    ``safety_concept`` is stored in the pipeline config (a property over ``self.config.safety_concept``), so it
    survives ``save_pretrained``/``from_pretrained``. A pipeline using the mixin implements
    ``encode_safety_concept(concepts, device, clip_skip) -> list`` and ``_concept_embeds_list(embeds) -> list``
    (the caller's ``safety_concept_embeds`` as that list, validated).
    """

    # ------------------------------------------------------------------ the safety concept in the config
    @property
    def safety_concept(self) -> str | list[str | SLDConcept]:
        """The default safety concept(s) of this pipeline: a text, or a list of texts and :class:`SLDConcept`
        (concepts with their own hyperparameters); saved with ``save_pretrained``."""
        return concepts_from_config(self.config.safety_concept)

    @safety_concept.setter
    def safety_concept(self, concept: str | SLDConcept | list[str | SLDConcept]) -> None:
        self.register_to_config(safety_concept=concept_for_config(normalize_concept_specs(concept)))

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """``DiffusionPipeline.save_pretrained`` plus the pipeline's code, vendored (:func:`hf_ext.vendoring.
        vendor_pipeline`): plain diffusers loads the folder with ``DiffusionPipeline.from_pretrained(d,
        trust_remote_code=True)``, where hf_ext need not be installed. ``<ThisClass>.from_pretrained(d)`` keeps
        loading hf_ext's own class (no remote code). Written atomically (:mod:`hf_ext.utils.saving`): an interrupted
        save leaves the previous pipeline."""
        from hf_ext.vendoring import vendor_pipeline

        with atomic_directory(save_directory) as staging:
            super().save_pretrained(staging, *args, **kwargs)
            vendor_pipeline(type(self), staging)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Self:
        """``from_pretrained`` after :func:`~hf_ext.utils.saving.verify_manifest` on a local folder (an interrupted
        save raises :class:`~hf_ext.utils.saving.ArtifactIntegrityError` instead of loading a mix)."""
        folder = local_folder(pretrained_model_name_or_path)
        if folder is not None:
            verify_manifest(folder)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def load_config(cls, *args: Any, **kwargs: Any) -> dict[str, Any] | tuple[dict[str, Any], ...]:
        """``ConfigMixin.load_config``; a folder's custom-pipeline ``_class_name`` (``["pipeline", name]``) is read as
        this class, so that loading through this class does not switch to the folder's vendored copy."""
        out = super().load_config(*args, **kwargs)
        config = out[0] if isinstance(out, tuple) else out
        if isinstance(config.get("_class_name"), (list, tuple)):
            config["_class_name"] = cls.__name__
        return out

    @staticmethod
    def _warn_scheduler(scheduler) -> None:
        offset = getattr(getattr(scheduler, "config", None), "steps_offset", 1)
        if offset != 1:
            logger.info("scheduler %s has steps_offset=%s (SD checkpoints use 1); it is used as given. diffusers' SD "
                        "pipelines would silently rewrite it to 1.", type(scheduler).__name__, offset)

    # ------------------------------------------------------------------ steps of __call__
    def _start_call(self, height: int, width: int, output_type: str, callback_on_step_end_tensor_inputs: list | None,
                    *, guidance_scale: float, guidance_rescale: float, clip_skip: int | None,
                    cross_attention_kwargs: dict[str, Any] | None) -> list[str]:
        """Check the image size and output type, set the per-call state diffusers' properties read, and return the
        step-end callback's tensor names (default ``["latents"]``)."""
        check_size(height, width, 8)
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")
        self._guidance_scale = guidance_scale
        self._guidance_rescale = guidance_rescale
        self._clip_skip = clip_skip
        self._cross_attention_kwargs = cross_attention_kwargs
        self._interrupt = False
        return ["latents"] if callback_on_step_end_tensor_inputs is None else callback_on_step_end_tensor_inputs

    @property
    def _lora_scale(self) -> float | None:
        """The LoRA scale of this call (``cross_attention_kwargs["scale"]``), as diffusers' ``encode_prompt`` takes it."""
        kwargs = self._cross_attention_kwargs
        return kwargs.get("scale", None) if kwargs is not None else None

    def _sld_setup(self, guidance_scale: float, sld_preset: Any, sld_kwargs: Mapping[str, Any],
                   safety_concept: Any) -> tuple[SLDConfig, list[SLDConcept], bool]:
        """``(base config, concepts, enabled)``: the call's resolved preset, the concepts (per-call or the
        pipeline's) and whether SLD may run (some concept enabled, and classifier-free guidance on)."""
        base = resolve_sld_config(sld_preset, dict(sld_kwargs))
        specs = normalize_concept_specs(self.config.safety_concept if safety_concept is None else safety_concept)
        cfg = self.do_classifier_free_guidance
        wanted = base.enabled or any(s.resolve(base).enabled for s in specs)
        if wanted and not cfg:
            logger.warning("SLD needs classifier-free guidance: guidance_scale=%s <= 1, so SLD is off for this call",
                           guidance_scale)
        return base, specs, wanted and cfg

    def _call_parameters(self, prompt: str | list[str] | None, prompt_embeds: torch.Tensor | None,
                         num_images_per_prompt: int) -> tuple[int, int, torch.device]:
        """``(B, B·n, execution device)`` of a call."""
        if prompt is not None and isinstance(prompt, str):
            batch_size = 1
        elif prompt is not None:
            batch_size = len(prompt)
        else:
            batch_size = prompt_embeds.shape[0]
        return batch_size, batch_size * num_images_per_prompt, self._execution_device

    def _safety_concept_inputs(self, sld_on: bool, base: SLDConfig, specs: Sequence[SLDConcept], safety_concept: Any,
                               safety_concept_embeds: Any, device, clip_skip: int | None) -> tuple[list, list, Any]:
        """``(per-concept embeddings, per-concept configs, applied_safety_concept)`` of the concepts that run: the
        caller's ``safety_concept_embeds`` or the encoded concept texts. A concept whose s_S is ≤ 1 is left out;
        with none left (or ``sld_on`` False) SLD is off and the lists are empty."""
        if not sld_on:
            return [], [], None
        if safety_concept_embeds is not None:
            raw = self._concept_embeds_list(safety_concept_embeds)
            if safety_concept is not None and len(specs) == len(raw):
                configs = [s.resolve(base) for s in specs]
            elif safety_concept is not None and any(s.overrides() for s in specs):
                raise ValueError(f"safety_concept has {len(specs)} concept(s) with their own hyperparameters but "
                                 f"safety_concept_embeds has {len(raw)}; give one SLDConcept per embedding")
            else:
                configs = [base] * len(raw)
            keep = [i for i, c in enumerate(configs) if c.enabled]
            if safety_concept is None:
                label = EMBEDS_CONCEPT
            else:
                label = concept_label([specs[i] for i in keep] if len(specs) == len(raw) else specs)
            embeds = [raw[i] for i in keep]
        else:
            configs = [s.resolve(base) for s in specs]
            keep = [i for i, c in enumerate(configs) if c.enabled]
            label = concept_label([specs[i] for i in keep]) if keep else None
            embeds = self.encode_safety_concept([specs[i].text for i in keep], device, clip_skip) if keep else []
        if not keep:
            logger.info("every safety concept has sld guidance_scale <= 1: SLD is off for this call")
            return [], [], None
        return embeds, [configs[i] for i in keep], label

    def _timesteps_and_latents(self, num_inference_steps: int, timesteps, sigmas, n_rows: int, height: int, width: int,
                               dtype: torch.dtype, device, generator, latents: torch.Tensor | None):
        """``(timesteps, num_inference_steps, latents)``: the scheduler's schedule and the initial latents."""
        if timesteps is None and sigmas is None:  # else the schedule's own length counts
            check_count("num_inference_steps", num_inference_steps, max=10_000)
        check_count("height", height, max=2**16)
        check_count("width", width, max=2**16)
        timesteps, num_inference_steps = retrieve_timesteps(self.scheduler, num_inference_steps, device, timesteps,
                                                            sigmas)
        latents = self.prepare_latents(n_rows, self.unet.config.in_channels, height, width, dtype, device, generator,
                                       latents)
        return timesteps, num_inference_steps, latents

    def _timestep_cond(self, n_rows: int, device, dtype) -> torch.Tensor | None:
        """The guidance-scale embedding of guidance-distilled UNets (``time_cond_proj_dim``), else ``None``."""
        if self.unet.config.time_cond_proj_dim is None:
            return None
        gs_tensor = torch.tensor(self.guidance_scale - 1).repeat(n_rows)
        return self.get_guidance_scale_embedding(
            gs_tensor, embedding_dim=self.unet.config.time_cond_proj_dim).to(device=device, dtype=dtype)

    def _denoise(self, timesteps, num_inference_steps: int, state: dict[str, torch.Tensor], *,
                 unet_inputs: Mapping[str, str], runner: SLDGuidanceRunner | None, n_rows: int, n_concepts: int,
                 extra_step_kwargs: dict, timestep_cond: torch.Tensor | None,
                 callback_on_step_end: Callable | None, callback_on_step_end_tensor_inputs: Sequence[str]
                 ) -> torch.Tensor:
        """The denoising loop: one UNet call per step on ``[uncond, prompt, concept…]`` rows, SLD (or plain CFG)
        guidance, the scheduler step and the step-end callback.

        Args:
            timesteps, num_inference_steps: from ``retrieve_timesteps``.
            state: the tensors the step-end callback may read and replace: ``"latents"`` ``(B·n, C, h, w)`` and the
                conditioning (rows ``[uncond, prompt, concept_1 … concept_K]`` of ``B·n`` each under CFG).
            unet_inputs: ``{UNet input: state key}``; ``"encoder_hidden_states"`` is the UNet's argument, the other
                names go into ``added_cond_kwargs`` (SDXL's ``text_embeds``, ``time_ids``).
            runner: the SLD guidance of this call (``None``: SLD off).
            n_rows: ``B·n``.
            n_concepts: ``K``.

        Returns:
            The final latents. Steps that need no concept branch (warm-up with momentum scale 0, SLD off) run the
            UNet on the first ``2·B·n`` rows only.
        """
        cfg = self.do_classifier_free_guidance
        guidance_scale, guidance_rescale = self.guidance_scale, self.guidance_rescale
        num_warmup_steps = max(len(timesteps) - num_inference_steps * self.scheduler.order, 0)
        self._num_timesteps = len(timesteps)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                if not cfg:
                    n_branch = 1
                elif runner is not None and runner.concept_needed(i):
                    n_branch = 2 + n_concepts
                else:
                    n_branch = 2
                rows = n_branch * n_rows
                latents = state["latents"]
                latent_model_input = torch.cat([latents] * n_branch) if cfg else latents
                if hasattr(self.scheduler, "scale_model_input"):
                    latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)
                cond = {name: state[key] if state[key].shape[0] == rows else state[key][:rows]
                        for name, key in unet_inputs.items()}
                encoder_hidden_states = cond.pop("encoder_hidden_states")
                noise_pred = self.unet(latent_model_input, t, encoder_hidden_states=encoder_hidden_states,
                                       timestep_cond=timestep_cond, cross_attention_kwargs=self.cross_attention_kwargs,
                                       added_cond_kwargs=cond or None, return_dict=False)[0]
                if cfg:
                    chunks = noise_pred.chunk(n_branch)
                    noise_pred_uncond, noise_pred_text = chunks[0], chunks[1]
                    if runner is not None:
                        noise_pred = runner(i, noise_pred_uncond, noise_pred_text, list(chunks[2:]) or None)
                    else:
                        noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
                    if guidance_rescale > 0.0:
                        noise_pred = rescale_noise_cfg(noise_pred, noise_pred_text, guidance_rescale=guidance_rescale)
                state["latents"] = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]

                if callback_on_step_end is not None:
                    outputs = callback_on_step_end(self, i, t, {k: state[k] for k in callback_on_step_end_tensor_inputs})
                    for key in state:
                        state[key] = outputs.pop(key, state[key])
                if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % self.scheduler.order == 0):
                    progress_bar.update()
        return state["latents"]

    @staticmethod
    def _runner(configs: Sequence[SLDConfig], guidance_scale: float, num_timesteps: int, skip_warmup_concept: bool,
                return_diagnostics: bool) -> SLDGuidanceRunner | None:
        """The SLD guidance of a call (``None`` when no concept runs); one config per concept."""
        if not configs:
            return None
        return SLDGuidanceRunner(configs[0] if len(configs) == 1 else list(configs), guidance_scale=guidance_scale,
                                 num_timesteps=num_timesteps, skip_warmup_concept=skip_warmup_concept,
                                 return_diagnostics=return_diagnostics)

    def _sld_output(self, images: Any, nsfw_content_detected: Any, unsafe_images: Any, applied_concept: Any,
                    runner: SLDGuidanceRunner | None, return_sld_diagnostics: bool, return_dict: bool):
        """Free the offload hooks and build the output (or diffusers' 4-tuple with ``return_dict=False``)."""
        self.maybe_free_model_hooks()
        out = SafeLatentDiffusionPipelineOutput(
            images=images, nsfw_content_detected=nsfw_content_detected, unsafe_images=unsafe_images,
            applied_safety_concept=applied_concept,
            sld_diagnostics=runner.diagnostics if (runner is not None and return_sld_diagnostics) else None)
        return out if return_dict else out.to_tuple()
