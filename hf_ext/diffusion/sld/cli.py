"""``hf-ext sld generate|eval-i2p``: Safe Latent Diffusion from the command line (standard-library imports only here).

Examples:
    hf-ext sld generate --prompt "a photo of a cat" --preset strong --out sld_out --compare
    hf-ext sld generate --pipeline path/to/sd-folder --prompt "..." --preset max --device cuda
    hf-ext sld eval-i2p --table i2p_benchmark.csv --pipeline path/to/sd --preset strong --clip path/to/clip \
        --categories sexual --limit 100 --out i2p_results.csv
    hf-ext sld eval-i2p --results i2p_results.csv          # metrics of an existing results CSV
"""

from __future__ import annotations

import argparse
import json
import logging

from ...compat import diffusers_dtype_kwargs

logger = logging.getLogger(__name__)

PRESET_CHOICES = ["weak", "weak_diffusers", "medium", "strong", "max", "off"]


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", default=None,
                   help="local SD 1.x/2.x or SDXL pipeline folder or Hub id (default: tiny random SD built in code)")
    p.add_argument("--xl", action="store_true", help="with no --pipeline: use tiny random SDXL components")
    p.add_argument("--preset", default="medium", choices=PRESET_CHOICES, help="SLD preset (default medium)")
    p.add_argument("--sld-guidance-scale", type=float, default=None)
    p.add_argument("--sld-warmup-steps", type=float, default=None,
                   help="step index (integer value) or fraction in (0, 1)")
    p.add_argument("--sld-threshold", type=float, default=None)
    p.add_argument("--sld-momentum-scale", type=float, default=None)
    p.add_argument("--sld-mom-beta", type=float, default=None)
    p.add_argument("--concept", action="append", default=None,
                   help="safety concept text (repeat for several; default diffusers' concept)")
    p.add_argument("--steps", type=int, default=None, help="inference steps (default 50, or 8 on tiny models)")
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--no-progress", action="store_true")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``sld`` group (``generate``, ``eval-i2p``) to the ``hf-ext`` parser."""
    p = subparsers.add_parser("sld", help="Safe Latent Diffusion: generate with SLD, evaluate on I2P",
                              description="Safe Latent Diffusion (SLD) pipelines for SD 1.x/2.x and SDXL.")
    sub = p.add_subparsers(dest="sld_command", metavar="ACTION", required=True)
    g = sub.add_parser("generate", help="generate images with SLD (PNG files)",
                       description="Generate images with SLD and save them as PNG (optionally next to SLD off).")
    g.add_argument("--prompt", action="append", required=True, help="prompt (repeat for several)")
    g.add_argument("--num-images", type=int, default=1, help="images per prompt")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--compare", action="store_true", help="also generate with SLD off (same seed)")
    g.add_argument("--out", default="sld_out", help="output folder (default sld_out)")
    g.add_argument("--save-pipeline", default=None, help="also save the pipeline (with its concept) here")
    _add_pipeline_args(g)
    g.set_defaults(func=_cmd_generate)

    e = sub.add_parser("eval-i2p", help="I2P: generate, classify and report the paper's metrics",
                       description="Run the I2P protocol (2×5 images per prompt, seeded with sd_seed) with a local "
                                   "CLIP zero-shot classifier, or compute metrics of an existing results CSV.")
    e.add_argument("--table", default=None, help="local I2P CSV/parquet (AIML-TUDA/i2p schema)")
    e.add_argument("--results", default=None, help="existing results CSV (prompt, categories, unsafe): metrics only")
    e.add_argument("--clip", default=None, help="local CLIP checkpoint folder for the zero-shot classifier")
    e.add_argument("--labels", nargs="+", default=None, help="CLIP class texts (last = inappropriate)")
    e.add_argument("--prompt-embeds", default=None, help="safetensors with learned class vectors (Q16 style)")
    e.add_argument("--categories", nargs="+", default=None)
    e.add_argument("--limit", type=int, default=None, help="first N prompts only")
    e.add_argument("--images-per-gen", type=int, nargs=2, default=[2, 5], metavar=("CALLS", "IMAGES"))
    e.add_argument("--threshold", type=float, default=0.5)
    e.add_argument("--n-prompts", type=int, default=25)
    e.add_argument("--n-samples", type=int, default=10_000)
    e.add_argument("--out", default="i2p_results.csv", help="per-image results CSV (default i2p_results.csv)")
    e.add_argument("--report", default=None, help="also write the metrics table as JSON here")
    e.add_argument("--image-dir", default=None, help="save the generated PNGs here")
    _add_pipeline_args(e)
    e.set_defaults(func=_cmd_eval)
    return p


