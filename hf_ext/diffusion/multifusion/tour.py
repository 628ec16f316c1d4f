"""Tour step ``multifusion``: fusion-tune a tiny MultiFusion pipeline for a few steps and generate from an
interleaved image + text prompt (with and without AtMan weighting); writes a PNG strip.

With ``--model`` it loads a saved ``MultiFusionPipeline`` folder instead of building a tiny one (no training).
"""

from __future__ import annotations

from hf_ext.tour import StepResult, TourContext, tour_step


@tour_step("multifusion", component="multifusion",
           description="MultiFusion: fusion tuning (attn2 + projection) and interleaved image/text generation")
def multifusion_step(ctx: TourContext) -> StepResult:
    """Stage B fusion tuning on coloured shapes, held-out denoising loss, interleaved + weighted generation."""
    import torch
    from PIL import Image

    from hf_ext.diffusion.multifusion import MultiFusionPipeline, tiny_multifusion_components
    from hf_ext.diffusion.multifusion.training import (
        FusionConfig,
        ShapesDataset,
        denoising_loss,
        draw_shape,
        train_fusion,
    )

    if ctx.model:
        pipe = MultiFusionPipeline.from_pretrained(ctx.model).to(ctx.device)
        label, trained = ctx.model, None
    else:
        pipe = MultiFusionPipeline(**tiny_multifusion_components(seed=ctx.seed)).to(ctx.device)
        label = "tiny Llava encoder + tiny SD UNet"
        held = ShapesDataset(8, seed=ctx.seed + 99)
        before = denoising_loss(pipe, held)
        steps = 40 if ctx.full else 6
        res = train_fusion(pipe, ShapesDataset(64, seed=ctx.seed), FusionConfig(steps=steps, batch_size=8, lr=1e-2,
                                                                                  seed=ctx.seed), progress=ctx.progress)
        after = denoising_loss(pipe, held)
        trained = (steps, before, after, len(res.trainable))
    pipe.set_progress_bar_config(disable=not ctx.progress)
    reference = draw_shape("blue", "circle", 32)
    prompts = {"text": ["a red square"], "image+text": [reference, "a red square"],
               "image+text 1:20": [(reference, 1.0), ("a red square", 20.0)]}
    images = []
    for prompt in prompts.values():
        g = torch.Generator().manual_seed(ctx.seed)
        images.append(pipe(prompt, num_inference_steps=10 if ctx.full else 4, generator=g).images[0])
    strip = Image.new("RGB", (32 * (len(images) + 1), 32), (255, 255, 255))
    strip.paste(reference.resize((32, 32)), (0, 0))
    for i, img in enumerate(images):
        strip.paste(img.resize((32, 32)), (32 * (i + 1), 0))
    path = ctx.artifact("multifusion_generations.png")
    strip.resize((strip.width * 4, strip.height * 4), Image.NEAREST).save(path)
    metrics = {"prompts": len(prompts)}
    summary = f"{label}: generated from text, image+text and weighted image+text prompts ({path.name}: reference, then each)."
    if trained is not None:
        steps, before, after, n_params = trained
        metrics.update(heldout_loss_before=round(before, 4), heldout_loss_after=round(after, 4), steps=steps)
        summary = (f"{label}: {steps} fusion-tuning steps on {n_params} attn2/projection tensors lowered the held-out "
                   f"denoising loss {before:.4f} → {after:.4f}; " + summary.split(": ", 1)[1])
    return StepResult(metrics=metrics, summary=summary, artifacts=[path])
