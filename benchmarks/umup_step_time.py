"""u-μP train step time: UMupLlamaForCausalLM vs LlamaForCausalLM (fwd + bwd + AdamW step), and FP8 vs bf16 on GPU.

Default (CPU, fp32, SDPA on both): hidden 512, 4 layers, 8 heads, intermediate 1408, vocab 32000, seq 256, batch 8;
the baseline is transformers' ``LlamaForCausalLM`` of the same shape with ``torch.optim.AdamW``, the project arm
``UMupLlamaForCausalLM`` with ``AdamW(umup_param_groups(...))``; timed alternately in one process. Target: ratio
≤ 1.05 (unit_scaling's own ops cost 1.31× / 1.56× of plain torch).

``--size 1b --device cuda``: a 1B-size u-μP model (hidden 2048, 16 layers, 32 heads / 8 KV heads, intermediate 8192,
byte vocabulary) created directly on the GPU in bf16; arms bf16 vs FP8 (``umup_fp8="scaled_mm"``: q/k/v/gate/up
through ``torch._scaled_mm``); also trains ``--loss-steps`` steps of each from the same seed on the stdlib-source
byte corpus and reports both losses. Allocator peak per arm.

    python benchmarks/umup_step_time.py [--quick]
    python benchmarks/umup_step_time.py --size 1b --device cuda
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _timing import append_json_row, common_argparser, format_ab, plot_ab, sync, time_ab

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NAME = "umup_step_time"
SIZES = {
    "quick": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, vocab_size=256, seq=32, batch=2, repeats=2, warmup=1),
    "full": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=8, vocab_size=32000, seq=256, batch=8, repeats=7, warmup=2),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=256, seq=1024, batch=8, repeats=8, warmup=2),
}


def _shape(size):
    return {k: v for k, v in size.items() if k not in ("seq", "batch", "repeats", "warmup")}


def build(kind: str, size: dict, device: str, dtype, fp8: str | None = None):
    """(model, optimizer) for arm ``kind`` in {"llama", "umup"}, weights created on ``device``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM, umup_param_groups

    torch.manual_seed(0)
    shape = _shape(size)
    with torch.device(device):
        if kind == "llama":
            cfg = LlamaConfig(**shape, max_position_embeddings=size["seq"], tie_word_embeddings=False, use_cache=False)
            cfg._attn_implementation = "sdpa"
            model = LlamaForCausalLM(cfg).to(dtype)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        else:
            cfg = UMupConfig(**shape, max_position_embeddings=size["seq"], umup_attn_seq_len=size["seq"], use_cache=False,
                             umup_fp8=fp8)
            model = UMupLlamaForCausalLM(cfg).to(dtype)
            opt = torch.optim.AdamW(umup_param_groups(model, lr=2.0**-1))
    model.train()
    return model, opt


