"""Tour step ``sld``: Safe Latent Diffusion vs plain generation (PNG grid), UNet batching, and the I2P metrics.

On tiny random SD components (default) the images are noise-like; the step still shows what SLD does to the
sampling trajectory (difference to the plain image, share of guided latent elements per step), that one UNet call
per step carries the concept branch, and the I2P metrics on a synthetic result table. With ``--model`` (an SD 1.x/2.x
folder or Hub id) it generates real images at 512×512 (slow on CPU).
"""

from __future__ import annotations

from hf_ext.tour import StepResult, TourContext, tour_step


@tour_step("sld", component="sld",
           description="SLD off vs Medium vs Max images (PNG), UNet batch per step, I2P metrics on synthetic scores")
def sld_step(ctx: TourContext) -> StepResult:
    """Generate with SLD off / Medium / Max from one seed, save a PNG grid and per-step diagnostics."""
    import numpy as np
    import torch
    from PIL import Image

    from hf_ext.core.hooks import register_hooks
    from hf_ext.diffusion.sld import SafeLatentDiffusionPipeline, SLDConfig
    from hf_ext.diffusion.sld.i2p import expected_max_inappropriateness, inappropriate_probability

    if ctx.model:
        pipe = SafeLatentDiffusionPipeline.from_pretrained(ctx.model).to(ctx.device)
        steps, label = (50 if ctx.full else 25), ctx.model
    else:
        from hf_ext.tiny import CLIP_MAX_POSITIONS, tiny_sd_components

        # The tiny CLIP tokenizer spends about one token per character on most words: at CLIP's 77 positions the prompt
        # fits, the paper's 20-term default concept (~200 tokens here, ~60 with SD's tokenizer) would be truncated.
        pipe = SafeLatentDiffusionPipeline(**tiny_sd_components(seed=ctx.seed, max_length=CLIP_MAX_POSITIONS))
        pipe = pipe.to(ctx.device)
        pipe.safety_concept = "violence, nudity, blood"
        steps, label = (50 if ctx.full else 12), "tiny random SD components"
    pipe.set_progress_bar_config(disable=not ctx.progress)
    prompt = "a photo of a person at the beach"
    batches: list[int] = []
    images, diags = {}, {}
    with register_hooks(pre_hooks={pipe.unet: lambda m, a: batches.append(int(a[0].shape[0]))}):
        for name, preset in [("off", SLDConfig.OFF), ("medium", SLDConfig.MEDIUM.replace(warmup_steps=0.2)),
                             ("max", SLDConfig.MAX)]:
            batches.clear()
            gen = torch.Generator("cpu").manual_seed(ctx.seed)
            out = pipe(prompt, num_inference_steps=steps, generator=gen, output_type="np", sld_preset=preset,
                       return_sld_diagnostics=True)
            images[name], diags[name] = out.images[0], out.sld_diagnostics
            if name == "max":
                max_batches = list(batches)
    artifacts = []
    tiles = [(np.clip(images[k], 0, 1) * 255).round().astype(np.uint8) for k in ("off", "medium", "max")]
    grid = Image.fromarray(np.concatenate(tiles, axis=1))
    scale = max(1, 256 // tiles[0].shape[0])
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    grid_path = ctx.artifact("sld_off_medium_max.png")
    grid.save(grid_path)
    artifacts.append(grid_path)
    for k, tile in zip(("off", "medium", "max"), tiles):
        p = ctx.artifact(f"sld_{k}.png")
        Image.fromarray(tile).save(p)
        artifacts.append(p)
    try:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3), layout="tight")
        ax = fig.add_subplot()
        for k in ("medium", "max"):
            ax.plot([d.step for d in diags[k]], [d.guided_fraction for d in diags[k]], marker="o", ms=3, label=k)
        ax.set_xlabel("step")
        ax.set_ylabel("share of guided latent elements (μ > 0)")
        ax.legend()
        plot_path = ctx.artifact("sld_guided_share.png")
        fig.savefig(plot_path, dpi=100)
        artifacts.append(plot_path)
    except ImportError:
        pass
    # I2P metrics on a synthetic result table (no classifier needed): 40 prompts, 10 images each
    import pandas as pd

    rng = np.random.default_rng(ctx.seed)
    rates = rng.beta(0.5, 1.5, size=40)
    res = pd.DataFrame([{"prompt": f"p{i}", "categories": ["sexual", "violence"][i % 2],
                         "unsafe": int(rng.random() < rates[i])} for i in range(40) for _ in range(10)])
    prob = inappropriate_probability(res, ["sexual", "violence"])
    exp_max, exp_std = expected_max_inappropriateness(res, n_samples=2000, seed=ctx.seed)
    diff_med = float(np.abs(images["medium"] - images["off"]).mean())
    diff_max = float(np.abs(images["max"] - images["off"]).mean())
    guided_max = float(np.mean([d.guided_fraction for d in diags["max"]]))
    return StepResult(
        metrics={"mean_abs_diff_max_vs_off": round(diff_max, 4), "unet_batch_per_step_max": max_batches[0],
                 "guided_share_max": round(guided_max, 3), "mean_abs_diff_medium_vs_off": round(diff_med, 4),
                 "unet_calls_per_generation": len(max_batches), "synthetic_i2p_probability": round(prob["overall"], 2),
                 "synthetic_i2p_exp_max": round(exp_max, 2)},
        summary=(f"{label}, {steps} steps, one seed: SLD Max changes the image by {diff_max:.3f} mean |Δ| (Medium "
                 f"with 20 % warm-up {diff_med:.3f}); one UNet call per step on a batch of {max_batches[0]} "
                 f"(uncond, prompt, concept); on average {100 * guided_max:.0f} % of latent elements are guided "
                 f"under Max. I2P metrics on a synthetic table: probability {prob['overall']:.1f} %, expected max "
                 f"over 25 prompts {exp_max:.1f} ± {exp_std:.1f}."),
        artifacts=artifacts,
    )
