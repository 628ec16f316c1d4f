"""``MultiFusionPipeline``: Stable-Diffusion-style generation conditioned on interleaved multilingual text and images.

The CLIP text encoder of SD is replaced by an interleaved multimodal encoder (a Llava-style VLM, or a causal LM with a
MAGMA image prefix: :class:`~.modeling_multifusion.MagmaEncoder`); its hidden states (a selectable layer) are mapped
into the UNet's cross-attention width by a :class:`~.modeling_multifusion.MultiFusionProjector` or by the UNet's own
``encoder_hid_proj`` (``encoder_hid_dim_type="text_proj"``), with the padding mask passed as
``encoder_attention_mask``. Classifier-free guidance takes a text, image or multimodal negative prompt. Per-item
weights act in the encoder's attention (AtMan, :mod:`hf_ext.core.attention`) and optionally in the UNet's
cross-attention (:mod:`.attention_processor`).

Example:
    >>> from PIL import Image
    >>> from hf_ext.diffusion.multifusion import MultiFusionPipeline, tiny_multifusion_components
    >>> pipe = MultiFusionPipeline(**tiny_multifusion_components())
    >>> pipe.set_progress_bar_config(disable=True)
    >>> g = torch.Generator().manual_seed(0)
    >>> img = Image.new("RGB", (32, 32), (0, 200, 0))
    >>> out = pipe([img, "a red apple"], weights=[1.0, 20.0], num_inference_steps=2, generator=g, output_type="np")
    >>> out.images.shape
    (1, 32, 32, 3)
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, ModelMixin, UNet2DConditionModel  # noqa: F401 - by name
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.configuration_utils import ConfigMixin  # noqa: F401 - the component loader looks names up here
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.image_processing_utils import BaseImageProcessor

from hf_ext.utils.saving import AtomicSaveMixin
from hf_ext.utils.validation import check_float, check_size

from .attention_processor import cross_attention_weights
from .encoding_multifusion import EncodedPrompt, InterleavedEncoder, normalize_prompts, pad_and_stack
from .modeling_multifusion import MagmaEncoder, MultiFusionProjector

if TYPE_CHECKING:
    from .encoding_multifusion import Prompt, PromptWeights

__all__ = ["MultiFusionPipeline", "MultiFusionPipelineOutput"]

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class MultiFusionPipelineOutput(BaseOutput):
    """Output of :class:`MultiFusionPipeline`.

    Attributes:
        images: list of PIL images, ``np.ndarray [B, H, W, 3]`` in [0, 1], a ``torch.Tensor``, or the latents
            ``[B, C, h, w]`` for ``output_type="latent"``.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


