"""Forward pass of tiny causal LMs: ``sdpa`` attention (transformers' default) vs the ``eager`` baseline.

Both arms load the same seeded weights (:func:`hf_ext.testing.tiny_causal_lm`), are checked to give the
same logits, and are timed alternately in this process. Prints one ratio row per family
(``sdpa/eager < 1`` means sdpa is faster), appends one JSON row per family to
``<out>/core_tiny_forward.jsonl`` and draws ``<out>/core_tiny_forward.png`` (if matplotlib is installed).
Without ``--quick`` it also measures each arm's peak memory in its own subprocess.

Usage:
    python benchmarks/core_tiny_forward.py --quick            # smoke test, a few seconds
    python benchmarks/core_tiny_forward.py                    # all five families, larger model, memory
    python benchmarks/core_tiny_forward.py --device cuda
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _timing import (
    ArmSpec,
    append_json_row,
    common_argparser,
    format_ab,
    machine_info,
    peak_rss_mb,
    plot_ab,
    sync,
    time_ab,
)

NAME = "core_tiny_forward"


def _sizes(quick: bool) -> dict:
    if quick:
        return {"families": ["llama"], "batch": 4, "seq": 32, "hidden_size": 64, "num_layers": 2,
                "repeats": 5, "warmup": 1}
    return {"families": ["llama", "gpt2", "gpt_neox", "qwen2", "opt"], "batch": 8, "seq": 128, "hidden_size": 256,
            "num_layers": 4, "repeats": 30, "warmup": 3}


def load_arm(family: str, attn: str, hidden_size: int, num_layers: int, batch: int, seq: int, device: str = "cpu",
             seed: int = 0):
    """Setup of one arm (also used by the memory subprocess): the model and a seeded batch of token ids."""
    import torch

    from hf_ext.testing import tiny_causal_lm

    model = tiny_causal_lm(family, seed=seed, attn_implementation=attn, hidden_size=hidden_size,
                           num_layers=num_layers).to(device)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, model.config.vocab_size, (batch, seq), generator=gen).to(device)
    return model, ids


def forward_arm(state):
    """The measured call: one forward without gradients."""
    import torch

    model, ids = state
    with torch.inference_mode():
        return model(ids).logits


def main(argv=None) -> int:
    parser = common_argparser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    import torch

    started = time.perf_counter()
    sizes = _sizes(args.quick)
    repeats = args.repeats or sizes["repeats"]
    shape = {k: sizes[k] for k in ("hidden_size", "num_layers", "batch", "seq")}
    print(f"{NAME}: eager (baseline) vs sdpa, batch {sizes['batch']}×{sizes['seq']} tokens, hidden {sizes['hidden_size']}, "
          f"{sizes['num_layers']} layers, {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    cases = {}
    for family in sizes["families"]:
        eager = load_arm(family, "eager", device=args.device, **shape)
        sdpa = load_arm(family, "sdpa", device=args.device, **shape)
        max_diff = (forward_arm(eager) - forward_arm(sdpa)).abs().max().item()
        if max_diff > 1e-3:
            print(f"{family}: eager and sdpa logits differ by {max_diff:.2e}: not the same computation", file=sys.stderr)
            return 1

        def run_eager(eager=eager):
            forward_arm(eager)
            sync(args.device)

        def run_sdpa(sdpa=sdpa):
            forward_arm(sdpa)
            sync(args.device)

        res = time_ab(run_eager, run_sdpa, repeats=repeats, warmup=sizes["warmup"], label_a="eager", label_b="sdpa")
        cases[family] = res
        row = {"benchmark": NAME, "case": family, "quick": args.quick, "device": args.device, **shape,
               "baseline": "eager", "project": "sdpa", "max_abs_logit_diff": max_diff,
               **{k: v for k, v in res.items() if not k.startswith("times_")}}
        if not args.quick:
            for attn in ("eager", "sdpa"):
                spec = ArmSpec(str(Path(__file__).resolve()), setup="load_arm", run="forward_arm",
                               kwargs={"family": family, "attn": attn, "device": args.device, **shape})
                row[f"peak_mb_{attn}"] = peak_rss_mb(spec, device=args.device)
        extra = (f"  peak eager {row['peak_mb_eager']:.1f} MiB, sdpa {row['peak_mb_sdpa']:.1f} MiB"
                 if "peak_mb_eager" in row else "")
        print(format_ab(res, case=f"{family:<9}") + extra)
        path = append_json_row(NAME, row, out=args.out, device=args.device)
        del eager, sdpa
    fig = plot_ab(Path(args.out) / f"{NAME}.png", cases,
                  title=f"tiny causal LM forward, {sizes['batch']}×{sizes['seq']} tokens, hidden {sizes['hidden_size']} "
                        f"({machine_info(args.device)['device_name']}, {torch.get_num_threads()} threads)")
    print(f"rows appended to {path}" + (f"; figure {fig}" if fig else "") + f" ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
