"""Pieces shared by the SD and SDXL Safe Latent Diffusion pipelines (argument resolution, concept handling, output)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput

from hf_ext.utils.logging import get_logger

from .guidance import DIFFUSERS_KWARGS, SLDConcept, SLDConfig, SLDDiagnostics

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


#: What ``safety_concept`` accepts: a text, an :class:`SLDConcept`, its dict form, or a list of these.
ConceptSpec = str | SLDConcept | Mapping[str, Any]


def _one_spec(item: Any, where: str) -> SLDConcept:
    if isinstance(item, SLDConcept):
        return item
    if isinstance(item, str):
        if not item.strip():
            raise ValueError(f"every safety concept must be a non-empty string, got {where}={item!r}")
        return SLDConcept(item)
    if isinstance(item, Mapping):
        return SLDConcept.from_dict(item)
    raise TypeError(f"{where} must be a str, an SLDConcept or a dict of SLDConcept fields, got {item!r} "
                    f"({type(item).__name__})")


def normalize_concept_specs(concept: ConceptSpec | Sequence[ConceptSpec] | None) -> list[SLDConcept]:
    """``safety_concept`` → non-empty list of :class:`SLDConcept` (``None`` = :data:`DEFAULT_SAFETY_CONCEPT`).

    Raises ``TypeError``/``ValueError`` naming ``safety_concept`` (and the index in a list) with the bad value.
    """
    if concept is None:
        return [SLDConcept(DEFAULT_SAFETY_CONCEPT)]
    if isinstance(concept, (str, SLDConcept, Mapping)):
        return [_one_spec(concept, "safety_concept")]
    if not isinstance(concept, Sequence):
        raise TypeError(f"safety_concept must be a str, an SLDConcept or a list of them, got {concept!r} "
                        f"({type(concept).__name__})")
    if not concept:
        raise ValueError("safety_concept is an empty list; give at least one concept text "
                         "(or disable SLD with sld_guidance_scale=0)")
    return [_one_spec(item, f"safety_concept[{i}]") for i, item in enumerate(concept)]


def normalize_concepts(concept: ConceptSpec | Sequence[ConceptSpec] | None) -> list[str]:
    """The concept texts of ``safety_concept`` (see :func:`normalize_concept_specs`)."""
    return [c.text for c in normalize_concept_specs(concept)]


def concept_for_config(specs: Sequence[SLDConcept]) -> str | list[str | dict[str, Any]]:
    """The JSON form stored in the pipeline config: a text per plain concept, a dict per concept with its own
    hyperparameters; a single plain concept is stored as its text."""
    items = [c.to_dict() if c.overrides() else c.text for c in specs]
    return items[0] if len(items) == 1 and isinstance(items[0], str) else items


def concepts_from_config(value: Any) -> str | list[str | SLDConcept]:
    """Inverse of :func:`concept_for_config` (dicts become :class:`SLDConcept`)."""
    if isinstance(value, str):
        return value
    return [SLDConcept.from_dict(v) if isinstance(v, Mapping) else v for v in value]


def concept_label(specs: Sequence[SLDConcept]) -> str | list[str]:
    """``applied_safety_concept``: the text for one concept, else the list of texts."""
    return specs[0].text if len(specs) == 1 else [c.text for c in specs]


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
