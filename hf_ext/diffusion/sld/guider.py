"""``SafeLatentGuidance``: SLD as a modular-diffusers guider (``diffusers.guiders.BaseGuidance``).

A guider sees the denoiser's predictions for each condition and combines them. SLD needs three: the prompt
(``pred_cond``), the unconditional/negative (``pred_uncond``) and the safety concept (``pred_concept``). The loop
passes model inputs as tuples ``(cond, uncond, concept)``; :meth:`SafeLatentGuidance.prepare_inputs` splits them
into one batch per condition (tuple index 0/1/2), the loop runs the denoiser on each and calls the guider.

* ``num_conditions`` is 2 + K (K safety concepts, 1 by default) when SLD is active at this step, 2 during a
  warm-up step where every concept has momentum scale 0 (the concept branches are skipped: same result, less
  compute), 2 with SLD off, 1 without CFG; with ``sld_concepts`` each concept has its own hyperparameters and the
  inputs are ``(cond, uncond, concept_1 … concept_K)`` tuples (predictions ``pred_concept``, ``pred_concept_1`` …);
* the momentum lives on the guider and is reset by ``set_state(step=0, …)``;
* the combination is :func:`~hf_ext.diffusion.sld.guidance.sld_step`, the same code as the pipelines.

Unlike the pipelines (one batched call), modular loops call the denoiser once per condition: same FLOPs, less
batching. Any modular pipeline whose loop forwards 3-tuples (prompt, negative, concept embeddings) can use it.

Example:
    >>> import torch
    >>> from hf_ext.diffusion.sld.guider import SafeLatentGuidance
    >>> g = SafeLatentGuidance(guidance_scale=7.5, sld_warmup_steps=0)
    >>> g.set_state(step=0, num_inference_steps=4, timestep=torch.tensor(999))
    >>> batches = g.prepare_inputs({"prompt_embeds": (torch.ones(1, 2), torch.zeros(1, 2), -torch.ones(1, 2))})
    >>> [b.__guidance_identifier__ for b in batches]
    ['pred_cond', 'pred_uncond', 'pred_concept']
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.guiders.guider_utils import BaseGuidance, GuiderOutput, rescale_noise_cfg

from .guidance import SLDConcept, SLDConfig, sld_step

if TYPE_CHECKING:
    from diffusers.modular_pipelines import BlockState, SequentialPipelineBlocks

__all__ = ["SafeLatentGuidance"]


class SafeLatentGuidance(BaseGuidance):
    """Classifier-free guidance with Safe Latent Diffusion (Schramowski et al. 2023) for modular pipelines.

    Args:
        guidance_scale: s_g (CFG); ≤ 1 disables CFG and SLD.
        sld_guidance_scale, sld_warmup_steps, sld_threshold, sld_momentum_scale, sld_mom_beta: as in
            :class:`~hf_ext.diffusion.sld.guidance.SLDConfig` (defaults: Medium); ``sld_guidance_scale ≤ 1``
            disables SLD. ``sld_warmup_steps`` is a step index (int) or a fraction of the schedule (float).
        sld_concepts: several concepts: one dict per concept, in the order of the concept inputs, with the
            hyperparameters that concept sets itself (``{"guidance_scale": 2000.0, "warmup_steps": 0}``; keys as
            :class:`~hf_ext.diffusion.sld.guidance.SLDConcept`, a ``"text"`` key is ignored); the others come from
            the ``sld_*`` arguments. ``None``: one concept.
        guidance_rescale: φ of "Common Diffusion Noise Schedules…" (0 = off).
        skip_warmup_concept: skip the concept branch during warm-up when ``sld_momentum_scale == 0``.
        start, stop, enabled: as in ``BaseGuidance``.

    ``guider.config`` round-trips through ``save_pretrained``/``from_pretrained`` (``guider_config.json``).

    Example:
        >>> g = SafeLatentGuidance.from_preset("strong", guidance_scale=7.5)
        >>> g.sld_config.threshold
        0.025
        >>> two = SafeLatentGuidance(sld_concepts=[{}, {"guidance_scale": 3000.0, "warmup_steps": 0}])
        >>> [c.guidance_scale for c in two.concept_configs], two._input_predictions
        ([1000.0, 3000.0], ['pred_cond', 'pred_uncond', 'pred_concept', 'pred_concept_1'])
    """

    _input_predictions = ["pred_cond", "pred_uncond", "pred_concept"]

    @register_to_config
    def __init__(
        self,
        guidance_scale: float = 7.5,
        sld_guidance_scale: float = 1000.0,
        sld_warmup_steps: int | float = 10,
        sld_threshold: float = 0.01,
        sld_momentum_scale: float = 0.3,
        sld_mom_beta: float = 0.4,
        guidance_rescale: float = 0.0,
        skip_warmup_concept: bool = True,
        start: float = 0.0,
        stop: float = 1.0,
        enabled: bool = True,
        sld_concepts: list[dict] | None = None,
    ):
        super().__init__(start, stop, enabled)
        self.guidance_scale = guidance_scale
        self.guidance_rescale = guidance_rescale
        self.skip_warmup_concept = skip_warmup_concept
        self.sld_config = SLDConfig(guidance_scale=sld_guidance_scale, warmup_steps=sld_warmup_steps,
                                    threshold=sld_threshold, momentum_scale=sld_momentum_scale, mom_beta=sld_mom_beta)
        self.concept_configs = self._concept_configs(self.sld_config, sld_concepts)
        k = len(self.concept_configs)
        self._input_predictions = ["pred_cond", "pred_uncond", "pred_concept",
                                   *(f"pred_concept_{i}" for i in range(1, k))]
        self._momentum: list[torch.Tensor] | None = None
        self.diagnostics: list = []

    @staticmethod
    def _concept_configs(base: SLDConfig, sld_concepts: list[dict] | None) -> list[SLDConfig]:
        if sld_concepts is None:
            return [base]
        if isinstance(sld_concepts, (str, dict)) or not isinstance(sld_concepts, (list, tuple)) or not sld_concepts:
            raise TypeError(f"sld_concepts must be a non-empty list of dicts (one per concept), got {sld_concepts!r}")
        configs = []
        for i, spec in enumerate(sld_concepts):
            if not isinstance(spec, dict):
                raise TypeError(f"sld_concepts[{i}] must be a dict of SLDConcept fields, got {spec!r}")
            fields = {k: v for k, v in spec.items() if k != "text"}
            try:
                config = SLDConcept(spec.get("text") or f"concept {i}", **fields).resolve(base)
            except (TypeError, ValueError) as err:
                raise type(err)(f"sld_concepts[{i}]={spec!r}: {err}") from None
            configs.append(config)
        if any(c.enabled for c in configs):
            for i, c in enumerate(configs):
                if not c.enabled:
                    raise ValueError(f"sld_concepts[{i}]={sld_concepts[i]!r} disables that concept (guidance_scale "
                                     f"{c.guidance_scale} <= 1); leave the concept (and its inputs) out instead")
        return configs

    @classmethod
    def from_preset(cls, preset: str | SLDConfig, **kwargs: Any) -> SafeLatentGuidance:
        """Build from an SLD preset name or :class:`SLDConfig` (other keywords as in ``__init__``)."""
        return cls(**SLDConfig.from_preset(preset).to_diffusers_kwargs(), **kwargs)

    # ------------------------------------------------------------------ state
    def set_state(self, step: int, num_inference_steps: int, timestep: torch.LongTensor) -> None:
        """diffusers' guider hook at each denoising step; step 0 resets the momentum and the diagnostics."""
        super().set_state(step, num_inference_steps, timestep)
        if step == 0:
            self._momentum, self.diagnostics = None, []

    def _warmup_index(self) -> list[int]:
        n = self._num_inference_steps if self._num_inference_steps is not None else 0
        return [c.warmup_index(n) for c in self.concept_configs]

    def _is_cfg_enabled(self) -> bool:
        if not self._enabled:
            return False
        in_range = True
        if self._num_inference_steps is not None:
            in_range = int(self._start * self._num_inference_steps) <= self._step < int(
                self._stop * self._num_inference_steps)
        return in_range and not math.isclose(self.guidance_scale, 1.0) and self.guidance_scale > 1.0

    def _is_sld_enabled(self) -> bool:
        return self._is_cfg_enabled() and self.concept_configs[0].enabled

    def _concept_needed(self) -> bool:
        if not self._is_sld_enabled():
            return False
        step = self._step if self._step is not None else 0
        return not (self.skip_warmup_concept and all(
            c.skips_concept(step, w) for c, w in zip(self.concept_configs, self._warmup_index())))

    @property
    def num_conditions(self) -> int:
        """Predictions per step: 1 without CFG, else uncond + cond (+ the safety concept if needed)."""
        if not self._is_cfg_enabled():
            return 1
        return 2 + len(self.concept_configs) if self._concept_needed() else 2

    @property
    def is_conditional(self) -> bool:
        """Whether the batch being prepared is the conditional (prompt) one."""
        return self._count_prepared == 1

    # ------------------------------------------------------------------ batching
    def _indices(self) -> list[int]:
        return list(range(self.num_conditions))

    def prepare_inputs(self, data: dict[str, tuple[torch.Tensor, ...]]) -> list:
        """Split ``{name: (cond, uncond, concept_1 … concept_K)}`` into one ``BlockState`` per active condition."""
        width = 2 + len(self.concept_configs)
        if self._concept_needed():
            for key, value in data.items():
                if isinstance(value, tuple) and len(value) < width and value[0] is not None:
                    raise ValueError(f"SLD needs {width - 2} safety-concept entr(y/ies) after (cond, uncond) in the "
                                     f"model input {key!r} (a third entry onwards); got a {len(value)}-tuple. Pass "
                                     "(cond, uncond, concept…) tuples (e.g. safety_prompt_embeds from an encoder "
                                     "step), or disable SLD (sld_guidance_scale=0).")
        for key, value in data.items():
            if isinstance(value, tuple) and len(value) > width and any(v is not None for v in value[width:]):
                raise ValueError(f"the model input {key!r} has {len(value) - 2} concept entries but this guider "
                                 f"has {width - 2} concept(s); give SafeLatentGuidance(sld_concepts=[...]) one dict "
                                 "per concept")
        # stock loops pass 2-tuples for optional inputs such as (None, None): pad them for the concept branches
        data = {k: (v + (None,) * (width - len(v)) if isinstance(v, tuple) and len(v) < width else v)
                for k, v in data.items()}
        return [self._prepare_batch(data, idx, name) for idx, name in zip(self._indices(), self._input_predictions)]

    def prepare_inputs_from_block_state(self, data: BlockState, input_fields: dict[str, str | tuple[str, ...]]
                                        ) -> list[BlockState]:
        """The guider batches (one per prediction: uncond, cond, concept) from a modular block state."""
        return [self._prepare_batch_from_block_state(input_fields, data, idx, name)
                for idx, name in zip(self._indices(), self._input_predictions)]

    # ------------------------------------------------------------------ combination
    def forward(self, pred_cond: torch.Tensor, pred_uncond: torch.Tensor | None = None,
                pred_concept: torch.Tensor | None = None, **more_concepts: torch.Tensor) -> GuiderOutput:
        """Combine the predictions; with SLD active this is :func:`sld_step` (momentum kept on the guider).
        ``more_concepts``: ``pred_concept_1`` … of concepts 2 … K."""
        unknown = sorted(set(more_concepts) - set(self._input_predictions[3:]))
        if unknown:
            raise TypeError(f"unexpected predictions {unknown}; this guider takes {self._input_predictions}")
        concepts = None
        if pred_concept is not None:
            concepts = [pred_concept, *(more_concepts.get(n) for n in self._input_predictions[3:])]
            if any(c is None for c in concepts):
                raise ValueError(f"got {sum(c is not None for c in concepts)} of the {len(concepts)} concept "
                                 f"predictions {self._input_predictions[2:]}")
        if not self._is_cfg_enabled():
            pred = pred_cond
        elif not self._is_sld_enabled():
            pred = pred_uncond + self.guidance_scale * (pred_cond - pred_uncond)
        else:
            single = len(self.concept_configs) == 1
            out = sld_step(pred_uncond, pred_cond, concepts, self._momentum, step=self._step or 0,
                           guidance_scale=self.guidance_scale,
                           config=self.sld_config if single else self.concept_configs,
                           warmup_index=self._warmup_index())
            if concepts is not None:
                self._momentum = out.momentum
            pred = out.noise_pred
        if self.guidance_rescale > 0.0 and pred_uncond is not None:
            pred = rescale_noise_cfg(pred, pred_cond, self.guidance_rescale)
        return GuiderOutput(pred=pred, pred_cond=pred_cond, pred_uncond=pred_uncond)


