"""Cost of hf_ext's attention controls: a controlled forward vs the plain forward of the same model.

Baseline: the model's own forward (sdpa attention). Project arms: the same forward inside
``attention_controls`` in ``log_additive`` mode (a float bias handed to the same sdpa kernel) and in
``multiplicative`` mode (explicit scores, AtMan's causal min-shift), with one key suppressed per row in every
layer. Prints ``controlled/plain`` median-time ratios (> 1 = overhead), appends JSON rows to
``<out>/core_attention_controls.jsonl`` and draws ``<out>/core_attention_controls.png``.

Usage:
    python benchmarks/core_attention_controls.py --quick                 # smoke test
    python benchmarks/core_attention_controls.py                         # CPU, small Llama
    python benchmarks/core_attention_controls.py --device cuda --size 1b # GPU, Llama-3.2-1B-sized, bf16
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _timing import append_json_row, common_argparser, format_ab, plot_ab, sync, time_ab

NAME = "core_attention_controls"

SIZES = {
    "quick": dict(hidden_size=64, num_layers=2, heads=4, kv_heads=2, batch=2, seq=32, repeats=3, warmup=1),
    "small": dict(hidden_size=256, num_layers=4, heads=8, kv_heads=4, batch=8, seq=256, repeats=20, warmup=3),
    # Llama-3.2-1B shapes (random weights: compute cost does not depend on them)
    "1b": dict(hidden_size=2048, num_layers=16, heads=32, kv_heads=8, batch=8, seq=512, repeats=20, warmup=3,
               intermediate=8192, vocab=32000),
}


def build(size: dict, device: str):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(hidden_size=size["hidden_size"], intermediate_size=size.get("intermediate", 2 * size["hidden_size"]),
                      num_hidden_layers=size["num_layers"], num_attention_heads=size["heads"],
                      num_key_value_heads=size["kv_heads"], vocab_size=size.get("vocab", 128),
                      max_position_embeddings=4096, tie_word_embeddings=False)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, cfg.vocab_size, (size["batch"], size["seq"]), generator=gen).to(device)
    return model, ids


def main(argv=None) -> int:
    parser = common_argparser(__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="model/input size (default: small, quick with --quick)")
    args = parser.parse_args(argv)
    import torch

    from hf_ext.core.attention import attention_controls, key_weights

    started = time.perf_counter()
    size_name = args.size or ("quick" if args.quick else "small")
    size = SIZES[size_name]
    repeats = args.repeats or size["repeats"]
    model, ids = build(size, args.device)
    batch, seq = ids.shape
    weights = key_weights(batch, seq, [[seq // 3]] * batch, 0.1)

    def plain():
        with torch.inference_mode():
            model(ids)
        sync(args.device)

    cases, path = {}, None
    print(f"{NAME}: plain forward (baseline) vs attention_controls, Llama {size_name} "
          f"(hidden {size['hidden_size']}, {size['num_layers']} layers), {batch}×{seq} tokens, {args.device}, torch {torch.__version__}")
    for mode in ("log_additive", "multiplicative"):
        with torch.inference_mode():
            reference = model(ids).logits.float()
            with attention_controls(model, torch.ones(batch, seq), mode=mode):
                ones = model(ids).logits.float()
        max_diff = (ones - reference).abs().max().item()

        def controlled(mode=mode):
            with torch.inference_mode(), attention_controls(model, weights, mode=mode):
                model(ids)
            sync(args.device)

        res = time_ab(plain, controlled, repeats=repeats, warmup=size["warmup"], label_a="plain", label_b="controlled")
        cases[mode] = res
        print(format_ab(res, case=f"{mode:<15}") + f"  (weights=1 max |Δlogit| {max_diff:.1e})")
        row = {"benchmark": NAME, "case": mode, "size": size_name, "quick": args.quick, "device": args.device,
               "batch": batch, "seq": seq, "baseline": "plain forward", "project": f"attention_controls({mode})",
               "weights_one_max_abs_logit_diff": max_diff,
               **{k: v for k, v in res.items() if not k.startswith("times_")}}
        path = append_json_row(NAME, row, out=args.out, device=args.device)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    fig = plot_ab(Path(args.out) / f"{NAME}.png", cases,
                  title=f"attention controls vs plain forward, Llama {size_name}, {batch}×{seq} tokens ({device_name})")
    print(f"rows appended to {path}" + (f"; figure {fig}" if fig else "") + f" ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
