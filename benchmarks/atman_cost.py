"""AtMan cost: AtMan (prefix-KV reuse) vs plain forward, gradient×input and naive AtMan (no prefix reuse).

Time: AtMan vs naive AtMan at equal ``max_batch_size`` (alternating, same process). Memory: each arm in its own
subprocess (max RSS above the post-load baseline on CPU; the allocator's peak on CUDA): plain forward,
gradient×input (autograd to the input embeddings), AtMan and naive AtMan at each ``max_batch_size``.
On CPU two views of RSS (``--memory``):

- ``cold``: the baseline right after loading the model; the arm's first call also pays one-time lazy
  initialisation (imports inside forward, oneDNN/thread-pool set-up), and glibc's default allocator keeps freed
  buffers of up to 32 MiB in its heap (dynamic mmap threshold), so RSS is a high-water mark of the allocator.
- ``steady``: the same arm is called once on an 8-token prompt before the baseline (one-time initialisation is
  part of the load), and ``MALLOC_MMAP_THRESHOLD_=131072`` makes glibc return every buffer of 128 KiB or more to
  the system when it is freed, so RSS follows the memory the arm actually holds (the CPU counterpart of the CUDA
  allocator's peak).

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
# CPU memory views: (extra environment of the arm's subprocess, warm-up call before the baseline)
MEMORY_VIEWS = {"cold": ({}, False), "steady": ({"MALLOC_MMAP_THRESHOLD_": "131072"}, True)}
LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192)


def load_arm(hidden_size, num_layers, prompt, target, device="cpu", arm=None, warm=False, **arm_kwargs):
    """Model and inputs of the arms; ``arm_kwargs`` (e.g. ``max_batch_size``) reach the arm through the state.

    ``warm=True``: call ``arm`` once on an 8-token prompt before returning, so that one-time lazy initialisation
    (imports inside forward, kernel and thread-pool set-up) is part of the load, not of the measured call."""
    state = _load(hidden_size, num_layers, prompt, target, device)
    state["arm_kwargs"] = arm_kwargs
    if warm and arm:
        globals()[arm]({**state, "prompt": state["prompt"][:8], "target": state["target"][:2]})
    return state


def _load(hidden_size, num_layers, prompt, target, device):
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


def atman_arm(state, max_batch_size=None, prefix_reuse=None):
    from hf_ext.atman import AtManExplainer

    kw = state.get("arm_kwargs", {})
    max_batch_size = max_batch_size or kw.get("max_batch_size", 1)
    prefix_reuse = kw.get("prefix_reuse", True) if prefix_reuse is None else prefix_reuse

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
    views = [(sfx, name) for sfx, name in (("", "cold" if rows[0]["device"] == "cpu" else "allocator peak"),
                                            ("_steady", "steady")) if f"peak_mb_atman{sfx}" in rows[0]]
    fig = Figure(figsize=(4 * (1 + len(views)), 3), dpi=100, layout="tight")
    ax1 = fig.add_subplot(1, 1 + len(views), 1)
    ax1.plot(bs, [r["ratio_b_over_a"] for r in rows], marker="o", label="AtMan / naive AtMan")
    ax1.axhline(0.6, color="grey", ls="--", label="target 0.6")
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("max_batch_size")
    ax1.set_ylabel("time ratio")
    ax1.legend(fontsize=8)
    for k, (sfx, name) in enumerate(views):
        ax2 = fig.add_subplot(1, 1 + len(views), 2 + k)
        ax2.plot(bs, [r[f"peak_mb_atman{sfx}"] for r in rows], marker="o", label="AtMan")
        ax2.plot(bs, [r[f"peak_mb_naive{sfx}"] for r in rows], marker="s", label="naive AtMan")
        ax2.axhline(rows[0][f"peak_mb_plain{sfx}"], color="tab:green", ls="--", label="one plain forward")
        ax2.axhline(rows[0][f"peak_mb_gradxinput{sfx}"], color="tab:red", ls="--", label="gradient×input")
        ax2.set_xscale("log", base=2)
        ax2.set_yscale("log")
        ax2.set_xlabel("max_batch_size")
        ax2.set_ylabel("peak MiB above load")
        ax2.set_title(f"memory: {name}", fontsize=9)
        ax2.legend(fontsize=7)
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
    parser.add_argument("--memory", choices=["cold", "steady", "both"], default="both",
                        help="CPU memory view(s): cold (first call, default allocator), steady (after an 8-token "
                             "warm-up call, MALLOC_MMAP_THRESHOLD_=131072), both (default)")
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

    views = ["cuda"] if cuda else (["cold", "steady"] if args.memory == "both" else [args.memory])

    def peak(run, view, **extra):
        if view == "cuda":  # the allocator's peak is exact in-process: no second load of the model
            return cuda_peak_mb(lambda: globals()[run](state, **extra))
        env, warm = MEMORY_VIEWS[view]
        spec = ArmSpec(me, setup="load_arm", run=run, kwargs={**kw, "arm": run, "warm": warm, **extra})
        return peak_rss_mb(spec, device=args.device, env=env)

    mem = {}
    if not args.quick:
        for view in views:
            mem[view] = {"plain": peak("plain_arm", view), "gradxinput": peak("gradxinput_arm", view)}
            print(f"peak memory above the loaded model ({view}): plain forward {mem[view]['plain']:.1f} MiB, "
                  f"gradient×input {mem[view]['gradxinput']:.1f} MiB")
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
        for view in mem:
            sfx = "" if view in ("cuda", "cold") else f"_{view}"
            for reuse, key in ((True, "atman"), (False, "naive")):
                row[f"peak_mb_{key}{sfx}"] = peak("atman_arm", view, max_batch_size=bs, prefix_reuse=reuse)
            row.update({f"peak_mb_{k}{sfx}": v for k, v in mem[view].items()})
            row[f"peak_atman_over_plain{sfx}"] = row[f"peak_mb_atman{sfx}"] / max(mem[view]["plain"], 1e-9)
            row[f"peak_atman_over_gradxinput{sfx}"] = row[f"peak_mb_atman{sfx}"] / max(mem[view]["gradxinput"], 1e-9)
            extra += (f"\n    {view}: peak atman {row[f'peak_mb_atman{sfx}']:.1f} MiB "
                      f"(×{row[f'peak_atman_over_plain{sfx}']:.2f} plain, ×{row[f'peak_atman_over_gradxinput{sfx}']:.2f} "
                      f"grad×input), naive {row[f'peak_mb_naive{sfx}']:.1f} MiB")
        print(format_ab(res, case=f"bs={bs:<3}") + extra)
        path = append_json_row(NAME, row, out=args.out, device=args.device)
        rows.append(row)
    fig = plot_rows(rows, Path(args.out) / f"{NAME}.png")
    print(f"rows appended to {path}" + (f"; figure {fig}" if fig else "") + f" ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
