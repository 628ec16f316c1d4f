"""``hf-ext multifusion generate|train|eval`` (standard-library imports only at module level).

Examples:
    hf-ext multifusion generate "a photo of" image:cup.png "a green apple" --weights 1 1 20 --out runs/mf
    hf-ext multifusion train --steps 20 --batch-size 8 --out runs/fusion
    torchrun --nproc_per_node 2 -m hf_ext multifusion train --steps 20 --batch-size 8 --out runs/fusion2
    hf-ext multifusion eval --clip path/to/clip --model runs/fusion/pipeline --out runs/mcc

Without ``--model`` the commands use a tiny random pipeline built in code (the images are noise-like).
``--pipeline`` and ``--output-dir`` are the pre-0.2 names of ``--model`` and ``--out``.
"""

from __future__ import annotations

import argparse
import json

from hf_ext.utils import cli
from hf_ext.utils.logging import get_logger

logger = get_logger(__name__)

_MODEL_HELP = "a saved MultiFusionPipeline folder or Hub id (default: a tiny random pipeline built in code)"


def add_commands(actions) -> None:
    """MultiFusion / M-VADER: generate from interleaved prompts, fusion-tune, evaluate.

    Sub-commands: ``generate``, ``train``, ``eval``.
    """
    g = cli.add_command(actions, "generate", _cmd_generate, help="generate an image from an interleaved prompt",
                        description="Generate from ITEMS: text, or image:PATH for an image, in prompt order.")
    g.add_argument("items", nargs="+", help="prompt items in order: text, or image:PATH")
    cli.add_common_options(g, model=_MODEL_HELP, device="cpu", seed=0, out="multifusion_out", out_help="image.png",
                           json=True, progress=True)
    cli.add_deprecated_alias(g, "--pipeline", "--model")
    g.add_argument("--weights", type=cli.finite_float, nargs="+", default=None, help="one weight per item (e.g. 1 20)")
    g.add_argument("--negative", nargs="*", default=None, help="negative prompt items (text or image:PATH)")
    g.add_argument("--encoder", default="llava", choices=["llava", "magma"],
                   help="tiny encoder kind without --model (default: %(default)s)")
    g.add_argument("--steps", type=cli.positive_int, default=25, help="inference steps (default: %(default)s)")
    g.add_argument("--guidance-scale", type=cli.finite_float, default=7.5,
                   help="classifier-free guidance scale (default: %(default)s)")
    g.add_argument("--cross-attention-weighting", action="store_true", help="also weight items in the UNet cross-attention")

    t = cli.add_command(actions, "train", _cmd_train,
                        help="stage B fusion tuning on synthetic coloured shapes (or stage A with --stage semantic)",
                        description="Fusion-tune the UNet's cross-attention + projection on a synthetic shapes set "
                                    "(1 or N processes: run under torchrun / accelerate launch -m hf_ext).")
    cli.add_common_options(t, model=_MODEL_HELP, device="auto", seed=0, out=cli.REQUIRED,
                           out_help="checkpoints, losses.json (and the tuned pipeline under pipeline/)", json=True,
                           progress=True)
    cli.add_deprecated_alias(t, "--pipeline", "--model")
    cli.add_deprecated_alias(t, "--output-dir", "--out")
    t.add_argument("--stage", default="fusion", choices=["fusion", "semantic"],
                   help="fusion: UNet cross-attention + projection (stage B); semantic: the encoder (stage A) "
                        "(default: %(default)s)")
    t.add_argument("--encoder", default="llava", choices=["llava", "magma"],
                   help="tiny encoder kind without --model (default: %(default)s)")
    t.add_argument("--family", default="gpt2", help="causal-LM family of the tiny magma encoder (default: %(default)s)")
    t.add_argument("--steps", type=cli.positive_int, default=20, help="optimiser steps (default: %(default)s)")
    t.add_argument("--batch-size", type=cli.positive_int, default=8, help="global batch size (split across processes)")
    t.add_argument("--lr", type=cli.finite_float, default=1e-2, help="learning rate (default: %(default)s)")
    t.add_argument("--p-image", type=cli.finite_float, default=0.5,
                   help="probability that a sample's prompt is its image (default: %(default)s)")
    t.add_argument("--p-uncond", type=cli.finite_float, default=0.1,
                   help="probability of an empty prompt, for classifier-free guidance (default: %(default)s)")
    t.add_argument("--num-samples", type=cli.positive_int, default=64, help="size of the synthetic training set")
    t.add_argument("--checkpoint-every", type=cli.positive_int, default=None, help="save a checkpoint every N steps (default: off)")
    t.add_argument("--resume-from", type=cli.existing_path, default=None, help="checkpoint folder to resume from")
    t.add_argument("--save-pipeline", action="store_true", help="also save the whole tuned pipeline to OUT/pipeline")
    t.add_argument("--fsdp", action="store_true", help="shard with FSDP2 (torchrun; implied by an Accelerate FSDP2 "
                                                       "config)")

    e = cli.add_command(actions, "eval", _cmd_eval, help="MCC-250-style compositional evaluation with zero-shot CLIP",
                        description="Generate one image per MCC-style prompt and mode, score it with zero-shot CLIP from "
                                    "--clip, run the multilingual check on the pipeline's encoder and write JSON.")
    e.add_argument("--clip", type=cli.existing_path, required=True, help="local CLIP checkpoint folder (CLIPModel + CLIPProcessor)")
    cli.add_common_options(e, model=_MODEL_HELP, device="cpu", seed=0, out="mcc_out", out_help="mcc_results.json",
                           json=True, progress=True)
    cli.add_deprecated_alias(e, "--pipeline", "--model")
    e.add_argument("--n", type=cli.positive_int, default=250, help="number of prompts (default: %(default)s)")
    e.add_argument("--steps", type=cli.positive_int, default=25, help="inference steps (default: %(default)s)")
    e.add_argument("--guidance-scale", type=cli.finite_float, default=7.5,
                   help="classifier-free guidance scale (default: %(default)s)")
    e.add_argument("--text-weight", type=cli.finite_float, default=1.0, help="weight of the text items of multimodal prompts")


