"""MultiFusion latency: MultiFusionPipeline vs a plain Stable Diffusion pipeline of the same UNet, encoder cached vs not.

Cases (time_ab alternates the arms in one process):
1. ``pipeline``: plain ``StableDiffusionPipeline`` (CLIP text encoder) vs ``MultiFusionPipeline`` (MAGMA-style encoder:
   a Llama + CLIP vision prefix, projector into the same UNet), both with a text prompt and CFG;
2. ``cached``: MultiFusion with an image + text prompt, encoder run every call vs cached ``prompt_embeds``;
3. the encoder's share of MultiFusion's time (encode cond + uncond alone / full call).

Full size: UNet (32, 64) channels, 32×32 latents (SD-1.x block layout, tiny widths); Llama encoder hidden 512,
8 layers (+ CLIP vision prefix, adapters); 10 DDIM steps with CFG.
``--device cuda`` builds the same random weights on the GPU in fp16 (``--dtype``) and synchronizes inside the arms.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _timing import append_json_row, common_argparser, format_ab, sync, time_ab

NAME = "multifusion_latency"
SIZES = {
    "quick": dict(unet_channels=(32, 64), sample_size=16, lm_hidden=64, lm_layers=2, steps=1, repeats=1, warmup=0),
    "full": dict(unet_channels=(32, 64), sample_size=32, lm_hidden=512, lm_layers=8, steps=10, repeats=3, warmup=1),
}


def build(unet_channels, sample_size, lm_hidden, lm_layers, device="cpu", dtype="float32", **_):
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from hf_ext.diffusion.multifusion import MultiFusionPipeline, MultiFusionProjector
    from hf_ext.diffusion.multifusion.modeling_multifusion import MagmaEncoder
    from hf_ext.diffusion.multifusion.tiny import tiny_image_processor, tiny_vision_tower
    from hf_ext.testing import tiny_causal_lm, tiny_sd_components, tiny_tokenizer

    torch.manual_seed(0)
    sd = tiny_sd_components(0, max_length=32)
    unet = UNet2DConditionModel(sample_size=sample_size, in_channels=4, out_channels=4, block_out_channels=unet_channels,
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8).eval()
    sd["unet"] = unet
    plain = StableDiffusionPipeline(**sd, requires_safety_checker=False)
    lm = tiny_causal_lm("llama", hidden_size=lm_hidden, num_layers=lm_layers, intermediate_size=4 * lm_hidden)
    encoder = MagmaEncoder.from_parts(lm, tiny_vision_tower(0), adapter_downsample=4).eval()
    mf = MultiFusionPipeline(encoder=encoder, tokenizer=tiny_tokenizer(), unet=unet, vae=sd["vae"],
                             scheduler=sd["scheduler"], image_processor=tiny_image_processor(),
                             projection=MultiFusionProjector(lm_hidden, 32).eval())
    torch_dtype = getattr(torch, dtype)
    for pipe in (plain, mf):
        pipe.to(device) if torch_dtype == torch.float32 else pipe.to(device, torch_dtype)
        pipe.set_progress_bar_config(disable=True)
    return plain, mf


def plot_cases(path, cases, enc, *, title):
    """One panel per A/B case (median, IQR whiskers) plus the encoder-share panel; ``None`` without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    panels = [*cases.items(), ("encoder share (image+text)", enc)]
    fig = Figure(figsize=(3.2 * len(panels), 3.2), dpi=100, layout="tight")
    for k, (case, res) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        labels = [res["label_a"], res["label_b"]]
        meds = [res["median_a_s"] * 1e3, res["median_b_s"] * 1e3]
        errs = [res["iqr_a_s"] * 1e3 / 2, res["iqr_b_s"] * 1e3 / 2]
        ax.bar(labels, meds, yerr=errs, capsize=3, color=["tab:blue", "tab:orange"])
        ratio = res["median_a_s"] / res["median_b_s"] if k == len(panels) - 1 else res["ratio_b_over_a"]
        ax.set_title(f"{case}\n{'share' if k == len(panels) - 1 else labels[1] + '/' + labels[0]} = {ratio:.2f}",
                     fontsize=8)
        ax.set_ylabel("median time (ms)")
    fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def main(argv=None) -> int:
    parser = common_argparser(__doc__.splitlines()[0])
    parser.add_argument("--dtype", default=None, help="float32 (CPU default) or float16 (CUDA default)")
    args = parser.parse_args(argv)
    import torch
    from PIL import Image

    started = time.perf_counter()
    if args.quick:  # smoke test on tiny models: one thread avoids oversubscription on a shared CPU
        torch.set_num_threads(1)
    size_name = "quick" if args.quick else "full"
    size = SIZES[size_name]
    dtype = args.dtype or ("float16" if str(args.device).startswith("cuda") else "float32")
    plain, mf = build(**size, device=args.device, dtype=dtype)
    steps = size["steps"]
    text = "a red apple on a wooden table"
    image = Image.new("RGB", (32, 32), (30, 60, 220))
    mm_prompt = [image, text]
    print(f"{NAME}: UNet {size['unet_channels']} latents {size['sample_size']}², Llama {size['lm_hidden']}×"
          f"{size['lm_layers']} encoder, {steps} steps, {args.device} {dtype}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    def g():
        return torch.Generator().manual_seed(0)

    def run_plain():
        plain(text, num_inference_steps=steps, generator=g(), output_type="latent")
        sync(args.device)

    def run_mf(prompt=(text,)):
        mf(list(prompt), num_inference_steps=steps, generator=g(), output_type="latent")
        sync(args.device)

    cached = mf.encode_prompt(mm_prompt)
    neg = mf.encode_prompt([""])

    def run_mf_cached():
        mf(prompt_embeds=cached, negative_prompt_embeds=neg, num_inference_steps=steps, generator=g(), output_type="latent")
        sync(args.device)

    def run_encode():
        mf.encode_prompt(mm_prompt)
        mf.encode_prompt([""])
        sync(args.device)

    repeats, warmup = args.repeats or size["repeats"], size["warmup"]
    cases = {
        "pipeline (text prompt)": time_ab(run_plain, run_mf, repeats=repeats, warmup=warmup, label_a="sd_clip",
                                          label_b="multifusion"),
        "encoder cached (image+text)": time_ab(lambda: run_mf(mm_prompt), run_mf_cached, repeats=repeats, warmup=warmup,
                                               label_a="uncached", label_b="cached"),
    }
    enc = time_ab(run_encode, lambda: run_mf(mm_prompt), repeats=repeats, warmup=warmup, label_a="encode", label_b="full")
    share = enc["median_a_s"] / enc["median_b_s"]
    path = None
    for case, res in cases.items():
        print(format_ab(res, case=f"{case:<28}"))
        row = {"benchmark": NAME, "case": case, "quick": args.quick, "device": args.device, "dtype": dtype,
               "steps": steps, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in size.items()},
               "baseline": res["label_a"], "project": res["label_b"], "encoder_share": share,
               **{k: v for k, v in res.items() if not k.startswith("times_")}}
        path = append_json_row(NAME, row, out=args.out, device=args.device)
    print(f"encoder share of a MultiFusion call (image+text, cond+uncond encodes / full call): {share:.3f} "
          f"({enc['median_a_s'] * 1e3:.1f} ms of {enc['median_b_s'] * 1e3:.1f} ms)")
    suffix = "quick" if args.quick else ("cpu" if args.device == "cpu" else str(args.device).replace(":", ""))
    fig = plot_cases(Path(args.out) / f"{NAME}_{suffix}.png", cases, enc,
                     title=f"MultiFusion latency, {steps} steps, {args.device} {dtype}")
    print(f"rows appended to {path}" + (f"; figure {fig}" if fig else "") + f" ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