def make_step(model, opt, batch, device):
    def step():
        loss = model(batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        return loss

    return step


def _batches(size, n, device, seed=0):
    import torch

    from hf_ext.umup.sweep import stdlib_bytes

    g = torch.Generator().manual_seed(seed)
    if size["vocab_size"] == 256:
        data = stdlib_bytes(4_000_000)
        starts = torch.randint(0, data.numel() - size["seq"] - 1, (n, size["batch"]), generator=g)
        return [torch.stack([data[s:s + size["seq"]] for s in row.tolist()]).to(device) for row in starts]
    return [torch.randint(0, size["vocab_size"], (size["batch"], size["seq"]), generator=g).to(device) for _ in range(n)]


def cpu_vs_llama(args, size, label):
    import torch

    dev = args.device
    batch = _batches(size, 1, dev)[0]
    llama, lopt = build("llama", size, dev, torch.float32)
    umup, uopt = build("umup", size, dev, torch.float32)
    clock = time.process_time if args.clock == "process" else time.perf_counter
    res = time_ab(make_step(llama, lopt, batch, dev), make_step(umup, uopt, batch, dev),
                  repeats=args.repeats or size["repeats"], warmup=size["warmup"], label_a="LlamaForCausalLM",
                  label_b="UMupLlamaForCausalLM", clock=clock)
    case = (f"{label}: h={size['hidden_size']} L={size['num_hidden_layers']} seq={size['seq']} batch={size['batch']} "
            f"fp32, {args.clock} time")
    print(format_ab(res, case=case))
    ok = res["ratio_b_over_a"] <= 1.05
    print(f"target ratio <= 1.05: {'met' if ok else 'NOT met'} ({res['ratio_b_over_a']:.3f})")
    out = Path(args.out)
    plot_ab(out / f"{NAME}_{label}.png", {case: res}, title=f"train step (fwd+bwd+AdamW), {dev}, torch threads "
            f"{torch.get_num_threads()}", unit="ms" if res["median_a_s"] < 1 else "s")
    append_json_row(NAME, {"benchmark": NAME, "size": label, "case": case, "target_met": ok,
                           **{k: v for k, v in res.items() if not k.startswith("times_")}}, out=out, device=dev)


def gpu_fp8_vs_bf16(args, size, label):
    import torch

    dev = args.device
    batches = _batches(size, args.loss_steps, dev, seed=1)
    losses, peaks, models = {}, {}, {}
    for mode in (None, "scaled_mm"):
        model, opt = build("umup", size, dev, torch.bfloat16, fp8=mode)
        torch.cuda.reset_peak_memory_stats(dev)
        trace = []
        for b in batches:  # same seed, same batches: the loss of N steps, bf16 vs FP8
            trace.append(float(make_step(model, opt, b, dev)().detach()))
        peaks[mode] = torch.cuda.max_memory_allocated(dev) / 2**20
        losses[mode] = trace
        models[mode] = (model, opt)
        del model, opt
    step_a = make_step(*models[None], batches[0], dev)
    step_b = make_step(*models["scaled_mm"], batches[0], dev)
    res = time_ab(step_a, step_b, repeats=args.repeats or size["repeats"], warmup=size["warmup"], label_a="u-μP bf16",
                  label_b="u-μP FP8 (scaled_mm)")
    n_params = sum(p.numel() for p in models[None][0].parameters())
    case = f"{label} ({n_params / 1e9:.2f}B params) seq={size['seq']} batch={size['batch']}"
    print(format_ab(res, case=case))
    tail = max(1, len(batches) // 5)
    final = {("bf16" if k is None else "fp8"): sum(v[-tail:]) / tail for k, v in losses.items()}
    print(f"loss after {len(batches)} steps (mean of last {tail}): bf16 {final['bf16']:.4f}  fp8 {final['fp8']:.4f}  "
          f"(rel diff {abs(final['fp8'] - final['bf16']) / final['bf16']:.3%}); first-step loss "
          f"{losses[None][0]:.4f}; allocator peak MiB bf16 {peaks[None]:.0f} fp8 {peaks['scaled_mm']:.0f}")
    out = Path(args.out)
    plot_ab(out / f"{NAME}_{label}_fp8.png", {case: res}, title=f"u-μP train step bf16 vs FP8, "
            f"{torch.cuda.get_device_name(torch.device(dev))}")
    append_json_row(NAME, {"benchmark": NAME, "size": label, "case": case, "final_loss": final,
                           "loss_trace": {"bf16": losses[None], "fp8": losses["scaled_mm"]},
                           "peak_mib": {"bf16": peaks[None], "fp8": peaks["scaled_mm"]},
                           **{k: v for k, v in res.items() if not k.startswith("times_")}}, out=out, device=dev)


def main(argv=None) -> int:
    parser = common_argparser(__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["full", "1b"], default="full")
    parser.add_argument("--loss-steps", type=int, default=30, help="training steps of the FP8-vs-bf16 loss comparison")
    parser.add_argument("--clock", choices=["wall", "process"], default="wall",
                        help="wall time (default) or the process's CPU time (robust on a shared machine with --threads 1)")
    args = parser.parse_args(argv)
    import torch

    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
    label = "quick" if args.quick else args.size
    size = SIZES[label]
    t0 = time.perf_counter()
    if label == "1b":
        if not args.device.startswith("cuda"):
            parser.error("--size 1b is the GPU FP8-vs-bf16 comparison: pass --device cuda")
        gpu_fp8_vs_bf16(args, size, label)
    else:
        cpu_vs_llama(args, size, label)
    print(f"wall {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
