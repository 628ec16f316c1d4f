"""SLD latency: SafeLatentDiffusionPipeline vs plain StableDiffusionPipeline vs diffusers' StableDiffusionPipelineSafe.

Batch 1, one image, the same components, scheduler and seed for the three arms, SLD Medium (diffusers' defaults);
the arms run alternately (plain, diffusers safe, ours, plain, …) and each reports the median of ``--repeats`` runs.
Target (issue 9, GPU): ours ≤ 1.05× plain and ≤ 1.02× diffusers' safe pipeline.

* CPU (default): tiny random SD components (``hf_ext.testing.tiny_sd_components``), 64×64, 20 steps.
* ``--device cuda``: SD-1.5-size random-weight components built on the GPU in fp16 (UNet 860M: channels
  320/640/1280/1280, cross-attention 768; CLIP ViT-L/14 text encoder; SD VAE), 512×512, 50 steps; allocator
  peak per arm.

Run: ``python benchmarks/sld_latency.py [--quick] [--device cuda] [--repeats N]``.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from _timing import append_json_row, common_argparser, summarize, sync

NAME = "sld_latency"
SIZES = {
    "quick": dict(size=32, steps=2, repeats=2, warmup=0),
    "cpu": dict(size=64, steps=20, repeats=7, warmup=1),
    "cuda": dict(size=512, steps=50, repeats=5, warmup=1),
}


def sd15_components(device: str, dtype):
    """Random-weight components with SD 1.5's shapes, created directly on ``device``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from hf_ext.testing import tiny_clip_tokenizer

    tok = tiny_clip_tokenizer(max_length=77)
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8, layers_per_block=2,
                                    block_out_channels=(320, 640, 1280, 1280))
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            sample_size=512)
        text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=max(len(tok), 1000), hidden_size=768,
                                                    intermediate_size=3072, num_hidden_layers=12,
                                                    num_attention_heads=12, max_position_embeddings=77,
                                                    bos_token_id=0, eos_token_id=1, pad_token_id=1))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return dict(unet=unet.to(dtype).eval(), vae=vae.to(dtype).eval(), text_encoder=text_encoder.to(dtype).eval(),
                tokenizer=tok, scheduler=scheduler, safety_checker=None, feature_extractor=None, image_encoder=None)


def build(device: str):
    import torch
    from diffusers import StableDiffusionPipeline

    from hf_ext.diffusion.sld import SafeLatentDiffusionPipeline

    if device.startswith("cuda"):
        comps = sd15_components(device, torch.float16)
    else:
        from hf_ext.testing import tiny_sd_components

        comps = tiny_sd_components(seed=0)
        from diffusers import DDIMScheduler

        comps["scheduler"] = DDIMScheduler.from_config(comps["scheduler"].config, steps_offset=1)
    pipes = {"plain": StableDiffusionPipeline(**comps, requires_safety_checker=False),
             "ours": SafeLatentDiffusionPipeline(**comps)}
    try:
        from diffusers import StableDiffusionPipelineSafe

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipes["diffusers_safe"] = StableDiffusionPipelineSafe(**comps, requires_safety_checker=False)
    except ImportError:
        print("diffusers' StableDiffusionPipelineSafe is not importable in this diffusers: arm skipped")
    for p in pipes.values():
        p.set_progress_bar_config(disable=True)
    return pipes


def run_arm(pipes, name: str, size: int, steps: int, device: str):
    import torch

    gen = torch.Generator("cpu").manual_seed(0)
    kw = dict(height=size, width=size, num_inference_steps=steps, guidance_scale=7.5, generator=gen,
              output_type="np")
    if name == "plain":
        out = pipes["plain"]("a photo of a cat", **kw)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = pipes[name]("a photo of a cat", sld_guidance_scale=1000, sld_warmup_steps=10, sld_threshold=0.01,
                              sld_momentum_scale=0.3, sld_mom_beta=0.4, **kw)
    sync(device)
    return out