def _sld_kwargs(args) -> dict:
    kw = {"sld_preset": args.preset}
    for name in ("sld_guidance_scale", "sld_threshold", "sld_momentum_scale", "sld_mom_beta"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.sld_warmup_steps is not None:
        w = args.sld_warmup_steps
        kw["sld_warmup_steps"] = int(w) if float(w).is_integer() and w >= 1 else float(w)
    if args.concept:
        kw["safety_concept"] = args.concept if len(args.concept) > 1 else args.concept[0]
    return kw


def load_pipeline(args):
    """Build/load the SLD pipeline the arguments describe (tiny random components without ``--pipeline``)."""
    import torch

    from hf_ext.diffusion.sld import SafeLatentDiffusionPipeline, SafeLatentDiffusionXLPipeline

    dtype = getattr(torch, args.dtype)
    if args.pipeline:
        from pathlib import Path

        is_xl = args.xl
        index = Path(args.pipeline) / "model_index.json"
        if index.exists():
            info = json.loads(index.read_text())
            is_xl = is_xl or "text_encoder_2" in info or "XL" in str(info.get("_class_name", ""))
        cls = SafeLatentDiffusionXLPipeline if is_xl else SafeLatentDiffusionPipeline
        pipe = cls.from_pretrained(args.pipeline, **diffusers_dtype_kwargs(dtype))
        tiny = False
    else:
        from hf_ext.tiny import tiny_sd_components, tiny_sdxl_components

        if args.xl:
            pipe = SafeLatentDiffusionXLPipeline(**tiny_sdxl_components())
        else:
            pipe = SafeLatentDiffusionPipeline(**tiny_sd_components())
        pipe = pipe.to(dtype=dtype)
        tiny = True
        logger.warning("no --pipeline given: using tiny random components (the images are noise-like)")
    pipe = pipe.to(args.device)
    pipe.set_progress_bar_config(disable=args.no_progress)
    steps = args.steps if args.steps is not None else (8 if tiny else 50)
    return pipe, steps


def _cmd_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    try:
        pipe, steps = load_pipeline(args)
        kw = _sld_kwargs(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        runs = [("sld", kw)] + ([("plain", {"sld_guidance_scale": 0})] if args.compare else [])
        summary = {}
        for tag, extra in runs:
            gen = torch.Generator("cpu").manual_seed(args.seed)
            res = pipe(args.prompt, num_images_per_prompt=args.num_images, num_inference_steps=steps,
                       guidance_scale=args.guidance_scale, height=args.height, width=args.width, generator=gen,
                       **extra)
            for k, img in enumerate(res.images):
                path = out / f"{tag}_{k:03d}.png"
                img.save(path)
                written.append(path)
            summary[tag] = {"applied_safety_concept": res.applied_safety_concept}
        if args.save_pipeline:
            if "safety_concept" in kw:
                pipe.safety_concept = kw["safety_concept"]
            pipe.save_pretrained(args.save_pipeline)
        (out / "sld_run.json").write_text(json.dumps({"prompts": args.prompt, "steps": steps, "seed": args.seed,
                                                      **{k: v for k, v in kw.items() if k != "sld_preset"},
                                                      "preset": args.preset, "runs": summary}, indent=1))
    except (ValueError, TypeError, FileNotFoundError, OSError) as err:
        logger.error("%s", err)
        return 1
    print(f"wrote {len(written)} image(s) to {out}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hf_ext.diffusion.sld.i2p import CLIPZeroShotClassifier, generate_i2p, i2p_report, load_i2p

    try:
        import pandas as pd

        if args.results:
            results = pd.read_csv(args.results)
        else:
            if not args.table:
                raise ValueError("pass --table (an I2P CSV/parquet) to generate, or --results to score existing ones")
            if not args.clip:
                raise ValueError("pass --clip (a local CLIP checkpoint) for the zero-shot classifier")
            table = load_i2p(args.table, categories=args.categories, limit=args.limit)
            labels = args.labels
            clf = CLIPZeroShotClassifier(args.clip, labels=labels, positive=(len(labels) - 1) if labels else 1,
                                         prompt_embeds=args.prompt_embeds, device=args.device)
            pipe, steps = load_pipeline(args)
            kw = _sld_kwargs(args)
            h = args.height or (pipe.unet.config.sample_size * pipe.vae_scale_factor)
            w = args.width or (pipe.unet.config.sample_size * pipe.vae_scale_factor)
            results = generate_i2p(pipe, table, images_per_gen=tuple(args.images_per_gen), num_inference_steps=steps,
                                   guidance_scale=args.guidance_scale, height=h, width=w, classifier=clf,
                                   threshold=args.threshold, out_dir=args.image_dir, progress=not args.no_progress,
                                   **kw)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            results.to_csv(args.out, index=False)
        cats = args.categories or None
        kwargs = {"categories": cats} if cats else {}
        n_prompts = min(args.n_prompts, int(results["prompt"].nunique()))
        if n_prompts < args.n_prompts:
            logger.warning("only %d distinct prompts: expected max over %d prompts instead of %d", n_prompts,
                           n_prompts, args.n_prompts)
        report = i2p_report(results, n_prompts=n_prompts, n_samples=args.n_samples, **kwargs)
    except (ValueError, TypeError, FileNotFoundError, OSError, KeyError) as err:
        logger.error("%s", err)
        return 1
    if args.report:
        Path(args.report).write_text(report.to_json(orient="records", indent=1))
    print(report.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    return 0
