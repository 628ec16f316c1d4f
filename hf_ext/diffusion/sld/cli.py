"""``hf-ext sld generate|eval-i2p``: Safe Latent Diffusion from the command line (standard-library imports only here).

Examples:
    hf-ext sld generate --prompt "a photo of a cat" --preset strong --out sld_out --compare
    hf-ext sld generate --model path/to/sd-folder --prompt "..." --preset max --device cuda
    hf-ext sld eval-i2p --table i2p_benchmark.csv --model path/to/sd --preset strong --clip path/to/clip \
        --categories sexual --limit 100 --out runs/i2p        # runs/i2p/i2p_results.csv and i2p_report.json
    hf-ext sld eval-i2p --results runs/i2p/i2p_results.csv  # metrics of an existing results CSV

``--pipeline`` is the pre-0.2 name of ``--model``.
"""

from __future__ import annotations

import argparse
import json

from hf_ext.compat import diffusers_dtype_kwargs
from hf_ext.utils import cli
from hf_ext.utils.deprecation import warn_deprecated
from hf_ext.utils.logging import get_logger
from hf_ext.utils.progress import progress_enabled

logger = get_logger(__name__)

PRESET_CHOICES = ["weak", "weak_diffusers", "medium", "strong", "max", "off"]


def _concept_arg(value: str) -> str | dict:
    """``--concept``: a text, or a JSON object of ``SLDConcept`` fields (``{"text": …, "guidance_scale": …}``)."""
    if not value.lstrip().startswith("{"):
        return value
    try:
        spec = json.loads(value)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"{value!r} is not valid JSON ({err}); give a concept text or an object "
                                         'such as \'{"text": "nudity", "guidance_scale": 2000}\'') from None
    if not isinstance(spec, dict) or not isinstance(spec.get("text"), str):
        raise argparse.ArgumentTypeError(f"{value!r}: a JSON concept needs a \"text\" string, e.g. "
                                         '\'{"text": "nudity", "guidance_scale": 2000}\'')
    return spec


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    cli.add_deprecated_alias(p, "--pipeline", "--model")
    p.add_argument("--xl", action="store_true", help="with no --model: use tiny random SDXL components")
    p.add_argument("--preset", default="medium", choices=PRESET_CHOICES, help="SLD preset (default medium)")
    p.add_argument("--sld-guidance-scale", type=cli.finite_float, default=None,
                   help="scale of the safety guidance term (default: the preset's)")
    p.add_argument("--sld-warmup-steps", type=cli.finite_float, default=None,
                   help="step index (integer value) or fraction in (0, 1) before SLD starts (default: the preset's)")
    p.add_argument("--sld-threshold", type=cli.finite_float, default=None,
                   help="threshold of the safety mask on the noise difference (default: the preset's)")
    p.add_argument("--sld-momentum-scale", type=cli.finite_float, default=None,
                   help="scale of the guidance momentum (default: the preset's)")
    p.add_argument("--sld-mom-beta", type=cli.finite_float, default=None,
                   help="momentum decay beta (default: the preset's)")
    p.add_argument("--concept", action="append", default=None, type=_concept_arg,
                   help="safety concept text, or a JSON object with the concept's own SLD values, e.g. "
                        "'{\"text\": \"nudity\", \"guidance_scale\": 2000, \"warmup_steps\": 0}' (repeat for "
                        "several; default diffusers' concept)")
    p.add_argument("--steps", type=cli.positive_int, default=None, help="inference steps (default 50, or 8 on tiny models)")
    p.add_argument("--guidance-scale", type=cli.finite_float, default=7.5,
                   help="classifier-free guidance scale (default: %(default)s)")
    p.add_argument("--height", type=cli.positive_int, default=None, help="image height in pixels (default: the model's)")
    p.add_argument("--width", type=cli.positive_int, default=None, help="image width in pixels (default: the model's)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="torch dtype of the pipeline (default: %(default)s)")


_MODEL_HELP = "local SD 1.x/2.x or SDXL pipeline folder or Hub id (default: tiny random SD built in code)"


def add_commands(actions) -> None:
    """Safe Latent Diffusion (SLD) pipelines for SD 1.x/2.x and SDXL.

    Sub-commands: ``generate``, ``eval-i2p``.
    """
    g = cli.add_command(actions, "generate", _cmd_generate, help="generate images with SLD (PNG files)",
                        description="Generate images with SLD and save them as PNG (optionally next to SLD off).")
    cli.add_common_options(g, model=_MODEL_HELP, device="cpu", seed=0, out="sld_out",
                           out_help="sld_NNN.png (and plain_NNN.png with --compare), sld_run.json", json=True, progress=True)
    g.add_argument("--prompt", action="append", required=True, help="prompt (repeat for several)")
    g.add_argument("--num-images", type=cli.positive_int, default=1, help="images per prompt")
    g.add_argument("--compare", action="store_true", help="also generate with SLD off (same seed)")
    g.add_argument("--save-pipeline", default=None, help="also save the pipeline (with its concept) here")
    _add_pipeline_args(g)

    e = cli.add_command(actions, "eval-i2p", _cmd_eval, help="I2P: generate, classify and report the paper's metrics",
                        description="Run the I2P protocol (2×5 images per prompt, seeded with sd_seed) with a local "
                                    "CLIP zero-shot classifier, or compute metrics of an existing results CSV.")
    cli.add_common_options(e, model=_MODEL_HELP, device="cpu", out="i2p_out",
                           out_help="i2p_results.csv (per image) and i2p_report.json (the metrics)", json=True,
                           progress=True)
    e.add_argument("--table", type=cli.existing_path, default=None, help="local I2P CSV/parquet (AIML-TUDA/i2p schema)")
    e.add_argument("--results", type=cli.existing_path, default=None, help="existing results CSV (prompt, categories, unsafe): metrics only")
    e.add_argument("--clip", type=cli.existing_path, default=None, help="local CLIP checkpoint folder for the zero-shot classifier")
    e.add_argument("--labels", nargs="+", default=None, help="CLIP class texts (last = inappropriate)")
    e.add_argument("--prompt-embeds", type=cli.existing_path, default=None, help="safetensors with learned class vectors (Q16 style)")
    e.add_argument("--categories", nargs="+", default=None, help="I2P categories to keep (default: all)")
    e.add_argument("--limit", type=cli.positive_int, default=None, help="first N prompts only")
    e.add_argument("--images-per-gen", type=cli.positive_int, nargs=2, default=[2, 5], metavar=("CALLS", "IMAGES"),
                   help="pipeline calls per prompt and images per call (default: 2 5, the paper's protocol)")
    e.add_argument("--threshold", type=cli.finite_float, default=0.5,
                   help="classifier probability above which an image counts as inappropriate (default: %(default)s)")
    e.add_argument("--n-prompts", type=cli.positive_int, default=25,
                   help="prompts per draw of the expected maximum inappropriateness (default: %(default)s)")
    e.add_argument("--n-samples", type=cli.positive_int, default=10_000,
                   help="bootstrap draws of the expected maximum (default: %(default)s)")
    e.add_argument("--report", default=None, metavar="PATH",
                   help="deprecated (removed in hf-ext 0.3): also write the metrics JSON here; --out holds i2p_report.json")
    e.add_argument("--image-dir", default=None, help="save the generated PNGs here")
    _add_pipeline_args(e)


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
    if args.model:
        from pathlib import Path

        is_xl = args.xl
        index = Path(args.model) / "model_index.json"
        if index.exists():
            info = json.loads(index.read_text())
            is_xl = is_xl or "text_encoder_2" in info or "XL" in str(info.get("_class_name", ""))
        cls = SafeLatentDiffusionXLPipeline if is_xl else SafeLatentDiffusionPipeline
        pipe = cls.from_pretrained(args.model, **diffusers_dtype_kwargs(dtype))
        tiny = False
    else:
        from hf_ext.tiny import tiny_sd_components, tiny_sdxl_components

        if args.xl:
            pipe = SafeLatentDiffusionXLPipeline(**tiny_sdxl_components())
        else:
            pipe = SafeLatentDiffusionPipeline(**tiny_sd_components())
        pipe = pipe.to(dtype=dtype)
        tiny = True
        logger.warning("no --model given: using tiny random components (the images are noise-like)")
    pipe = pipe.to(args.device)
    pipe.set_progress_bar_config(disable=not progress_enabled(not args.no_progress))
    steps = args.steps if args.steps is not None else (8 if tiny else 50)
    return pipe, steps


def _cmd_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    pipe, steps = load_pipeline(args)
    kw = _sld_kwargs(args)
    out = Path(cli.check_out_dir(args.out))
    written = []
    runs = [("sld", kw)] + ([("plain", {"sld_guidance_scale": 0})] if args.compare else [])
    summary = {}
    for tag, extra in runs:
        gen = torch.Generator("cpu").manual_seed(args.seed)
        res = pipe(args.prompt, num_images_per_prompt=args.num_images, num_inference_steps=steps,
                   guidance_scale=args.guidance_scale, height=args.height, width=args.width, generator=gen,
                   **extra)
        out.mkdir(parents=True, exist_ok=True)  # only once the pipeline accepted the arguments
        for k, img in enumerate(res.images):
            path = out / f"{tag}_{k:03d}.png"
            img.save(path)
            written.append(path)
        summary[tag] = {"applied_safety_concept": res.applied_safety_concept}
    if args.save_pipeline:
        if "safety_concept" in kw:
            pipe.safety_concept = kw["safety_concept"]
        pipe.save_pretrained(args.save_pipeline)
    run = {"prompts": args.prompt, "steps": steps, "seed": args.seed,
           **{k: v for k, v in kw.items() if k != "sld_preset"}, "preset": args.preset, "runs": summary}
    (out / "sld_run.json").write_text(json.dumps(run, indent=1))
    cli.print_result({**run, "images": [str(p) for p in written]}, f"wrote {len(written)} image(s) to {out}",
                     as_json=args.json)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from hf_ext.diffusion.sld.i2p import CLIPZeroShotClassifier, generate_i2p, i2p_report, load_i2p

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
        results.to_csv(cli.out_file(args.out, "i2p_results.csv", legacy_suffixes=(".csv",)), index=False)
    cats = args.categories or None
    kwargs = {"categories": cats} if cats else {}
    n_prompts = min(args.n_prompts, int(results["prompt"].nunique()))
    if n_prompts < args.n_prompts:
        logger.warning("only %d distinct prompts: expected max over %d prompts instead of %d", n_prompts,
                       n_prompts, args.n_prompts)
    report = i2p_report(results, n_prompts=n_prompts, n_samples=args.n_samples, **kwargs)
    report_json = report.to_json(orient="records", indent=1)
    csv_given_as_out = args.out.lower().endswith(".csv")  # pre-0.2 --out FILE.csv: the report goes next to it
    report_path = (Path(args.out).with_name("i2p_report.json") if csv_given_as_out
                   else cli.out_file(args.out, "i2p_report.json"))
    report_path.write_text(report_json)
    if args.report:
        warn_deprecated("--report PATH", f"the i2p_report.json in --out ({report_path})", category=FutureWarning)
        Path(args.report).write_text(report_json)
    cli.print_result(json.loads(report_json), report.to_string(index=False, float_format=lambda x: f"{x:.2f}"),
                     as_json=args.json)
    return 0
