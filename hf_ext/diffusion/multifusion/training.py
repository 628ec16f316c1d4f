"""MultiFusion training on Accelerate (1 or N processes): stage A semantic bias tuning, stage B fusion tuning.

* **Stage A** (:func:`train_semantic`, S-MAGMA): only the language model's biases train (BitFit,
  :func:`hf_ext.diffusion.multifusion.tuning.enable_bitfit`), with a symmetric InfoNCE loss on sentence pairs
  (mean-pooled hidden states, in-batch negatives, temperature ``tau``) so hidden states become *semantic*.
* **Stage B** (:func:`train_fusion`): everything frozen except the UNet's cross-attention (``attn2``) and the
  projection (:class:`MultiFusionProjector` or the UNet's ``encoder_hid_proj``); ε-MSE (or v-MSE) denoising loss,
  conditioning on the caption **or** the image (probability ``p_image``) with unconditional dropout ``p_uncond``.

Every random draw of a training sample (noise, timestep, modality, dropout) comes from a generator seeded with
``(seed, global sample number)``, and the global batch of step ``s`` is samples ``s*G … s*G+G-1`` split across the
processes, whose gradients are averaged. So N processes with ``G/N`` samples each give the same update as one process
with ``G`` samples (up to float summation order), and a resumed run repeats the uninterrupted one. Both stages also
run sharded with FSDP2 (``fsdp=True`` or an Accelerate FSDP2 launch; :mod:`.sharding`). Checkpoints: :mod:`.checkpoint`.

The toy data (:class:`ShapesDataset`, :data:`SENTENCE_PAIRS`) is in :mod:`hf_ext.diffusion.multifusion.toy_data`
and re-exported here.

Example:
    >>> from hf_ext.diffusion.multifusion import MultiFusionPipeline, tiny_multifusion_components
    >>> pipe = MultiFusionPipeline(**tiny_multifusion_components())
    >>> data = ShapesDataset(16, seed=0)
    >>> result = train_fusion(pipe, data, FusionConfig(steps=2, batch_size=2), progress=False)
    >>> len(result.losses)
    2
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from hf_ext.utils.logging import get_logger
from hf_ext.utils.validation import check_size

from ...core.sharding import sharding_kwargs
from .checkpoint import gather_for_checkpoint, load_checkpoint, save_checkpoint, write_checkpoint
from .encoding_multifusion import InterleavedEncoder
from .sharding import shard_fusion, shard_semantic
from .toy_data import COLORS, SENTENCE_PAIRS, SHAPES, ShapesDataset, draw_shape

if TYPE_CHECKING:
    from accelerate import Accelerator

    from .pipeline_multifusion import MultiFusionPipeline

logger = get_logger(__name__)

__all__ = [
    "COLORS", "SENTENCE_PAIRS", "SHAPES", "FusionConfig", "SemanticConfig", "ShapesDataset", "TrainResult", "denoising_loss",
    "draw_shape", "fusion_parameter_names", "freeze_for_fusion", "gather_for_checkpoint", "load_checkpoint",
    "sample_generator",
    "save_checkpoint", "train_fusion", "train_semantic",
]


def sample_generator(seed: int, sample: int) -> torch.Generator:
    """The generator of one training sample: a function of ``(seed, global sample number)`` only."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(sample) * 7_919 + 12_345) % (2**63 - 1))


