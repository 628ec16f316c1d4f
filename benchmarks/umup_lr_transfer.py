"""u-μP LR transfer: optimal LR per width for u-μP (UMupLlamaForCausalLM) vs standard parametrisation (LlamaForCausalLM).

Byte-level LM (vocab 256) on the interpreter's standard-library ``*.py`` source, depth 2, head_dim 32, SwiGLU ×2,
batch 16 × 64 bytes, AdamW with warm-up + cosine decay, no weight decay; widths {64, 128, 256}, a log2 LR grid per
parametrisation, 2 seeds; the loss is the mean of the last eighth of the steps, averaged over seeds. Target: u-μP's
optimum moves by at most one grid step across widths while SP's moves more. Writes the JSON rows, a summary row
(``benchmarks/results/umup_lr_transfer.jsonl``) and the plot ``<out>/umup_lr_transfer.png`` (the committed copy:
``benchmarks/figures/umup_lr_transfer_cpu.png``).

    python benchmarks/umup_lr_transfer.py            # full: ≈ 10 min on 2 idle CPU cores (1 torch thread)
    python benchmarks/umup_lr_transfer.py --quick    # smoke test, a few seconds
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _timing import append_json_row, common_argparser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NAME = "umup_lr_transfer"
SIZES = {
    "quick": dict(widths=[32, 64], grids={"umup": [-1, 0], "sp": [-8, -7]}, steps=4, seeds=[0], batch_size=4,
                  seq_len=32),
    "full": dict(widths=[64, 128, 256], grids={"umup": [-3, -2, -1, 0, 1, 2], "sp": [-11, -10, -9, -8, -7, -6]},
                 steps=150, seeds=[0, 1], batch_size=16, seq_len=64),
}


def main(argv=None) -> int:
    parser = common_argparser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: by size)")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: by size)")
    parser.add_argument("--grid-umup", type=int, nargs="+", default=None, help="log2 LRs of the u-μP arm")
    parser.add_argument("--grid-sp", type=int, nargs="+", default=None, help="log2 LRs of the SP arm")
    args = parser.parse_args(argv)
    import torch

    from hf_ext.umup.sweep import lr_sweep, plot_sweep, save_rows, transfer_summary

    torch.set_num_threads(args.threads or 1)  # default 1 here: no oversubscription
    size = dict(SIZES["quick" if args.quick else "full"])
    size["grids"] = {"umup": args.grid_umup or size["grids"]["umup"], "sp": args.grid_sp or size["grids"]["sp"]}
    size["batch_size"] = args.batch_size or size["batch_size"]
    steps = args.steps or size["steps"]
    t0 = time.perf_counter()
    rows = lr_sweep(widths=size["widths"], log2_lrs=size["grids"], steps=steps, seeds=size["seeds"],
                    batch_size=size["batch_size"], seq_len=size["seq_len"], progress=not args.quick)
    wall = time.perf_counter() - t0
    summary = transfer_summary(rows)
    out = Path(args.out)
    save_rows(rows, out / f"{NAME}_rows.json")
    title = (f"byte-level LM on stdlib source, depth 2, {steps} steps, batch {size['batch_size']}×{size['seq_len']}, "
             f"seeds {size['seeds']} (CPU)")
    png = plot_sweep(rows, out / f"{NAME}.png", title=title)
    for p, d in summary["best_log2_lr"].items():
        print(f"{p:5s} optimal log2 LR by width: {d}  (shift {summary[f'{p}_shift']:+g} grid steps)")
    ok = summary.get("umup_range", 0) <= 1 and summary.get("sp_range", 0) > summary.get("umup_range", 0)
    print(f"target (u-μP optimum moves <= 1 grid step across widths, SP's moves more; range = max - min of the "
          f"optimum): umup range {summary.get('umup_range')}, sp range {summary.get('sp_range')} → "
          f"{'met' if ok else 'NOT met'}; "
          f"wall {wall:.0f} s; plot {png}")
    append_json_row(NAME, {"benchmark": NAME, "quick": args.quick, "steps": steps, "widths": size["widths"],
                           "grids": size["grids"], "seeds": size["seeds"], "summary": summary, "target_met": ok,
                           "wall_s": wall}, out=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
