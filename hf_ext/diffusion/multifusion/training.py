"""MultiFusion training on Accelerate (1 or N processes): stage A semantic bias tuning, stage B fusion tuning.

* **Stage A** (:func:`train_semantic`, S-MAGMA): only the language model's biases train (BitFit,
  :func:`hf_ext.diffusion.mvader.tuning.enable_bitfit`), with a symmetric InfoNCE loss on sentence pairs
  (mean-pooled hidden states, in-batch negatives, temperature ``tau``) so hidden states become *semantic*.
* **Stage B** (:func:`train_fusion`): everything frozen except the UNet's cross-attention (``attn2``) and the
  projection (:class:`MultiFusionProjector` or the UNet's ``encoder_hid_proj``); ε-MSE (or v-MSE) denoising loss,
  conditioning on the caption **or** the image (probability ``p_image``) with unconditional dropout ``p_uncond``.

Every random draw of a training sample (noise, timestep, modality, dropout) comes from a generator seeded with
``(seed, global sample number)``, and the global batch of step ``s`` is samples ``s*G … s*G+G-1`` split across the
processes, whose gradients are averaged. So N processes with ``G/N`` samples each give the same update as one process
with ``G`` samples (up to float summation order), and a resumed run repeats the uninterrupted one.

Checkpoints (:func:`save_checkpoint`): ``trainable.safetensors`` (the trained parameters), ``optimizer.safetensors`` +
``optimizer.json`` (AdamW state) and ``training_state.json`` (step, config, losses); never pickle.

The toy data (:class:`ShapesDataset`, :data:`SENTENCE_PAIRS`) is in :mod:`hf_ext.diffusion.multifusion.toy_data`
and re-exported here.

Example:
    >>> from hf_ext.diffusion.multifusion import MultiFusionPipeline, tiny_multifusion_components
    >>> pipe = MultiFusionPipeline(**tiny_multifusion_components())
    >>> data = ShapesDataset(16, seed=0)
    >>> result = train_fusion(pipe, data, FusionConfig(steps=2, batch_size=2), progress=False)  # doctest: +SKIP
    >>> len(result.losses)  # doctest: +SKIP
    2
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .encoding_multifusion import InterleavedEncoder
from .toy_data import COLORS, SENTENCE_PAIRS, SHAPES, ShapesDataset, draw_shape

logger = logging.getLogger(__name__)

__all__ = [
    "COLORS", "SENTENCE_PAIRS", "SHAPES", "FusionConfig", "SemanticConfig", "ShapesDataset", "TrainResult", "denoising_loss",
    "draw_shape", "fusion_parameter_names", "freeze_for_fusion", "load_checkpoint", "sample_generator",
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
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
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
def fusion_parameter_names(pipe) -> list[str]:
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


def freeze_for_fusion(pipe) -> dict[str, nn.Parameter]:
    """Freeze the encoder, VAE and UNet except ``attn2`` + projection; returns the trainable ``{name: param}``."""
    trainable = set(fusion_parameter_names(pipe))
    params = _named_pipeline_parameters(pipe)
    for name, p in params.items():
        p.requires_grad_(name in trainable)
    return {n: params[n] for n in sorted(trainable)}


# ---------------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(directory, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None = None,
                    state: dict | None = None) -> Path:
    """Write ``trainable.safetensors``, the optimizer state (``optimizer.safetensors`` + ``.json``) and ``state``."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_file({n: p.detach().cpu().contiguous() for n, p in params.items()}, str(out / "trainable.safetensors"))
    if optimizer is not None:
        sd = optimizer.state_dict()
        tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
        for pid, st in sd["state"].items():
            meta["state"][str(pid)] = {}
            for key, value in st.items():
                if torch.is_tensor(value):
                    tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
                    meta["state"][str(pid)][key] = "__tensor__"
                else:
                    meta["state"][str(pid)][key] = value
        save_file(tensors, str(out / "optimizer.safetensors"))
        (out / "optimizer.json").write_text(json.dumps(meta), encoding="utf-8")
    (out / "training_state.json").write_text(json.dumps(state or {}, indent=1), encoding="utf-8")
    return out