def _load_pipeline(path, encoder: str, family: str = "llama", device: str = "cpu", *, seed: int = 0,
                   progress: bool = True):
    from hf_ext.diffusion.multifusion import MultiFusionPipeline, tiny_multifusion_components
    from hf_ext.utils.progress import progress_enabled

    if path:
        pipe = MultiFusionPipeline.from_pretrained(path)
    else:
        pipe = MultiFusionPipeline(**tiny_multifusion_components(encoder=encoder, family=family, seed=seed))
        logger.warning("no --model given: using a tiny random MultiFusion pipeline built in code")
    pipe.set_progress_bar_config(disable=not progress_enabled(progress))
    return pipe.to(device)


def _parse_items(items):
    from PIL import Image

    out = []
    for item in items or []:
        if item.startswith("image:"):
            out.append(Image.open(item[len("image:"):]).convert("RGB"))
        else:
            out.append(item)
    return out


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    try:
        prompt = _parse_items(args.items)
        negative = _parse_items(args.negative) if args.negative else None
    except OSError as err:  # a user error: the CLI boundary prints it (exit 2)
        raise FileNotFoundError(f"cannot read an image item: {err}") from err
    pipe = _load_pipeline(args.model, args.encoder, device=args.device, progress=not args.no_progress)
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    image = pipe(prompt, negative_prompt=negative, weights=args.weights, num_inference_steps=args.steps,
                 guidance_scale=args.guidance_scale, generator=g,
                 cross_attention_weighting=args.cross_attention_weighting).images[0]
    out = cli.out_file(args.out, "image.png", legacy_suffixes=(".png", ".jpg", ".jpeg"))
    image.save(out)
    cli.print_result({"image": str(out), "size": list(image.size)}, f"wrote {out} ({image.size[0]}x{image.size[1]})",
                     as_json=args.json)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from accelerate import Accelerator

    from hf_ext.core.sharding import sharding_report, unsharded_copy
    from hf_ext.diffusion.multifusion.training import (
        SENTENCE_PAIRS,
        FusionConfig,
        SemanticConfig,
        ShapesDataset,
        train_fusion,
        train_semantic,
    )
    acc = Accelerator(cpu=cli.resolve_device(args.device) == "cpu")
    pipe = _load_pipeline(args.model, args.encoder, args.family, seed=args.seed, progress=not args.no_progress)
    out = Path(args.out)
    if args.stage == "semantic":
        res = train_semantic(pipe.interleaved_encoder(), SENTENCE_PAIRS, SemanticConfig(steps=args.steps, batch_size=args.batch_size,
                                                                               lr=args.lr, seed=args.seed),
                             accelerator=acc, progress=not args.no_progress, fsdp=args.fsdp)
    else:
        cfg = FusionConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, p_image=args.p_image,
                           p_uncond=args.p_uncond, seed=args.seed, checkpoint_every=args.checkpoint_every)
        res = train_fusion(pipe, ShapesDataset(args.num_samples, seed=args.seed), cfg, accelerator=acc,
                           output_dir=out, resume_from=args.resume_from, progress=not args.no_progress,
                           fsdp=args.fsdp)
    trained = ["encoder"] if args.stage == "semantic" else ["unet", "projection"]
    report = {name: sharding_report(getattr(pipe, name)) for name in trained if getattr(pipe, name) is not None}
    if args.save_pipeline or args.stage == "semantic":
        # sharded modules are gathered into plain copies (a collective: every process takes part)
        plain = {name: unsharded_copy(getattr(pipe, name)) for name in report}
        if acc.is_main_process:
            pipe.register_modules(**plain)
            pipe.save_pretrained(out / "pipeline")
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        result = {"losses": res.losses, "trainable": len(res.trainable), "processes": acc.num_processes,
                  "world_size": acc.num_processes, "sharding": report}
        (out / "losses.json").write_text(json.dumps(result), encoding="utf-8")
        sharded = any(r["sharded"] for r in report.values())
        cli.print_result(result, f"{args.stage} tuning: {len(res.losses)} steps on {acc.num_processes} process(es)"
                                 f"{' (FSDP2)' if sharded else ''}, loss {res.losses[0]:.4f} -> {res.losses[-1]:.4f}; "
                                 f"wrote {out}", as_json=args.json)
    acc.wait_for_everyone()
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from hf_ext.diffusion.multifusion.evaluation import (
        ClipZeroShotScorer,
        evaluate_mcc,
        mcc_prompts,
        multilingual_similarity,
    )

    pipe = _load_pipeline(args.model, "llava", device=args.device, seed=args.seed, progress=False)
    scorer = ClipZeroShotScorer(args.clip, device=args.device)

    def generate(prompt):
        weights = None
        if isinstance(prompt, list):
            weights = [args.text_weight if isinstance(item, str) else 1.0 for item in prompt]
        g = torch.Generator().manual_seed(args.seed)
        return pipe(prompt, weights=weights, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                    generator=g).images[0]

    res = evaluate_mcc(generate, scorer, mcc_prompts(args.n, seed=args.seed), progress=not args.no_progress)
    res["multilingual"] = multilingual_similarity(pipe.interleaved_encoder())
    path = cli.out_file(args.out, "mcc_results.json", legacy_suffixes=(".json",))
    path.write_text(json.dumps(res, indent=1), encoding="utf-8")
    cli.print_result(res, f"MCC ({res['n']} prompts): text {res['text']:.3f}, multimodal {res['multimodal']:.3f}; "
                          "multilingual " + ", ".join(f"{k} {v:.3f}" for k, v in res["multilingual"].items())
                     + f"; wrote {path}", as_json=args.json)
    return 0


def main(argv=None) -> int:
    """Run the ``multifusion`` group directly: ``python -m hf_ext.diffusion.multifusion.cli train ...`` is
    ``python -m hf_ext multifusion train ...`` (torchrun-friendly)."""
    import sys

    from hf_ext.cli import main as cli_main

    return cli_main(["multifusion", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
