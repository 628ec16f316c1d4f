"""DTM int8 coverage curve: share of parameters in int8 vs mean FDT for FDTM order, perplexity order and random order.

The paper's claim in miniature: a tiny Llama-shaped model is trained for a few hundred AdamW steps on a seeded Markov
corpus (:func:`hf_ext.dtm.toy.train_toy_lm`); each decoder Linear is int8-fake-quantized alone and scored
(:func:`hf_ext.dtm.sensitivity_scan`), then components are converted cumulatively in three orders — descending FDTM
(the paper's), ascending perplexity of the reference continuation ("standard metric"), and a seeded random
permutation — and the mean FDT/N is measured after each step (:func:`hf_ext.dtm.coverage_curve`). The area under each
curve (x = share of decoder-Linear parameters in int8, y = mean FDT / N) is averaged over 3 seeds. Gate: AUC(FDTM) ≥
AUC(random) (exit 1 otherwise, full mode only); FDTM vs perplexity is reported, not gated. A 4-bit run of the same
protocol is reported as a stress case (int8 moves tiny models little).

Usage:
    python benchmarks/dtm_int8_coverage.py --quick
    python benchmarks/dtm_int8_coverage.py
"""

from __future__ import annotations

import statistics
import sys
import time

from _timing import append_json_row, common_argparser

NAME = "dtm_int8_coverage"
SIZES = {
    "quick": dict(seeds=[0], steps=5, num_layers=1, hidden_size=32, num_prompts=2, n=4, bits=[8]),
    "full": dict(seeds=[0, 1, 2], steps=300, num_layers=4, hidden_size=64, num_prompts=32, n=64, bits=[8, 4]),
}
ORDERS = ("fdtm", "ppl", "random")


def main(argv=None) -> int:
    args = common_argparser(__doc__.splitlines()[0]).parse_args(argv)
    import torch

    from hf_ext.dtm import coverage_curve, curve_auc, reference, sensitivity_scan
    from hf_ext.dtm.compression import random_order
    from hf_ext.dtm.toy import train_toy_lm

    started = time.perf_counter()
    size = SIZES["quick" if args.quick else "full"]
    torch.manual_seed(0)
    aucs = {(bits, o): [] for bits in size["bits"] for o in ORDERS}
    curves = {}
    for seed in size["seeds"]:
        model, prompts = train_toy_lm(seed, steps=size["steps"], num_layers=size["num_layers"],
                                      hidden_size=size["hidden_size"], num_prompts=size["num_prompts"], progress=False)
        model = model.to(args.device)
        ref = reference(model, prompts, max_new_tokens=size["n"], eos_token_id=[], batch_size=64, progress=False)
        for bits in size["bits"]:
            scan = sensitivity_scan(model, ref, methods={"int8": [bits]}, progress=False)
            orders = {"fdtm": scan.ranking("int8", by="fdtm"), "ppl": scan.ranking("int8", by="ppl"),
                      "random": random_order(scan.ranking("int8"), seed)}
            for name, order in orders.items():
                curve = coverage_curve(model, ref, order, bits=bits)
                aucs[(bits, name)].append(curve_auc(curve))
                curves[(bits, seed, name)] = curve
    rows = []
    for bits in size["bits"]:
        mean = {o: statistics.mean(aucs[(bits, o)]) for o in ORDERS}
        print(f"int{bits}: AUC(fdt/N vs int{bits} param share), mean over seeds {size['seeds']}: "
              + "  ".join(f"{o}={mean[o]:.4f} {[round(a, 4) for a in aucs[(bits, o)]]}" for o in ORDERS)
              + f"  fdtm-random={mean['fdtm'] - mean['random']:+.4f}  fdtm-ppl={mean['fdtm'] - mean['ppl']:+.4f}")
        row = {"benchmark": NAME, "case": f"int{bits}", "quick": args.quick, "device": args.device,
               **{k: v for k, v in size.items() if k != "bits"}, "bits": bits, "baseline": "random_order",
               "project": "fdtm_order", **{f"auc_{o}": mean[o] for o in ORDERS},
               **{f"auc_{o}_per_seed": aucs[(bits, o)] for o in ORDERS}}
        append_json_row(NAME, row, out=args.out, device=args.device)
        rows.append(row)
    _plot(f"{args.out}/{NAME}.png", curves, size)
    print(f"done in {time.perf_counter() - started:.1f} s")
    if not args.quick and rows[0]["auc_fdtm"] < rows[0]["auc_random"]:
        print("FAIL: FDTM order has a smaller int8 coverage AUC than random order", file=sys.stderr)
        return 1
    return 0


def _plot(path, curves, size):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    bits_list = size["bits"]
    fig = Figure(figsize=(5 * len(bits_list), 3.6), layout="tight")
    colors = {"fdtm": "tab:blue", "ppl": "tab:orange", "random": "tab:gray"}
    for i, bits in enumerate(bits_list):
        ax = fig.add_subplot(1, len(bits_list), i + 1)
        for (b, seed, name), curve in curves.items():
            if b != bits:
                continue
            ax.plot([p["param_share"] for p in curve], [p["fdt_ratio"] for p in curve], color=colors[name],
                    alpha=0.8, label=name if seed == size["seeds"][0] else None, marker=".")
        ax.set_xlabel(f"share of decoder-Linear parameters in int{bits}")
        ax.set_ylabel("mean FDT / N")
        ax.set_title(f"int{bits} coverage, {len(size['seeds'])} seeds", fontsize=9)
        ax.legend()
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
