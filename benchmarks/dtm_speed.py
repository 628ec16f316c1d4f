"""DTM speed: teacher-forced FDT/SDT (one forward) vs free-running generate-and-compare; scan with vs without depth-prefix caching.

Arm A (baseline) is ``model.generate`` (greedy, KV cache, N steps) of the candidate followed by a positional compare
with the base's continuation; arm B is :func:`hf_ext.dtm.score` (one batched teacher-forced forward). Both run on the
same prompts in the same process; the FDT values must agree except where the candidate's top-2 logit gap is below
1e-4 (near ties), else the script exits 1. The second case times :func:`hf_ext.dtm.sensitivity_scan` with
``prefix_cache=False`` (A) vs ``True`` (B) and checks identical FDTM rows.

Usage:
    python benchmarks/dtm_speed.py --quick
    python benchmarks/dtm_speed.py            # N=128, 32 prompts, Llama-shaped 4 layers × 256 (CPU)
"""

from __future__ import annotations

import sys
import time

from _timing import append_json_row, common_argparser, format_ab, plot_ab, time_ab

NAME = "dtm_speed"
SIZES = {
    "quick": dict(hidden_size=64, num_layers=2, prompts=2, prompt_len=6, n=8, repeats=1, warmup=0),
    "full": dict(hidden_size=256, num_layers=4, prompts=32, prompt_len=16, n=128, repeats=5, warmup=1),
}


def main(argv=None) -> int:
    args = common_argparser(__doc__.splitlines()[0]).parse_args(argv)
    import copy

    import torch

    from hf_ext.dtm import free_running_divergence, reference, score, sensitivity_scan
    from hf_ext.testing import tiny_causal_lm

    started = time.perf_counter()
    size = SIZES["quick" if args.quick else "full"]
    base = tiny_causal_lm("llama", seed=0, hidden_size=size["hidden_size"], num_layers=size["num_layers"],
                          max_position_embeddings=512).to(args.device)
    cand = copy.deepcopy(base)
    with torch.no_grad():  # a controlled perturbation: relative noise on the last MLP's down projection
        w = cand.model.layers[-1].mlp.down_proj.weight
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(1)).to(w.device) * 0.3 * w.std())
    gen = torch.Generator().manual_seed(0)
    prompts = [[1] + torch.randint(4, 128, (size["prompt_len"] - 1,), generator=gen).tolist() for _ in range(size["prompts"])]
    ref = reference(base, prompts, max_new_tokens=size["n"], eos_token_id=[], batch_size=len(prompts), progress=False)

    tf, scores = score(cand, ref, return_scores=True, near_tie_threshold=1e-4)
    free, _ = free_running_divergence(cand, ref, batch_size=len(prompts))
    differ = tf.fdt != free.fdt
    unexplained = differ & ~tf.extra["near_tie_rows"]
    print(f"FDT teacher-forced == free-running on {int((~differ).sum())}/{len(tf)} prompts "
          f"(near-tie rows {tf.extra['near_ties']}, unexplained mismatches {int(unexplained.sum())}); "
          f"mean FDT {tf.aggregate()['fdtm']:.1f} / N={size['n']}")
    if unexplained.any():
        print("FAIL: teacher-forced FDT differs from free-running FDT away from near ties", file=sys.stderr)
        return 1

    repeats = args.repeats or size["repeats"]
    results = {}
    res = time_ab(lambda: free_running_divergence(cand, ref, batch_size=len(prompts)), lambda: score(cand, ref),
                  repeats=repeats, warmup=size["warmup"], label_a="generate+compare", label_b="teacher_forced")
    print(format_ab(res, case="fdt/sdt"))
    results["fdt/sdt"] = res
    append_json_row(NAME, {"benchmark": NAME, "case": "fdt_sdt", "quick": args.quick, "device": args.device, **size,
                           "baseline": "generate+compare", "project": "teacher_forced",
                           "fdt_equal": int((~differ).sum()), "near_ties": tf.extra["near_ties"],
                           **{k: v for k, v in res.items() if not k.startswith("times_")}}, out=args.out, device=args.device)

    scan_ref = ref.select(range(min(8, len(ref))))
    methods = {"int8": [4]}
    a = sensitivity_scan(base, scan_ref, methods=methods, prefix_cache=False, progress=False)
    b = sensitivity_scan(base, scan_ref, methods=methods, prefix_cache=True, progress=False)
    if [r["fdtm"] for r in a.rows] != [r["fdtm"] for r in b.rows]:
        print("FAIL: scan with prefix caching differs from the scan without", file=sys.stderr)
        return 1
    res2 = time_ab(lambda: sensitivity_scan(base, scan_ref, methods=methods, prefix_cache=False, progress=False),
                   lambda: sensitivity_scan(base, scan_ref, methods=methods, prefix_cache=True, progress=False),
                   repeats=repeats, warmup=size["warmup"], label_a="scan_full_forward", label_b="scan_prefix_cache")
    print(format_ab(res2, case="scan"))
    results["scan"] = res2
    append_json_row(NAME, {"benchmark": NAME, "case": "scan", "quick": args.quick, "device": args.device, **size,
                           "components": len(a.rows), "baseline": "scan_full_forward", "project": "scan_prefix_cache",
                           **{k: v for k, v in res2.items() if not k.startswith("times_")}}, out=args.out, device=args.device)
    plot_ab(f"{args.out}/{NAME}.png", results, title=f"DTM: teacher forcing and prefix caching ({args.device})")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