class MultiFusionPipeline(AtomicSaveMixin, DiffusionPipeline):
    """Text/image-interleaved prompt → image, with a VLM or MAGMA-style encoder in place of CLIP.

    Args:
        encoder: ``LlavaForConditionalGeneration``-style VLM, :class:`MagmaEncoder`, or a causal LM (text only).
        tokenizer: the encoder's tokenizer.
        unet: ``UNet2DConditionModel``; its cross-attention width is reached through ``projection`` or its own
            ``encoder_hid_proj`` (``encoder_hid_dim_type="text_proj"``), or equals the encoder width.
        vae: ``AutoencoderKL``.
        scheduler: any diffusers scheduler (DDIM, PNDM, Euler …).
        image_processor: turns PIL images into the encoder's ``pixel_values`` (``None`` = text only).
        projection: optional :class:`MultiFusionProjector` ``d_lm -> cross_attention_dim``.
        encoder_layer: index into the encoder's hidden states (``-1`` = last layer, after the final norm).

    ``save_pretrained`` / ``MultiFusionPipeline.from_pretrained`` round-trip every component (safetensors).

    ``callback_on_step_end`` works as in diffusers' pipelines (a function or a ``PipelineCallback`` such as
    ``SDCFGCutoffCallback``); with the same conditioning, scheduler and generator and no weighting, the loop gives
    the latents of diffusers' ``StableDiffusionPipeline``.

    Example:
        >>> from hf_ext.diffusion.multifusion import tiny_multifusion_components
        >>> pipe = MultiFusionPipeline(**tiny_multifusion_components())
        >>> pipe.set_progress_bar_config(disable=True)
        >>> steps = []
        >>> def halve_at_step_0(pipe, step, timestep, callback_kwargs):
        ...     steps.append(step)
        ...     return {"latents": callback_kwargs["latents"] / 2} if step == 0 else {}
        >>> out = pipe(["a red apple"], num_inference_steps=2, output_type="latent",
        ...            callback_on_step_end=halve_at_step_0, callback_on_step_end_tensor_inputs=["latents"])
        >>> steps, out.images.shape
        ([0, 1], torch.Size([1, 4, 16, 16]))
    """

    model_cpu_offload_seq = "encoder->projection->unet->vae"
    _optional_components = ["image_processor", "projection"]
    #: What ``callback_on_step_end`` may read and replace: the latents ``[B·n, C, h, w]``, the UNet's conditioning
    #: ``prompt_embeds`` ``[2·B·n, L, D]`` (rows ``[negative; prompt]`` under CFG, after the projection) and its
    #: ``encoder_attention_mask`` ``[rows, L]`` (1 = token, 0 = padding).
    _callback_tensor_inputs = ["latents", "prompt_embeds", "encoder_attention_mask"]

    # The annotations are resolved at run time (diffusers checks the components passed to from_pretrained against
    # them and carries matching ones over in from_pipe): these names are imported for real above.
    def __init__(self, encoder: PreTrainedModel | MagmaEncoder, tokenizer: PreTrainedTokenizerBase,
                 unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: SchedulerMixin,
                 image_processor: BaseImageProcessor | None = None, projection: MultiFusionProjector | None = None,
                 encoder_layer: int = -1):
        super().__init__()
        self.register_modules(encoder=encoder, tokenizer=tokenizer, unet=unet, vae=vae, scheduler=scheduler,
                              image_processor=image_processor, projection=projection)
        self.register_to_config(encoder_layer=encoder_layer)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 8
        self.vae_image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self._check_widths()

    # ---------------------------------------------------------------------------------------------- encoding
    def _check_widths(self) -> None:
        if self.encoder is None or self.unet is None:
            return
        enc = self.interleaved_encoder()
        cross = self.unet.config.cross_attention_dim
        if self.projection is not None:
            if self.projection.config.in_dim != enc.hidden_size or self.projection.config.out_dim != cross:
                raise ValueError(f"the projection maps {self.projection.config.in_dim} -> {self.projection.config.out_dim} "
                                 f"but the encoder width is {enc.hidden_size} and the UNet's cross-attention width {cross}")
        elif getattr(self.unet, "encoder_hid_proj", None) is not None:
            if self.unet.config.encoder_hid_dim != enc.hidden_size:
                raise ValueError(f"the UNet's encoder_hid_dim is {self.unet.config.encoder_hid_dim} but the encoder width "
                                 f"is {enc.hidden_size}")
        elif cross != enc.hidden_size:
            raise ValueError(f"the encoder width {enc.hidden_size} differs from the UNet's cross_attention_dim {cross}: "
                             "pass projection=MultiFusionProjector(d_lm, cross_attention_dim) or build the UNet with "
                             "encoder_hid_dim=d_lm, encoder_hid_dim_type='text_proj'")

    def interleaved_encoder(self, layer: int | None = None) -> InterleavedEncoder:
        """The :class:`InterleavedEncoder` over this pipeline's encoder, tokenizer and image processor."""
        return InterleavedEncoder(self.encoder, self.tokenizer, self.image_processor,
                                  layer=self.config.encoder_layer if layer is None else layer)

    @torch.no_grad()
    def encode_prompt(self, prompt: Prompt, weights: PromptWeights | None = None, *, layer: int | None = None,
                      device: torch.device | str | None = None) -> EncodedPrompt:
        """Encode interleaved prompt(s) without projection (cache the result and pass it as ``prompt_embeds``).

        Args:
            prompt: one prompt or a batch (see :func:`~.encoding_multifusion.normalize_prompts`).
            weights: one AtMan weight per item (per prompt); ``None`` = unweighted.
            layer: override the pipeline's ``encoder_layer``.
            device: where the inputs go (default: the pipeline's execution device).

        Returns:
            :class:`EncodedPrompt` (``hidden_states [B, L, d_lm]``, ``attention_mask [B, L]``, item spans, weights).
        """
        device = self._execution_device if device is None else device
        return self.interleaved_encoder(layer).encode(prompt, weights, device=device)

    def condition(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Encoder hidden states → what the UNet receives as ``encoder_hidden_states`` (projection if any)."""
        if self.projection is not None:
            return self.projection(hidden_states)
        return hidden_states.to(self.unet.dtype)

    # ---------------------------------------------------------------------------------------------- call state
    # Read by diffusers' step-end callbacks (e.g. ``SDCFGCutoffCallback`` sets ``_guidance_scale = 0``).
    @property
    def guidance_scale(self) -> float:
        """The classifier-free guidance scale of the running call (a step-end callback may change it)."""
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Whether the running call uses classifier-free guidance (``guidance_scale > 1``)."""
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        """Number of denoising steps of the running call."""
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Set to ``True`` (``pipe._interrupt``) by a callback to skip the remaining denoising steps."""
        return self._interrupt

    def _check_callback(self, callback_on_step_end, tensor_inputs) -> list[str]:
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            tensor_inputs = callback_on_step_end.tensor_inputs
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise TypeError(f"callback_on_step_end must be callable (pipe, step, timestep, callback_kwargs) -> dict, "
                            f"got {callback_on_step_end!r}")
        tensor_inputs = ["latents"] if tensor_inputs is None else list(tensor_inputs)
        bad = [k for k in tensor_inputs if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(f"callback_on_step_end_tensor_inputs has {bad!r}, which the pipeline does not offer; "
                             f"choose from {self._callback_tensor_inputs}")
        return tensor_inputs

    def _extra_step_kwargs(self, generator, eta: float) -> dict[str, Any]:
        """``eta`` and ``generator`` for the schedulers whose ``step`` takes them (as diffusers' SD pipeline)."""
        params = set(inspect.signature(self.scheduler.step).parameters)
        kwargs: dict[str, Any] = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    def _initial_latents(self, rows: int, height: int, width: int, latents, generator, device, dtype) -> torch.Tensor:
        """``[rows, C, h, w]`` noise (or the given ``latents``) times ``scheduler.init_noise_sigma``."""
        shape = (rows, self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
        return latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

    # ---------------------------------------------------------------------------------------------- call
    @torch.no_grad()
    def __call__(self, prompt=None, negative_prompt=None, weights=None, negative_weights=None, *,
                 height: int | None = None, width: int | None = None, num_inference_steps: int = 25,
                 guidance_scale: float = 7.5, num_images_per_prompt: int = 1, generator=None,
                 latents: torch.Tensor | None = None, prompt_embeds: EncodedPrompt | None = None,
                 negative_prompt_embeds: EncodedPrompt | None = None, cross_attention_weighting: bool = False,
                 output_type: str = "pil", return_dict: bool = True, eta: float = 0.0,
                 callback_on_step_end: Callable[[Any, int, Any, dict], dict] | PipelineCallback
                 | MultiPipelineCallbacks | None = None,
                 callback_on_step_end_tensor_inputs: list[str] | None = None):
        """Generate images.

        Args:
            prompt: one interleaved prompt ``[item, …]`` (``str`` / ``PIL.Image`` / ``(item, weight)``) or a batch.
            negative_prompt: the unconditional branch: ``None`` (the empty prompt ``""``), or a text, image or
                multimodal prompt (one for all rows, or one per row).
            weights: per-item weights of ``prompt`` in the encoder's attention (e.g. text 20 : image 1).
            negative_weights: the same for ``negative_prompt``.
            height, width: image size (default: ``unet.config.sample_size * vae_scale_factor``).
            num_inference_steps, guidance_scale: sampler steps and CFG scale (CFG is off for ``<= 1``).
            num_images_per_prompt: images per prompt row.
            generator: ``torch.Generator`` (or one per image) for the initial noise.
            latents: initial latents ``[B*n, C, h, w]`` instead of sampling them.
            prompt_embeds, negative_prompt_embeds: cached :meth:`encode_prompt` results (skip the encoder).
            cross_attention_weighting: also apply the prompt's item weights in the UNet's cross-attention.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            eta: DDIM's η (passed to schedulers whose ``step`` takes it, with ``generator``), as in diffusers.
            callback_on_step_end: as in diffusers' pipelines: ``fn(pipe, step, timestep, callback_kwargs) -> dict``
                called after each scheduler step, or a ``PipelineCallback`` / ``MultiPipelineCallbacks``; the tensors
                of the returned dict replace the pipeline's (e.g. ``{"latents": …}``).
            callback_on_step_end_tensor_inputs: the names put in ``callback_kwargs`` (default ``["latents"]``; any
                of :attr:`_callback_tensor_inputs`). Setting ``pipe._interrupt = True`` in a callback skips the
                remaining steps.

        Returns:
            :class:`MultiFusionPipelineOutput` (or ``(images,)`` with ``return_dict=False``).
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r} is not one of {OUTPUT_TYPES}")
        check_size("num_inference_steps", num_inference_steps, max=10_000)
        check_size("num_images_per_prompt", num_images_per_prompt, max=10_000)
        check_float("guidance_scale", guidance_scale)
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of prompt and prompt_embeds")
        callback_on_step_end_tensor_inputs = self._check_callback(callback_on_step_end,
                                                                  callback_on_step_end_tensor_inputs)
        device = self._execution_device
        self._guidance_scale, self._interrupt = guidance_scale, False
        do_cfg = self.do_classifier_free_guidance

        cond = prompt_embeds if prompt_embeds is not None else self.encode_prompt(prompt, weights, device=device)
        batch = cond.hidden_states.shape[0]
        parts = [cond]
        if do_cfg:
            if negative_prompt_embeds is None:
                if negative_prompt is None:
                    neg_rows, neg_w = [[""]] * batch, None
                else:
                    neg_rows, neg_w = normalize_prompts(negative_prompt, negative_weights)
                    if len(neg_rows) == 1 and batch > 1:
                        neg_rows = neg_rows * batch
                        neg_w = neg_w * batch if neg_w is not None else None
                    if len(neg_rows) != batch:
                        raise ValueError(f"got {len(neg_rows)} negative prompts for {batch} prompts; give one or one per prompt")
                negative_prompt_embeds = self.encode_prompt(neg_rows, neg_w, device=device)
            if negative_prompt_embeds.hidden_states.shape[0] != batch:
                raise ValueError(f"negative_prompt_embeds has {negative_prompt_embeds.hidden_states.shape[0]} rows, "
                                 f"prompt has {batch}")
            parts = [negative_prompt_embeds, cond]
        hidden, mask = pad_and_stack(parts)
        key_w = None
        if cross_attention_weighting and cond.weights is not None:
            key_w = torch.ones_like(mask, dtype=torch.float32)
            cond_w = cond.key_weights()
            key_w[-batch:, : cond_w.shape[1]] = cond_w
            key_w = key_w.repeat_interleave(num_images_per_prompt, dim=0)
        n = num_images_per_prompt
        hidden = hidden.repeat_interleave(n, dim=0).to(device)
        mask = mask.repeat_interleave(n, dim=0).to(device)
        prompt_embeds, encoder_attention_mask = self.condition(hidden), mask

        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"height and width must be multiples of {self.vae_scale_factor}, got {height}x{width}")

        # timesteps first: sigma schedulers' init_noise_sigma depends on the schedule (as in diffusers' SD pipeline)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        latents = self._initial_latents(batch * n, height, width, latents, generator, device, prompt_embeds.dtype)
        extra_step_kwargs = self._extra_step_kwargs(generator, eta)

        with contextlib.ExitStack() as weighting, self.progress_bar(total=len(timesteps)) as bar:
            if key_w is not None:
                weighting.enter_context(cross_attention_weights(self.unet, key_w))
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                do_cfg = self.do_classifier_free_guidance  # a callback may switch guidance off
                model_in = torch.cat([latents] * 2) if do_cfg else latents
                model_in = self.scheduler.scale_model_input(model_in, t)
                noise = self.unet(model_in, t, encoder_hidden_states=prompt_embeds,
                                  encoder_attention_mask=encoder_attention_mask).sample
                if do_cfg:
                    uncond, cond_pred = noise.chunk(2)
                    noise = uncond + self.guidance_scale * (cond_pred - uncond)
                latents = self.scheduler.step(noise, t, latents, **extra_step_kwargs, return_dict=False)[0]
                if callback_on_step_end is not None:
                    state = {"latents": latents, "prompt_embeds": prompt_embeds,
                             "encoder_attention_mask": encoder_attention_mask}
                    outputs = callback_on_step_end(self, i, t, {k: state[k] for k in callback_on_step_end_tensor_inputs})
                    latents = outputs.pop("latents", latents)
                    new_embeds = outputs.pop("prompt_embeds", prompt_embeds)
                    if "encoder_attention_mask" in outputs:
                        encoder_attention_mask = outputs.pop("encoder_attention_mask")
                    elif new_embeds.shape[0] < encoder_attention_mask.shape[0]:
                        # a cut to the last rows (SDCFGCutoffCallback keeps the prompt rows): the mask follows
                        encoder_attention_mask = encoder_attention_mask[-new_embeds.shape[0]:]
                    if key_w is not None and new_embeds.shape[0] < key_w.shape[0]:
                        key_w = key_w[-new_embeds.shape[0]:]  # the cross-attention weights follow the cut too
                        weighting.enter_context(cross_attention_weights(self.unet, key_w))
                    prompt_embeds = new_embeds
                bar.update()

        if output_type == "latent":
            images = latents
        else:
            decoded = self.vae.decode(latents / self.vae.config.scaling_factor).sample
            images = self.vae_image_processor.postprocess(decoded, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return MultiFusionPipelineOutput(images=images)