# ---------------------------------------------------------------------------------------------------- configs
@dataclass
class FusionConfig:
    """Stage B hyper-parameters.

    Attributes:
        steps: optimizer steps.
        batch_size: **global** batch (split across processes; must be divisible by their number).
        lr, weight_decay, max_grad_norm: AdamW and gradient clipping (``None`` = no clipping).
        p_image: probability of conditioning on the image instead of the caption.
        p_uncond: probability of the unconditional ("") prompt (classifier-free guidance dropout).
        seed: keys every random draw (with the global sample number).
        checkpoint_every: save a checkpoint every this many steps into ``output_dir`` (``None`` = only at the end).
    """

    steps: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    p_image: float = 0.5
    p_uncond: float = 0.1
    seed: int = 0
    checkpoint_every: int | None = None

    def validate(self) -> None:
        """Check the settings; raises ``ValueError`` naming the first bad field and its value."""
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            check_size(name, value)
        for name in ("p_image", "p_uncond"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")


@dataclass
class SemanticConfig:
    """Stage A hyper-parameters (bias-only contrastive tuning of the encoder).

    Attributes:
        steps, batch_size (pairs per step), lr, seed: as in :class:`FusionConfig`.
        temperature: InfoNCE temperature ``tau``.
        method: ``"bitfit"`` (biases only) or ``"lora"``.
    """

    steps: int = 50
    batch_size: int = 8
    lr: float = 1e-3
    temperature: float = 0.05
    seed: int = 0
    method: str = "bitfit"


@dataclass
class TrainResult:
    """Losses per step (mean over the global batch) and the names of the trained parameters."""

    losses: list[float] = field(default_factory=list)
    trainable: list[str] = field(default_factory=list)
    start_step: int = 0


# ---------------------------------------------------------------------------------------------------- freezing
def fusion_parameter_names(pipe: MultiFusionPipeline) -> list[str]:
    """Stage B's trainable parameters: ``unet.*attn2*`` (incl. ``encoder_hid_proj``) and ``projection.*``."""
    names = [f"unet.{n}" for n, _ in pipe.unet.named_parameters() if ".attn2." in n or n.startswith("encoder_hid_proj.")]
    if pipe.projection is not None:
        names += [f"projection.{n}" for n, _ in pipe.projection.named_parameters()]
    if not names:
        raise ValueError("the UNet has no cross-attention (attn2) parameters: nothing for fusion tuning to train")
    return names


def _named_pipeline_parameters(pipe) -> dict[str, nn.Parameter]:
    params = {}
    for comp in ("encoder", "unet", "vae", "projection"):
        module = getattr(pipe, comp, None)
        if module is not None:
            params.update({f"{comp}.{n}": p for n, p in module.named_parameters()})
    return params


def freeze_for_fusion(pipe: MultiFusionPipeline) -> dict[str, nn.Parameter]:
    """Freeze the encoder, VAE and UNet except ``attn2`` + projection; returns the trainable ``{name: param}``."""
    trainable = set(fusion_parameter_names(pipe))
    params = _named_pipeline_parameters(pipe)
    for name, p in params.items():
        p.requires_grad_(name in trainable)
    return {n: params[n] for n in sorted(trainable)}


# ---------------------------------------------------------------------------------------------------- stage B
def _accelerator(accelerator):
    if accelerator is not None:
        return accelerator
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


class _LatentCache:
    """VAE latents (posterior mean × scaling factor) of dataset images, computed once per index (the VAE is frozen)."""

    def __init__(self, pipe):
        self.pipe, self.cache = pipe, {}

    @torch.no_grad()
    def __call__(self, dataset, indices: Sequence[int], device) -> torch.Tensor:
        todo = [i for i in indices if i not in self.cache]
        if todo:
            images = [dataset[i]["image"] for i in todo]
            pixels = self.pipe.vae_image_processor.preprocess(images).to(device=device, dtype=self.pipe.vae.dtype)
            latents = self.pipe.vae.encode(pixels).latent_dist.mean * self.pipe.vae.config.scaling_factor
            for i, lat in zip(todo, latents):
                self.cache[i] = lat
        return torch.stack([self.cache[i] for i in indices])


def _noise_scheduler(pipe):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def _sample_draws(seed: int, sample: int, latent_shape, num_timesteps: int, p_image: float, p_uncond: float):
    g = sample_generator(seed, sample)
    u_drop, u_mod = torch.rand(2, generator=g).tolist()
    t = int(torch.randint(0, num_timesteps, (1,), generator=g))
    noise = torch.randn(latent_shape, generator=g)
    modality = "uncond" if u_drop < p_uncond else ("image" if u_mod < p_image else "text")
    return modality, t, noise


def _batch_loss(pipe, encoder: InterleavedEncoder, dataset, samples: Sequence[int], cfg, latents_of, noise_sched,
                device, *, modality_override: str | None = None) -> torch.Tensor:
    """Mean denoising loss over the given global sample numbers (each keyed on ``(seed, sample)``)."""
    n = len(dataset)
    indices = [s % n for s in samples]
    latents = latents_of(dataset, indices, device)
    prompts, ts, noises = [], [], []
    for s, i in zip(samples, indices):
        modality, t, noise = _sample_draws(cfg.seed, s, latents.shape[1:], noise_sched.config.num_train_timesteps,
                                           cfg.p_image, cfg.p_uncond)
        modality = modality_override or modality
        item = dataset[i]
        prompts.append([""] if modality == "uncond" else ([item["image"]] if modality == "image" else [item["caption"]]))
        ts.append(t)
        noises.append(noise)
    with torch.no_grad():
        enc = encoder.encode(prompts, device=device)
    t = torch.tensor(ts, device=device)
    noise = torch.stack(noises).to(device=device, dtype=latents.dtype)
    noisy = noise_sched.add_noise(latents, noise, t)
    if noise_sched.config.prediction_type == "v_prediction":
        target = noise_sched.get_velocity(latents, noise, t)
    else:
        target = noise
    context = pipe.condition(enc.hidden_states)
    pred = pipe.unet(noisy, t, encoder_hidden_states=context, encoder_attention_mask=enc.attention_mask.to(device)).sample
    return nn.functional.mse_loss(pred.float(), target.float())


@torch.no_grad()
def denoising_loss(pipe: MultiFusionPipeline, dataset: torch.utils.data.Dataset, *, seed: int = 1234, batch_size: int = 8, modality: str = "text",
                   num_draws: int = 1) -> float:
    """Mean ε-MSE over ``dataset`` with fixed keyed noise/timesteps (a held-out metric; lower is better).

    Args:
        pipe: a :class:`MultiFusionPipeline`.
        dataset: e.g. a held-out :class:`ShapesDataset`.
        seed: keys the evaluation draws (the same seed gives the same noise and timesteps for every model).
        modality: condition on ``"text"`` (captions), ``"image"`` or ``"uncond"``.
        num_draws: noise/timestep draws per sample.
    """
    if modality not in ("text", "image", "uncond"):
        raise ValueError(f"modality={modality!r} must be 'text', 'image' or 'uncond'")
    device = pipe._execution_device
    encoder = pipe.interleaved_encoder()
    cfg = FusionConfig(seed=seed, p_image=0.0, p_uncond=0.0)
    latents_of, sched = _LatentCache(pipe), _noise_scheduler(pipe)
    total, count = 0.0, 0
    samples = list(range(len(dataset) * num_draws))
    for start in range(0, len(samples), batch_size):
        chunk = samples[start: start + batch_size]
        loss = _batch_loss(pipe, encoder, dataset, chunk, cfg, latents_of, sched, device, modality_override=modality)
        total += float(loss) * len(chunk)
        count += len(chunk)
    return total / count


def train_fusion(pipe: MultiFusionPipeline, dataset: torch.utils.data.Dataset, config: FusionConfig | None = None, *,
                 accelerator: Accelerator | None = None, output_dir: str | os.PathLike | None = None,
                 resume_from: str | os.PathLike | None = None, progress: bool = True,
                 fsdp: bool = False) -> TrainResult:
    """Stage B: fusion tuning of the UNet's cross-attention and the projection (everything else frozen).

    Args:
        pipe: a :class:`MultiFusionPipeline` (modified in place; leaves in eval mode).
        dataset: items with ``"image"`` (PIL) and ``"caption"`` (e.g. :class:`ShapesDataset`).
        config: :class:`FusionConfig`.
        accelerator: an ``accelerate.Accelerator`` (default: a new one; CPU when CUDA is absent). With N processes
            each handles ``batch_size / N`` samples of every global batch; gradients are averaged across processes.
        output_dir: where checkpoints go (``checkpoint-<step>/`` every ``checkpoint_every`` steps and ``final/``).
        resume_from: a checkpoint folder to resume from (weights, optimizer and step).
        progress: show a tqdm bar on the main process.
        fsdp: shard the UNet and projection with FSDP2 (:func:`~.sharding.shard_fusion`) without an FSDP2 launch too;
            checkpoints hold full tensors, the pipeline stays sharded (save via ``core.sharding.unsharded_copy``).

    Returns:
        :class:`TrainResult` (per-step global mean losses, trained parameter names).
    """
    from hf_ext.utils.progress import progress_bar

    cfg = config or FusionConfig()
    cfg.validate()
    acc = _accelerator(accelerator)
    world, rank = acc.num_processes, acc.process_index
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by the {world} processes")
    device = acc.device
    pipe.to(device)
    freeze_for_fusion(pipe)
    shard = sharding_kwargs(acc, fsdp)
    if shard is not None:
        shard_fusion(pipe, device=device, **shard)
    params = freeze_for_fusion(pipe)  # after sharding: the DTensor parameters the optimizer must hold
    pipe.unet.train()
    if pipe.projection is not None:
        pipe.projection.train()
    optimizer = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    result = TrainResult(trainable=list(params))
    if resume_from is not None:
        state = load_checkpoint(resume_from, params, optimizer)
        result.start_step = int(state.get("step", 0))
        result.losses = list(state.get("losses", []))
    encoder = pipe.interleaved_encoder()
    latents_of, sched = _LatentCache(pipe), _noise_scheduler(pipe)
    local = cfg.batch_size // world
    bar = progress_bar(range(result.start_step, cfg.steps), desc="fusion tuning", enabled=progress and acc.is_main_process)
    for step in bar:
        first = step * cfg.batch_size + rank * local
        samples = list(range(first, first + local))
        loss = _batch_loss(pipe, encoder, dataset, samples, cfg, latents_of, sched, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if shard is None:  # FSDP2 already averaged them in its reduce-scatter
            _average_gradients(acc, params.values())
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.max_grad_norm)
        optimizer.step()
        mean_loss = float(acc.reduce(loss.detach(), reduction="mean")) if world > 1 else loss.item()
        result.losses.append(mean_loss)
        bar.set_postfix(loss=f"{mean_loss:.4f}")
        done = step + 1
        if output_dir is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            write_checkpoint(acc, Path(output_dir) / f"checkpoint-{done}", params, optimizer,
                              {"step": done, "losses": result.losses, "config": asdict(cfg)}, shard is not None)
    if output_dir is not None:
        write_checkpoint(acc, Path(output_dir) / "final", params, optimizer,
                          {"step": cfg.steps, "losses": result.losses, "config": asdict(cfg)}, shard is not None)
    for p in params.values():
        p.requires_grad_(False)
    pipe.unet.eval()
    if pipe.projection is not None:
        pipe.projection.eval()
    return result


def _average_gradients(acc, params) -> None:
    if acc.num_processes == 1:
        return
    for p in params:
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        p.grad = acc.reduce(grad.contiguous(), reduction="mean")


# ---------------------------------------------------------------------------------------------------- stage A
def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of paired embeddings ``[N, D]`` (cosine similarities / ``temperature``)."""
    a = nn.functional.normalize(a.float(), dim=-1)
    b = nn.functional.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.T, labels)) / 2


def _with_global_negatives(acc, local: torch.Tensor) -> torch.Tensor:
    """All processes' rows in rank order, this process's rows keeping their autograd graph (the others are constants)."""
    full = acc.gather(local.detach().contiguous())
    n, rank = local.shape[0], acc.process_index
    return torch.cat([full[: rank * n], local, full[(rank + 1) * n:]])


def train_semantic(encoder: InterleavedEncoder, pairs: Sequence[tuple[str, str]], config: SemanticConfig | None = None,
                   *, accelerator: Accelerator | None = None, progress: bool = True, fsdp: bool = False) -> TrainResult:
    """Stage A: semantic tuning of the encoder's language model (BitFit by default) on sentence pairs.

    Each pair ``(a, b)`` is a positive (e.g. an NLI entailment or a translation); the other pairs of the batch are
    negatives. Embeddings are mean-pooled hidden states of the encoder's layer. Batches are drawn with a generator
    keyed on ``(seed, step)``. With N processes each encodes its contiguous share of the batch and the embeddings are
    all-gathered, so every pair meets the whole batch's negatives: the loss and the (averaged) gradients are those of
    one process, up to float rounding.

    Args:
        encoder, pairs, config: as above (``config.batch_size`` pairs per step, divisible by the processes).
        accelerator, progress: an ``accelerate.Accelerator`` (default: a new one); tqdm bar on the main process.
        fsdp: shard the encoder with FSDP2 (:func:`~.sharding.shard_semantic`) without an FSDP2 launch too; it
            stays sharded (save it via :func:`hf_ext.core.sharding.unsharded_copy`).

    Returns:
        :class:`TrainResult`; afterwards only the tuned parameters differ from before.

    Raises:
        ValueError: fewer than 2 pairs, an unknown method, (BitFit) a language model without biases, or a batch that
            does not split evenly across the processes.
    """
    from hf_ext.utils.progress import progress_bar

    from .tuning import enable_bitfit, enable_lora

    cfg = config or SemanticConfig()
    if len(pairs) < 2:
        raise ValueError(f"contrastive tuning needs at least 2 sentence pairs, got {len(pairs)}")
    if cfg.method not in ("bitfit", "lora"):
        raise ValueError(f"method={cfg.method!r} must be 'bitfit' or 'lora'")
    acc = _accelerator(accelerator)
    world, rank = acc.num_processes, acc.process_index
    bsz = min(cfg.batch_size, len(pairs))
    if bsz % world:
        raise ValueError(f"a batch of {bsz} pairs (batch_size={cfg.batch_size}, {len(pairs)} pairs) does not split "
                         f"evenly across {world} processes")
    model = encoder.model
    names = enable_bitfit(model) if cfg.method == "bitfit" else enable_lora(model)
    shard = sharding_kwargs(acc, fsdp)
    if shard is not None:
        shard_semantic(encoder, device=acc.device, **shard)
    named = dict(model.named_parameters())  # after sharding: the DTensor parameters
    params = [named[n] for n in names]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    was_training = model.training
    model.train()
    result = TrainResult(trainable=names)
    local = bsz // world
    for step in progress_bar(range(cfg.steps), desc="semantic tuning", enabled=progress and acc.is_main_process):
        g = sample_generator(cfg.seed, step)
        idx = torch.randperm(len(pairs), generator=g)[:bsz].tolist()[rank * local:(rank + 1) * local]
        a = encoder.encode([[pairs[i][0]] for i in idx], device=acc.device).pooled()
        b = encoder.encode([[pairs[i][1]] for i in idx], device=acc.device).pooled()
        if world > 1:
            a, b = _with_global_negatives(acc, a), _with_global_negatives(acc, b)
        loss = info_nce(a, b, cfg.temperature)
        optimizer.zero_grad(set_to_none=True)
        (loss * world).backward()  # own rows only: ×world makes the mean over processes the full-batch gradient
        if shard is None:  # FSDP2 averages in its reduce-scatter
            _average_gradients(acc, params)
        optimizer.step()
        result.losses.append(loss.item())
    for p in params:
        p.requires_grad_(False)
    model.train(was_training)
    if not math.isfinite(result.losses[-1]):
        raise FloatingPointError("stage A diverged (non-finite loss); lower the learning rate")
    return result
