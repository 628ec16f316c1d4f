"""``hf-ext multifusion generate|train`` (standard-library imports only at module level).

Examples:
    hf-ext multifusion generate "a photo of" image:cup.png "a green apple" --weights 1 1 20 --out out.png
    hf-ext multifusion train --steps 20 --batch-size 8 --output-dir runs/fusion
    torchrun --nproc_per_node 2 -m hf_ext.cli multifusion train --steps 20 --batch-size 8 --output-dir runs/fusion2

Without ``--pipeline`` both commands use a tiny random pipeline built in code (the images are noise-like).
"""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``multifusion`` group (``generate``, ``train``) to the ``hf-ext`` parser."""
    p = subparsers.add_parser("multifusion", help="MultiFusion: images from interleaved text and image prompts",
                              description="MultiFusion / M-VADER: generate from interleaved prompts, or fusion-tune.")
    sub = p.add_subparsers(dest="multifusion_command", metavar="ACTION", required=True)

    g = sub.add_parser("generate", help="generate an image from an interleaved prompt",
                       description="Generate from ITEMS: text, or image:PATH for an image, in prompt order.")
    g.add_argument("items", nargs="+", help="prompt items in order: text, or image:PATH")
    g.add_argument("--weights", type=float, nargs="+", default=None, help="one weight per item (e.g. 1 20)")
    g.add_argument("--negative", nargs="*", default=None, help="negative prompt items (text or image:PATH)")
    g.add_argument("--pipeline", default=None, help="a saved MultiFusionPipeline folder (default: tiny random pipeline)")
    g.add_argument("--encoder", default="llava", choices=["llava", "magma"], help="tiny encoder kind without --pipeline")
    g.add_argument("--steps", type=int, default=25)
    g.add_argument("--guidance-scale", type=float, default=7.5)
    g.add_argument("--cross-attention-weighting", action="store_true", help="also weight items in the UNet cross-attention")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu")
    g.add_argument("--out", default="multifusion.png", help="PNG to write")
    g.set_defaults(func=_cmd_generate)

    t = sub.add_parser("train", help="stage B fusion tuning on synthetic coloured shapes (or stage A with --stage semantic)",
                       description="Fusion-tune the UNet's cross-attention + projection on a synthetic shapes set "
                                   "(1 or N processes: run under torchrun / accelerate launch).")
    t.add_argument("--stage", default="fusion", choices=["fusion", "semantic"])
    t.add_argument("--pipeline", default=None, help="a saved MultiFusionPipeline folder (default: tiny random pipeline)")
    t.add_argument("--encoder", default="llava", choices=["llava", "magma"])
    t.add_argument("--family", default="gpt2", help="causal-LM family of the tiny magma encoder")
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=8, help="global batch size (split across processes)")
    t.add_argument("--lr", type=float, default=1e-2)
    t.add_argument("--p-image", type=float, default=0.5)
    t.add_argument("--p-uncond", type=float, default=0.1)
    t.add_argument("--num-samples", type=int, default=64, help="size of the synthetic training set")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=None)
    t.add_argument("--resume-from", default=None, help="checkpoint folder to resume from")
    t.add_argument("--output-dir", required=True, help="checkpoints (and the tuned pipeline with --save-pipeline)")
    t.add_argument("--save-pipeline", action="store_true", help="also save the whole tuned pipeline to OUTPUT_DIR/pipeline")
    t.add_argument("--fsdp", action="store_true", help="shard with FSDP2 (torchrun; implied by an Accelerate FSDP2 "
                                                       "config)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_cmd_train)
    return p


def _load_pipeline(path, encoder: str, family: str = "llama", device: str = "cpu"):
    from hf_ext.diffusion.multifusion import MultiFusionPipeline, tiny_multifusion_components

    if path:
        pipe = MultiFusionPipeline.from_pretrained(path)
    else:
        pipe = MultiFusionPipeline(**tiny_multifusion_components(encoder=encoder, family=family))
        logger.warning("no --pipeline given: using a tiny random MultiFusion pipeline built in code")
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
    from pathlib import Path

    import torch

    try:
        prompt = _parse_items(args.items)
        negative = _parse_items(args.negative) if args.negative else None
    except OSError as err:
        logger.error("cannot read an image item: %s", err)
        return 1
    pipe = _load_pipeline(args.pipeline, args.encoder, device=args.device)
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    try:
        image = pipe(prompt, negative_prompt=negative, weights=args.weights, num_inference_steps=args.steps,
                     guidance_scale=args.guidance_scale, generator=g,
                     cross_attention_weighting=args.cross_attention_weighting).images[0]
    except (ValueError, TypeError) as err:
        logger.error("%s", err)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    print(f"wrote {out} ({image.size[0]}x{image.size[1]})")
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

    acc = Accelerator(cpu=not _cuda())
    pipe = _load_pipeline(args.pipeline, args.encoder, args.family)
    out = Path(args.output_dir)
    try:
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
    except (ValueError, FileNotFoundError) as err:
        logger.error("%s", err)
        return 1
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
        (out / "losses.json").write_text(json.dumps({"losses": res.losses, "trainable": len(res.trainable),
                                                     "processes": acc.num_processes, "world_size": acc.num_processes,
                                                     "sharding": report}),
                                         encoding="utf-8")
        sharded = any(r["sharded"] for r in report.values())
        print(f"{args.stage} tuning: {len(res.losses)} steps on {acc.num_processes} process(es)"
              f"{' (FSDP2)' if sharded else ''}, loss {res.losses[0]:.4f} -> {res.losses[-1]:.4f}; wrote {out}")
    acc.wait_for_everyone()
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv=None) -> int:
    """Run the ``multifusion`` group directly: ``python -m hf_ext.diffusion.multifusion.cli train ...`` (torchrun-friendly)."""
    import sys

    parser = argparse.ArgumentParser(prog="hf-ext")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["multifusion", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