def plot(row: dict, path: Path) -> Path | None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    arms = [a for a in ("plain", "diffusers_safe", "ours") if f"median_{a}_s" in row]
    fig = Figure(figsize=(5, 3), dpi=100, layout="tight")
    ax = fig.add_subplot()
    med = [row[f"median_{a}_s"] for a in arms]
    ax.bar(arms, med, yerr=[row[f"iqr_{a}_s"] / 2 for a in arms], color=["grey", "tab:orange", "tab:blue"][:len(arms)])
    for i, m in enumerate(med):
        ax.text(i, m, f"{m:.3f} s\n×{m / med[0]:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("median seconds / image")
    ax.set_title(f"SLD latency ({row['device']}, {row['size']}², {row['steps']} steps, batch 1)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def main(argv=None) -> int:
    args = common_argparser(__doc__.splitlines()[0]).parse_args(argv)
    import torch

    started = time.perf_counter()
    if args.quick and not args.device.startswith("cuda"):
        torch.set_num_threads(1)  # tiny models: one thread is fastest and robust on a busy machine
    mode = "quick" if args.quick else ("cuda" if args.device.startswith("cuda") else "cpu")
    size = SIZES[mode]
    repeats = args.repeats or size["repeats"]
    if not args.quick and repeats < 5:
        print(f"--repeats {repeats} < 5: the issue asks for a median of at least 5 alternating runs")
    t0 = time.perf_counter()
    pipes = build(args.device)
    build_s = time.perf_counter() - t0
    arms = [a for a in ("plain", "diffusers_safe", "ours") if a in pipes]
    print(f"{NAME}: {mode} mode, {size['size']}×{size['size']}, {size['steps']} steps, batch 1, {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads (components built in {build_s:.1f} s)")
    # correctness first: ours and diffusers' safe pipeline agree
    if "diffusers_safe" in pipes:
        a = run_arm(pipes, "ours", size["size"], size["steps"], args.device).images
        b = run_arm(pipes, "diffusers_safe", size["size"], size["steps"], args.device).images
        import numpy as np

        max_diff = float(np.nan_to_num(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32))).max())
    else:
        max_diff = float("nan")
    for _ in range(size["warmup"]):
        for arm in arms:
            run_arm(pipes, arm, size["size"], size["steps"], args.device)
    times = {a: [] for a in arms}
    peaks = {a: 0 for a in arms}
    cuda = args.device.startswith("cuda")
    for _ in range(repeats):
        for arm in arms:  # alternating
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            run_arm(pipes, arm, size["size"], size["steps"], args.device)
            times[arm].append(time.perf_counter() - start)
            if cuda:
                peaks[arm] = max(peaks[arm], torch.cuda.max_memory_allocated() / 2**20)
    stats = {a: summarize(t) for a, t in times.items()}
    row = {"benchmark": NAME, "quick": args.quick, "device": args.device, "size": size["size"], "steps": size["steps"],
           "repeats": repeats, "sld": "medium", "baseline": "StableDiffusionPipeline and diffusers StableDiffusionPipelineSafe",
           "project": "SafeLatentDiffusionPipeline", "max_abs_image_diff_vs_diffusers_safe": max_diff}
    for a in arms:
        row[f"median_{a}_s"] = stats[a]["median"]
        row[f"iqr_{a}_s"] = stats[a]["iqr"]
        row[f"times_{a}_s"] = times[a]
        if cuda:
            row[f"peak_mb_{a}"] = peaks[a]
    row["ratio_ours_over_plain"] = stats["ours"]["median"] / stats["plain"]["median"]
    if "diffusers_safe" in stats:
        row["ratio_ours_over_diffusers_safe"] = stats["ours"]["median"] / stats["diffusers_safe"]["median"]
        row["ratio_diffusers_safe_over_plain"] = stats["diffusers_safe"]["median"] / stats["plain"]["median"]
    if cuda:
        row["gpu"] = torch.cuda.get_device_name()
    for a in arms:
        print(f"  {a:<15} median {stats[a]['median']:.4f} s  (IQR {stats[a]['iqr']:.4f} s, n={len(times[a])})"
              + (f"  peak {peaks[a]:.0f} MiB" if cuda else ""))
    line = f"ratio ours/plain {row['ratio_ours_over_plain']:.3f} (target ≤ 1.05)"
    if "ratio_ours_over_diffusers_safe" in row:
        line += (f", ours/diffusers_safe {row['ratio_ours_over_diffusers_safe']:.3f} (target ≤ 1.02), "
                 f"diffusers_safe/plain {row['ratio_diffusers_safe_over_plain']:.3f}; "
                 f"max |Δimage| vs diffusers safe {max_diff:.2e}")
    print(line)
    path = append_json_row(NAME, row, out=args.out, device=args.device)
    fig = plot(row, Path(args.out) / f"{NAME}_{'cuda' if cuda else 'cpu'}.png")
    print(f"row appended to {path}" + (f"; figure {fig}" if fig else "")
          + f" ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