# ---------------------------------------------------------------------------------------------- SDXL modular blocks
def _modular_blocks():
    """The SLD blocks for diffusers' modular SDXL pipeline (built lazily: modular diffusers is experimental)."""
    from diffusers.modular_pipelines import ModularPipelineBlocks
    from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec, InputParam, OutputParam
    from diffusers.modular_pipelines.stable_diffusion_xl.denoise import StableDiffusionXLLoopDenoiser
    from diffusers.modular_pipelines.stable_diffusion_xl.encoders import StableDiffusionXLTextEncoderStep
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from ._common import DEFAULT_SAFETY_CONCEPT, normalize_concept_specs

    class SafetyConceptEncoderStep(ModularPipelineBlocks):
        """Encode the K safety concepts with both SDXL text encoders → ``safety_prompt_embeds`` ``(K·B·n, S, D)`` and
        ``safety_pooled_prompt_embeds`` ``(K·B·n, P)``, concept by concept along the batch (B from
        ``prompt_embeds``, n = ``num_images_per_prompt``). Per-concept hyperparameters belong to the guider
        (``SafeLatentGuidance(sld_concepts=...)``)."""

        model_name = "stable-diffusion-xl"

        @property
        def description(self) -> str:
            return "Encodes the SLD safety concept(s) for SafeLatentGuidance (K concepts stacked along the batch)."

        @property
        def expected_components(self):
            return [ComponentSpec("text_encoder", CLIPTextModel),
                    ComponentSpec("text_encoder_2", CLIPTextModelWithProjection),
                    ComponentSpec("tokenizer", CLIPTokenizer), ComponentSpec("tokenizer_2", CLIPTokenizer)]

        @property
        def inputs(self):
            return [InputParam("safety_concept", default=DEFAULT_SAFETY_CONCEPT, type_hint=str),
                    InputParam("prompt_embeds", required=True, type_hint=torch.Tensor),
                    InputParam("num_images_per_prompt", default=1)]

        @property
        def intermediate_outputs(self):
            return [OutputParam("safety_prompt_embeds", type_hint=torch.Tensor, kwargs_type="denoiser_input_fields"),
                    OutputParam("safety_pooled_prompt_embeds", type_hint=torch.Tensor,
                                kwargs_type="denoiser_input_fields")]

        @torch.no_grad()
        def __call__(self, components, state):
            bs = self.get_block_state(state)
            specs = normalize_concept_specs(bs.safety_concept)
            for i, spec in enumerate(specs):
                if spec.overrides():
                    raise ValueError(f"safety_concept[{i}]={spec!r} sets its own SLD values; in a modular pipeline "
                                     "they belong to the guider: SafeLatentGuidance(sld_concepts=[...]) with the "
                                     "concept texts here")
            rows = bs.prompt_embeds.shape[0] * (bs.num_images_per_prompt or 1)
            embeds, pooled_embeds = [], []
            for spec in specs:
                emb, _, pooled, _ = StableDiffusionXLTextEncoderStep.encode_prompt(
                    components, spec.text, spec.text, components._execution_device, 1, False)
                embeds.append(emb.expand(rows, *emb.shape[1:]))
                pooled_embeds.append(pooled.expand(rows, *pooled.shape[1:]))
            bs.safety_prompt_embeds = torch.cat(embeds).contiguous()
            bs.safety_pooled_prompt_embeds = torch.cat(pooled_embeds).contiguous()
            self.set_block_state(state, bs)
            return components, state

    class SafeLatentLoopDenoiser(StableDiffusionXLLoopDenoiser):
        """SDXL loop step that feeds ``(cond, uncond, concept)`` tuples to the guider (use with
        :class:`SafeLatentGuidance`; other guiders ignore the third entry)."""

        @property
        def description(self) -> str:
            return "Denoise step passing (prompt, negative, safety concept) inputs to the guider (SLD)."

        @property
        def expected_components(self):
            return [ComponentSpec("guider", SafeLatentGuidance, default_creation_method="from_config"),
                    *super().expected_components[1:]]

        @property
        def inputs(self):
            return [*super().inputs, InputParam("safety_prompt_embeds", type_hint=torch.Tensor),
                    InputParam("safety_pooled_prompt_embeds", type_hint=torch.Tensor)]

        @torch.no_grad()
        def __call__(self, components, block_state, i, t):
            g = lambda name: getattr(block_state, name, None)  # noqa: E731
            safety, safety_pooled = g("safety_prompt_embeds"), g("safety_pooled_prompt_embeds")
            # K concepts stacked along the batch by the encoder step: one tuple entry per concept
            k = 1 if safety is None else max(1, safety.shape[0] // g("prompt_embeds").shape[0])
            concepts = (None,) * k if safety is None else tuple(safety.chunk(k))
            concepts_pooled = (None,) * k if safety_pooled is None else tuple(safety_pooled.chunk(k))
            guider_inputs = {
                "prompt_embeds": (g("prompt_embeds"), g("negative_prompt_embeds"), *concepts),
                "time_ids": (g("add_time_ids"), g("negative_add_time_ids"), *(g("add_time_ids"),) * k),
                "text_embeds": (g("pooled_prompt_embeds"), g("negative_pooled_prompt_embeds"), *concepts_pooled),
                "image_embeds": (g("ip_adapter_embeds"), g("negative_ip_adapter_embeds"),
                                 *(g("ip_adapter_embeds"),) * k),
            }
            components.guider.set_state(step=i, num_inference_steps=block_state.num_inference_steps, timestep=t)
            guider_state = components.guider.prepare_inputs(guider_inputs)
            for batch in guider_state:
                components.guider.prepare_models(components.unet)
                cond = {k: getattr(batch, k) for k in guider_inputs}
                prompt_embeds = cond.pop("prompt_embeds")
                if cond.get("image_embeds") is None:
                    cond.pop("image_embeds", None)
                batch.noise_pred = components.unet(
                    block_state.scaled_latents, t, encoder_hidden_states=prompt_embeds,
                    timestep_cond=block_state.timestep_cond, cross_attention_kwargs=block_state.cross_attention_kwargs,
                    added_cond_kwargs=cond, return_dict=False)[0]
                components.guider.cleanup_models(components.unet)
            block_state.noise_pred = components.guider(guider_state)[0]
            return components, block_state

    return SafetyConceptEncoderStep, SafeLatentLoopDenoiser


def sld_sdxl_modular_blocks() -> SequentialPipelineBlocks:
    """diffusers' modular SDXL blocks (``StableDiffusionXLAutoBlocks``, text-to-image path) with SLD: a
    ``safety_concept`` encoder step after the text encoder and a denoiser that passes the concept branch to the
    guider. Set the guider with ``pipe.update_components(guider=SafeLatentGuidance(...))``.

    Example (two concepts, the second with its own values, set on the guider):
        >>> from hf_ext.testing import tiny_sdxl_components
        >>> pipe = sld_sdxl_modular_blocks().init_pipeline()
        >>> guider = SafeLatentGuidance(guidance_scale=5.0, sld_concepts=[{}, {"warmup_steps": 0}])
        >>> pipe.update_components(**{k: v for k, v in tiny_sdxl_components().items() if v is not None},
        ...                        guider=guider)
        >>> pipe.set_progress_bar_config(disable=True)
        >>> pipe(prompt="a cat", num_inference_steps=2, safety_concept=["violence", "nudity"],
        ...      output="latents").shape
        torch.Size([1, 4, 16, 16])
    """
    from diffusers.modular_pipelines.stable_diffusion_xl.modular_blocks_stable_diffusion_xl import (
        StableDiffusionXLAutoBlocks,
    )

    encoder_cls, denoiser_cls = _modular_blocks()
    blocks = StableDiffusionXLAutoBlocks()
    blocks.sub_blocks.insert("safety_concept", encoder_cls(), 1)
    loop = blocks.sub_blocks["denoise"].sub_blocks["denoise"].sub_blocks["denoise"]
    if "denoiser" not in loop.sub_blocks:
        raise RuntimeError(f"unexpected modular SDXL layout (loop blocks {list(loop.sub_blocks)}); this diffusers "
                           "version is not supported by sld_sdxl_modular_blocks")
    loop.sub_blocks["denoiser"] = denoiser_cls()
    return blocks
