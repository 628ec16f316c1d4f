"""AtMan cost: AtMan (prefix-KV reuse) vs plain forward, gradient×input and naive AtMan (no prefix reuse).

Time: AtMan vs naive AtMan at equal ``max_batch_size`` (alternating, same process). Memory: each arm in its own
subprocess (max RSS above the post-load baseline on CPU; the allocator's peak on CUDA): plain forward,
gradient×input (autograd to the input embeddings), AtMan and naive AtMan at each ``max_batch_size``.
Full size (CPU): Llama hidden 512, 4 layers, prompt 256 tokens, target 4 tokens, token granularity.
``--size 8b`` (GPU): Llama-3-8B shape (hidden 4096, 32 layers, GQA 32/8, vocab 128256), random bf16 weights created
on the device, prompt 512 tokens; memory is the allocator's peak above the loaded model, measured in-process around
each arm call (one model load instead of one per arm).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _timing import ArmSpec, append_json_row, common_argparser, format_ab, peak_rss_mb, sync, time_ab

NAME = "atman_cost"
SIZES = {
    "quick": dict(hidden_size=64, num_layers=2, prompt=16, target=2, batch_sizes=[1, 4], repeats=2, warmup=0),
    "full": dict(hidden_size=512, num_layers=4, prompt=256, target=4, batch_sizes=[1, 8, 32], repeats=3, warmup=1),
    "8b": dict(hidden_size=4096, num_layers=32, prompt=512, target=4, batch_sizes=[1, 8], repeats=1, warmup=0),
}
LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192)


def load_arm(hidden_size, num_layers, prompt, target, device="cpu", **_):
    import torch
    import tqdm.auto  # noqa: F401 - code the arms use is loaded before the baseline, not counted as arm memory

    import hf_ext.atman.explainer  # noqa: F401
    from hf_ext.testing import tiny_causal_lm

    torch.manual_seed(0)
    if hidden_size == LLAMA3_8B["hidden_size"] and num_layers == LLAMA3_8B["num_hidden_layers"]:
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(**LLAMA3_8B, tie_word_embeddings=False, attn_implementation="sdpa")
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device(device):  # weights created on the device in bf16: no 16 GB CPU init
                model = LlamaForCausalLM(cfg).eval()
        finally:
            torch.set_default_dtype(default)
    else:
        model = tiny_causal_lm("llama", hidden_size=hidden_size, num_layers=num_layers,
                               max_position_embeddings=prompt + target + 8).to(device)
    model.requires_grad_(False)  # gradient×input needs the input's gradient only, not 8B weight gradients
    gen = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(4, 100, (prompt,), generator=gen)
    target_ids = torch.randint(4, 100, (target,), generator=gen)
    return {"model": model, "prompt": prompt_ids, "target": target_ids, "device": device}


def plain_arm(state):
    import torch

    ids = torch.cat([state["prompt"], state["target"][:-1]]).view(1, -1).to(state["device"])
    with torch.no_grad():
        state["model"](ids)


def gradxinput_arm(state):
    import torch

    model = state["model"]
    ids = torch.cat([state["prompt"], state["target"][:-1]]).view(1, -1).to(state["device"])
    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=emb).logits[0, -state["target"].numel():]
    torch.nn.functional.cross_entropy(logits, state["target"].to(state["device"])).backward()
    (emb.grad * emb).sum(-1)
    model.zero_grad(set_to_none=True)


def atman_arm(state, max_batch_size=1, prefix_reuse=True):
    from hf_ext.atman import AtManExplainer

    ex = AtManExplainer(state["model"], mode="log_additive", max_batch_size=max_batch_size, prefix_reuse=prefix_reuse,
                        progress=False)
    return ex.explain_ids(state["prompt"], state["target"]).delta


def cuda_peak_mb(fn) -> float:
    """Allocator peak (MiB) of ``fn()`` above the memory allocated before it (CUDA, in-process)."""
    import gc

    import torch

    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def plot_rows(rows: list[dict], path) -> Path | None:
    """Time ratio (AtMan/naive) and peak memory (×plain) as functions of ``max_batch_size``; ``None`` without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    bs = [r["max_batch_size"] for r in rows]
    fig = Figure(figsize=(8, 3), dpi=100, layout="tight")
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot(bs, [r["ratio_b_over_a"] for r in rows], marker="o", label="AtMan / naive AtMan")
    ax1.axhline(0.6, color="grey", ls="--", label="target 0.6")
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("max_batch_size")
    ax1.set_ylabel("time ratio")
    ax1.legend(fontsize=8)
    if "peak_mb_atman" in rows[0]:
        ax2.plot(bs, [r["peak_mb_atman"] for r in rows], marker="o", label="AtMan")
        ax2.plot(bs, [r["peak_mb_naive"] for r in rows], marker="s", label="naive AtMan")
        ax2.axhline(rows[0]["peak_mb_plain"], color="tab:green", ls="--", label="one plain forward")
        ax2.axhline(rows[0]["peak_mb_gradxinput"], color="tab:red", ls="--", label="gradient×input")
        ax2.set_xscale("log", base=2)
        ax2.set_xlabel("max_batch_size")
        ax2.set_ylabel("peak MiB above load")
        ax2.legend(fontsize=8)
    fig.suptitle(f"AtMan cost, Llama hidden {rows[0]['hidden_size']}, {rows[0]['num_layers']} layers, "
                 f"prompt {rows[0]['prompt']} ({rows[0]['device']})", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def main(argv=None) -> int:
    parser = common_argparser(__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default=None,
                        help="quick / full (CPU, default) / 8b (Llama-3-8B shape, GPU)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help="max_batch_size values to measure (default: set by --size)")
    args = parser.parse_args(argv)
    import torch

    started = time.perf_counter()
    size_name = args.size or ("quick" if args.quick else "full")
    size = SIZES[size_name]
    shape = {k: size[k] for k in ("hidden_size", "num_layers", "prompt", "target")}
    state = load_arm(**shape, device=args.device)
    print(f"{NAME}: Llama hidden {size['hidden_size']}, {size['num_layers']} layers, prompt {size['prompt']} + target "
          f"{size['target']} tokens, {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    me = str(Path(__file__).resolve())
    kw = {**shape, "device": args.device}
    cuda = str(args.device).startswith("cuda")

    def peak(run, **extra):
        if cuda:  # the allocator's peak is exact in-process: no second load of the model
            return cuda_peak_mb(lambda: globals()[run](state, **extra))
        return peak_rss_mb(ArmSpec(me, setup="load_arm", run=run, kwargs={**kw, **extra}), device=args.device)

    mem = {}
    if not args.quick:
        mem["plain"] = peak("plain_arm")
        mem["gradxinput"] = peak("gradxinput_arm")
        print(f"peak memory above the loaded model: plain forward {mem['plain']:.1f} MiB, gradient×input {mem['gradxinput']:.1f} MiB")
    path, rows = None, []
    for bs in args.batch_sizes or size["batch_sizes"]:
        ours = atman_arm(state, bs, True)
        naive = atman_arm(state, bs, False)
        err = (ours - naive).abs().max().item()
        # fp32: same numbers up to summation order; bf16 (8b size): kernels differ with the batch shape
        if state["model"].dtype != torch.float32:  # bf16: report only (exactness is tested in fp32)
            print(f"bs={bs}: bf16 max |ΔΔ| AtMan vs naive {err:.3f} (max |Δ| {naive.abs().max().item():.3f})")
        elif err > 1e-4:
            print(f"AtMan with prefix reuse disagrees with the naive recomputation: max |ΔΔ| {err:.2e}")
            return 1
        res = time_ab(lambda bs=bs: (atman_arm(state, bs, False), sync(args.device)),
                      lambda bs=bs: (atman_arm(state, bs, True), sync(args.device)),
                      repeats=args.repeats or size["repeats"], warmup=size["warmup"], label_a="naive", label_b="atman")
        row = {"benchmark": NAME, "case": f"max_batch_size={bs}", "quick": args.quick, "device": args.device, **shape,
               "max_batch_size": bs, "baseline": "naive AtMan (no prefix reuse)", "project": "AtMan (prefix-KV reuse)",
               "max_abs_delta_diff": err, **{k: v for k, v in res.items() if not k.startswith("times_")}}
        extra = ""
        if not args.quick:
            for reuse, key in ((True, "atman"), (False, "naive")):
                row[f"peak_mb_{key}"] = peak("atman_arm", max_batch_size=bs, prefix_reuse=reuse)
            row.update({f"peak_mb_{k}": v for k, v in mem.items()})
            row["peak_atman_over_plain"] = row["peak_mb_atman"] / max(mem["plain"], 1e-9)
            row["peak_atman_over_gradxinput"] = row["peak_mb_atman"] / max(mem["gradxinput"], 1e-9)
            extra = (f"  peak atman {row['peak_mb_atman']:.1f} MiB (×{row['peak_atman_over_plain']:.2f} plain, "
                     f"×{row['peak_atman_over_gradxinput']:.2f} grad×input), naive {row['peak_mb_naive']:.1f} MiB")
        print(format_ab(res, case=f"bs={bs:<3}") + extra)
        path = append_json_row(NAME, row, out=args.out, device=args.device)
        rows.append(row)
    fig = plot_rows(rows, Path(args.out) / f"{NAME}.png")
    print(f"rows appended to {path}" + (f"; figure {fig}" if fig else "") + f" ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