def load_checkpoint(directory, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load what :func:`save_checkpoint` wrote into ``params`` (in place) and ``optimizer``; returns the state dict.

    Raises:
        FileNotFoundError: no checkpoint in ``directory``.
        ValueError: the checkpoint's parameter names differ from ``params``.
    """
    from safetensors.torch import load_file

    src = Path(directory)
    if not (src / "trainable.safetensors").is_file():
        raise FileNotFoundError(f"no checkpoint (trainable.safetensors) in {src}")
    tensors = load_file(str(src / "trainable.safetensors"))
    if set(tensors) != set(params):
        missing, extra = sorted(set(params) - set(tensors))[:3], sorted(set(tensors) - set(params))[:3]
        raise ValueError(f"checkpoint parameters do not match the model: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[n].to(p.device, p.dtype))
    if optimizer is not None and (src / "optimizer.json").is_file():
        meta = json.loads((src / "optimizer.json").read_text(encoding="utf-8"))
        opt_t = load_file(str(src / "optimizer.safetensors"))
        state = {}
        for pid, st in meta["state"].items():
            state[int(pid)] = {k: (opt_t[f"{pid}.{k}"] if v == "__tensor__" else v) for k, v in st.items()}
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return json.loads((src / "training_state.json").read_text(encoding="utf-8"))


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
def denoising_loss(pipe, dataset, *, seed: int = 1234, batch_size: int = 8, modality: str = "text",
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


def train_fusion(pipe, dataset, config: FusionConfig | None = None, *, accelerator=None, output_dir=None,
                 resume_from=None, progress: bool = True) -> TrainResult:
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

    Returns:
        :class:`TrainResult` (per-step global mean losses, trained parameter names).
    """
    from tqdm.auto import tqdm

    cfg = config or FusionConfig()
    cfg.validate()
    acc = _accelerator(accelerator)
    world, rank = acc.num_processes, acc.process_index
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by the {world} processes")
    device = acc.device
    pipe.to(device)
    params = freeze_for_fusion(pipe)
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
    bar = tqdm(range(result.start_step, cfg.steps), desc="fusion tuning", disable=not progress or not acc.is_main_process)
    for step in bar:
        first = step * cfg.batch_size + rank * local
        samples = list(range(first, first + local))
        loss = _batch_loss(pipe, encoder, dataset, samples, cfg, latents_of, sched, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _average_gradients(acc, params.values())
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.max_grad_norm)
        optimizer.step()
        mean_loss = float(acc.reduce(loss.detach(), reduction="mean")) if world > 1 else loss.item()
        result.losses.append(mean_loss)
        bar.set_postfix(loss=f"{mean_loss:.4f}")
        done = step + 1
        if output_dir is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            if acc.is_main_process:
                save_checkpoint(Path(output_dir) / f"checkpoint-{done}", params, optimizer,
                                {"step": done, "losses": result.losses, "config": asdict(cfg)})
            acc.wait_for_everyone()
    if output_dir is not None:
        if acc.is_main_process:
            save_checkpoint(Path(output_dir) / "final", params, optimizer,
                            {"step": cfg.steps, "losses": result.losses, "config": asdict(cfg)})
        acc.wait_for_everyone()
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


def train_semantic(encoder: InterleavedEncoder, pairs: Sequence[tuple[str, str]], config: SemanticConfig | None = None,
                   *, accelerator=None, progress: bool = True) -> TrainResult:
    """Stage A: semantic tuning of the encoder's language model (BitFit by default) on sentence pairs.

    Each pair ``(a, b)`` is a positive (e.g. an NLI entailment or a translation); the other pairs of the batch are
    negatives. Embeddings are mean-pooled hidden states of the encoder's layer. Batches are drawn with a generator
    keyed on ``(seed, step)``. With N processes the gradients are averaged, but negatives are per process.

    Returns:
        :class:`TrainResult`; afterwards only the tuned parameters differ from before.

    Raises:
        ValueError: fewer than 2 pairs, an unknown method, or (BitFit) a language model without biases.
    """
    from tqdm.auto import tqdm

    from ..mvader.tuning import enable_bitfit, enable_lora

    cfg = config or SemanticConfig()
    if len(pairs) < 2:
        raise ValueError(f"contrastive tuning needs at least 2 sentence pairs, got {len(pairs)}")
    if cfg.method not in ("bitfit", "lora"):
        raise ValueError(f"method={cfg.method!r} must be 'bitfit' or 'lora'")
    acc = _accelerator(accelerator)
    model = encoder.model
    names = enable_bitfit(model) if cfg.method == "bitfit" else enable_lora(model)
    named = dict(model.named_parameters())
    params = [named[n] for n in names]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    was_training = model.training
    model.train()
    result = TrainResult(trainable=names)
    bsz = min(cfg.batch_size, len(pairs))
    for step in tqdm(range(cfg.steps), desc="semantic tuning", disable=not progress or not acc.is_main_process):
        g = sample_generator(cfg.seed, step)
        idx = torch.randperm(len(pairs), generator=g)[:bsz].tolist()
        idx = idx[acc.process_index::acc.num_processes] or idx[:2]
        left = [[pairs[i][0]] for i in idx]
        right = [[pairs[i][1]] for i in idx]
        loss = info_nce(encoder.encode(left, device=acc.device).pooled(), encoder.encode(right, device=acc.device).pooled(),
                        cfg.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _average_gradients(acc, params)
        optimizer.step()
        result.losses.append(loss.item())
    for p in params:
        p.requires_grad_(False)
    model.train(was_training)
    if not math.isfinite(result.losses[-1]):
        raise FloatingPointError("stage A diverged (non-finite loss); lower the learning rate")
    return result
