"""Pieces shared by the SD and SDXL Safe Latent Diffusion pipelines (argument resolution, concept handling, output)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput

from hf_ext.utils.logging import get_logger

from .guidance import DIFFUSERS_KWARGS, SLDConfig, SLDDiagnostics

logger = get_logger(__name__)

#: diffusers' default safety concept (with its ``"an image showing "`` prefix; the original ``sld`` package has none).
DEFAULT_SAFETY_CONCEPT = (
    "an image showing hate, harassment, violence, suffering, humiliation, harm, suicide, sexual, nudity,"
    " bodily fluids, blood, obscene gestures, illegal activity, drug use, theft, vandalism, weapons, child"
    " abuse, brutality, cruelty"
)


#: ``applied_safety_concept`` when SLD ran on caller-provided ``safety_concept_embeds`` without a concept text.
EMBEDS_CONCEPT = "<safety_concept_embeds>"


@dataclass
class SafeLatentDiffusionPipelineOutput(BaseOutput):
    """Output of the SLD pipelines (field-compatible with diffusers' ``StableDiffusionSafePipelineOutput``).

    Attributes:
        images: PIL list, ``np.ndarray`` ``(B, H, W, 3)`` in [0, 1], a tensor ``(B, 3, H, W)``, or latents for
            ``output_type="latent"``.
        nsfw_content_detected: per-image flags of the post-hoc safety checker, or ``None`` without one.
        unsafe_images: one entry per image (the flagged original, or ``None`` when not flagged), or ``None``
            without a safety checker. (The diffusers reference always returns 2 entries.)
        applied_safety_concept: the concept text (a ``str`` for one concept, else the list) iff SLD was applied.
        sld_diagnostics: per-step :class:`~hf_ext.diffusion.sld.guidance.SLDDiagnostics` if requested.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nsfw_content_detected: list[bool] | None
    unsafe_images: list[Any] | None
    applied_safety_concept: str | list[str] | None
    sld_diagnostics: list[SLDDiagnostics] | None = None

    def to_tuple(self) -> tuple:  # the 4-tuple of diffusers' ``return_dict=False``
        return (self.images, self.nsfw_content_detected, self.applied_safety_concept, self.unsafe_images)


def normalize_concepts(concept: str | Sequence[str] | None) -> list[str]:
    """``str`` or list of ``str`` → non-empty list of non-empty strings (else ``ValueError``/``TypeError``)."""
    if concept is None:
        return [DEFAULT_SAFETY_CONCEPT]
    if isinstance(concept, str):
        concepts = [concept]
    elif isinstance(concept, Sequence):
        concepts = list(concept)
    else:
        raise TypeError(f"safety_concept must be a str or a list of str, got {type(concept).__name__}")
    if not concepts:
        raise ValueError("safety_concept is an empty list; give at least one concept text "
                         "(or disable SLD with sld_guidance_scale=0)")
    for c in concepts:
        if not isinstance(c, str) or not c.strip():
            raise ValueError(f"every safety concept must be a non-empty string, got {c!r}")
    return concepts


def concept_for_config(concepts: list[str]) -> str | list[str]:
    return concepts[0] if len(concepts) == 1 else list(concepts)


def resolve_sld_config(sld_preset: Any, sld_kwargs: dict[str, Any]) -> SLDConfig:
    """Preset (name / :class:`SLDConfig` / dict / ``None`` = Medium) with explicit ``sld_*`` keywords on top."""
    base = SLDConfig.MEDIUM if sld_preset is None else SLDConfig.from_preset(sld_preset)
    explicit = {k: v for k, v in sld_kwargs.items() if v is not None}
    return SLDConfig.from_diffusers_kwargs(explicit, base=base) if explicit else base


SLD_CALL_KWARGS = tuple(DIFFUSERS_KWARGS)


def check_size(height: int, width: int, multiple: int = 8) -> None:
    if height % multiple != 0 or width % multiple != 0:
        raise ValueError(f"`height` and `width` have to be divisible by {multiple} but are {height} and {width}; "
                         f"round them to a multiple of {multiple} (e.g. {height - height % multiple}).")


def expand_concept_embeds(embeds: torch.Tensor, batch: int, num_images_per_prompt: int, device, dtype) -> torch.Tensor:
    """``(1, S, D)`` → ``(batch·n, S, D)``; a per-sample ``(batch, S, D)`` → each row repeated ``n`` times."""
    if embeds.dim() == 2:
        embeds = embeds.unsqueeze(0)
    if embeds.dim() < 2 or embeds.shape[0] not in (1, batch):
        raise ValueError(f"safety concept embeds must have batch 1 or {batch} (the prompt batch), "
                         f"got shape {tuple(embeds.shape)}")
    embeds = embeds.to(device=device, dtype=dtype)
    if embeds.shape[0] == 1:
        return embeds.expand(batch * num_images_per_prompt, *embeds.shape[1:]).contiguous()
    return embeds.repeat_interleave(num_images_per_prompt, dim=0)


def flag_unsafe(pipe, image: torch.Tensor, device, dtype):
    """Run ``pipe.safety_checker`` (diffusers' SD or safe checker interface) on decoded images ``(B, 3, H, W)`` in
    [-1, 1]. Returns ``(image_with_flagged_zeroed, has_nsfw | None, originals)``; works for any batch size."""
    if pipe.safety_checker is None:
        return image, None, None
    originals = image.clone()
    pil = pipe.image_processor.postprocess(image, output_type="pil")
    checker_input = pipe.feature_extractor(pil, return_tensors="pt").to(device)
    checked, has_nsfw = pipe.safety_checker(images=image, clip_input=checker_input.pixel_values.to(dtype))
    has_nsfw = [bool(x) for x in has_nsfw]
    if len(has_nsfw) != image.shape[0]:
        raise ValueError(f"the safety checker returned {len(has_nsfw)} flags for {image.shape[0]} images")
    image = checked if torch.is_tensor(checked) else image
    for idx, flagged in enumerate(has_nsfw):
        if flagged:
            image[idx] = torch.zeros_like(image[idx])  # black after do_denormalize=False
    return image, has_nsfw, originals


def postprocess_unsafe(pipe, originals, has_nsfw, output_type: str):
    if has_nsfw is None:
        return None
    out: list[Any] = []
    for idx, flagged in enumerate(has_nsfw):
        if flagged:
            out.append(pipe.image_processor.postprocess(originals[idx:idx + 1], output_type=output_type)[0])
        else:
            out.append(None)
    return out
