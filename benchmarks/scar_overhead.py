"""SCAR overhead: greedy generation latency with a SCAR adapter steering vs the bare model (same prompts, same run).

Baseline (A): the bare model (no hook registered). Project (B): the same model with a SCAR adapter attached and
steering latent 0 (α = -100, scale), once with the reference's ``replace`` output (full SAE encode + decode per token)
and once ``error_preserving`` (encode + a rank-1 update). Alternating runs, medians, ratio B/A.

* CPU (default): Llama hidden 512, 8 layers, SAE n_latents = 6·512 = 3072, k = 256, layer 6 (MLP output),
  batch 1, prompt 32 tokens, 32 new tokens. Target ≤ 1.05×.
* ``--device cuda``: Llama-3-8B shape (hidden 4096, 32 layers, 14336 MLP, GQA 8 KV heads, vocab 128256) with random
  weights created on the GPU in bf16; the released SAE shape (24576 latents, k = 2048, layer 25, MLP output) in bf16;
  batch 1, prompt 128 tokens, 32 new tokens. Target ≤ 1.02×. Also reports the allocator's peak per arm.
"""

from __future__ import annotations

import time
from pathlib import Path

from _timing import append_json_row, common_argparser, format_ab, plot_ab, sync, time_ab

NAME = "scar_overhead"
SIZES = {
    "quick": dict(hidden=64, layers=2, intermediate=128, heads=4, kv_heads=2, vocab=128, layer=1, n_latents=384, k=32,
                  prompt=8, new_tokens=4, repeats=1, warmup=0),
    # vocab 32000 (Llama-2's head): with a 128-token toy vocabulary the LM head is unrealistically small and the
    # SAE's share of a decode step doubles (measured 1.07x / 1.10x there; see benchmarks/README.md).
    "cpu": dict(hidden=512, layers=8, intermediate=1024, heads=8, kv_heads=4, vocab=32000, layer=6, n_latents=3072,
                k=256, prompt=32, new_tokens=32, repeats=15, warmup=2),
    "cuda": dict(hidden=4096, layers=32, intermediate=14336, heads=32, kv_heads=8, vocab=128256, layer=25,
                 n_latents=24576, k=2048, prompt=128, new_tokens=32, repeats=7, warmup=2),
}


def build(size: dict, device: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_ext.scar import ScarAdapter

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    cfg = LlamaConfig(hidden_size=size["hidden"], intermediate_size=size["intermediate"], num_hidden_layers=size["layers"],
                      num_attention_heads=size["heads"], num_key_value_heads=size["kv_heads"], vocab_size=size["vocab"],
                      max_position_embeddings=4096, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                      pad_token_id=0)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg).eval()  # random weights created on the device, in bf16 on CUDA
    finally:
        torch.set_default_dtype(previous)
    scar = ScarAdapter.for_model(model, layer=size["layer"], site="mlp", concepts=["toxicity"],
                                 n_latents=size["n_latents"], k=size["k"], seed=0).to(device=device, dtype=dtype)
    with torch.no_grad():
        scar.latent_bias[0] = 1.0  # keep the steered latent active, so steering really changes it
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, size["vocab"], (1, size["prompt"]), generator=g).to(device)
    return model, scar, ids


def generate(model, ids, new_tokens: int):
    import torch

    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, eos_token_id=None)


def main(argv=None) -> int:
    parser = common_argparser(__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=None,
                        help="vocabulary size (default: the size's; e.g. 32000 for a Llama-2-sized head on CPU)")
    args = parser.parse_args(argv)
    import torch

    started = time.perf_counter()
    size_name = "quick" if args.quick else ("cuda" if args.device.startswith("cuda") else "cpu")
    size = dict(SIZES[size_name])
    if args.vocab:
        size["vocab"] = args.vocab
    model, scar, ids = build(size, args.device)
    n = size["new_tokens"]
    print(f"{NAME}: Llama hidden {size['hidden']}, {size['layers']} layers, vocab {size['vocab']}, SAE {size['n_latents']} latents k={size['k']} "
          f"at layer {size['layer']} (mlp), prompt {size['prompt']} + {n} new tokens, {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    def bare():
        generate(model, ids, n)
        sync(args.device)

    # time_ab reads this clock around each arm; attaching/detaching the hook happens outside the measured time
    excluded = [0.0]

    def clock() -> float:
        return time.perf_counter() - excluded[0]

    def untimed(fn) -> None:
        t = time.perf_counter()
        fn()
        excluded[0] += time.perf_counter() - t

    cases, rows, path = {}, [], None
    for output in ("replace", "error_preserving"):
        def steered(output=output):
            with scar.steer({"toxicity": -100.0}, output=output):
                generate(model, ids, n)
            sync(args.device)

        def steered_arm():  # attach (untimed), steer, detach (untimed): the baseline arm runs the bare model
            untimed(lambda: scar.attach(model))
            steered()
            untimed(scar.detach)

        scar.attach(model)
        with scar.steer({"toxicity": -100.0}, output=output):
            out_steered = generate(model, ids, n)
        scar.detach()
        out_bare = generate(model, ids, n)
        changed = int((out_steered != out_bare).sum())
        res = time_ab(bare, steered_arm, repeats=args.repeats or size["repeats"], warmup=size["warmup"],
                      label_a="bare", label_b="scar", clock=clock)
        row = {"benchmark": NAME, "case": f"steer α=-100 ({output})", "quick": args.quick, "device": args.device,
               **{k: v for k, v in size.items() if k not in ("repeats", "warmup")}, "steering_output": output,
               "baseline": "bare model generate()", "project": "SCAR adapter steering during generate()",
               "tokens_changed_by_steering": changed, "per_token_ms_bare": 1e3 * res["median_a_s"] / n,
               "per_token_ms_scar": 1e3 * res["median_b_s"] / n,
               "target": 1.02 if args.device.startswith("cuda") else 1.05,
               **{k: v for k, v in res.items() if not k.startswith("times_")}}
        if args.device.startswith("cuda"):
            peaks = {}
            for label, fn in (("bare", bare), ("scar", steered)):
                if label == "scar":
                    scar.attach(model)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                fn()
                peaks[label] = (torch.cuda.max_memory_allocated() - base) / 2**20
                scar.detach()
            row.update(peak_mb_bare=peaks["bare"], peak_mb_scar=peaks["scar"])
        row["meets_target"] = res["ratio_b_over_a"] <= row["target"]
        print(format_ab(res, case=output) + f"  target ≤ {row['target']}: {'met' if row['meets_target'] else 'NOT met'}"
              f"  ({changed} generated tokens changed by steering)")
        path = append_json_row(NAME, row, out=args.out, device=args.device)
        cases[output] = res
        rows.append(row)
    fig = plot_ab(Path(args.out) / f"{NAME}_{'quick' if args.quick else args.device.split(':')[0]}.png", cases,
                  title=f"SCAR steering vs bare generate(), {size['layers']}L hidden {size['hidden']}, {n} tokens "
                        f"({args.device})", unit="s")
    print(f"rows appended to {path}" + (f"; figure {fig}" if fig else "") + f" ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
