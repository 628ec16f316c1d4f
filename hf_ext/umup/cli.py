"""``hf-ext umup sweep`` (LR-transfer experiment) and ``hf-ext umup coord-check`` (std-lib imports only here).

Example:
    hf-ext umup sweep --widths 64 128 256 --steps 150 --seeds 0 1 --out runs/umup_sweep
    hf-ext umup coord-check --widths 64 128 256 --steps 4 --out runs/umup_cc
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``umup`` group (``sweep``, ``coord-check``) to the ``hf-ext`` parser."""
    p = subparsers.add_parser("umup", help="u-μP: LR-transfer sweeps and coordinate checks",
                              description="u-μP (unit-scaled maximal update parametrization) tools.")
    sub = p.add_subparsers(dest="umup_command", metavar="ACTION", required=True)
    s = sub.add_parser("sweep", help="LR transfer across widths: u-μP vs standard parametrisation",
                       description="Train byte-level LMs on the standard-library source over a log2 LR grid per width "
                                   "and parametrisation; write rows (JSON), the optimum per width and a plot (PNG).")
    s.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256], help="hidden sizes (multiples of 32)")
    s.add_argument("--umup-lrs", type=float, nargs="+", default=[-3, -2, -1, 0, 1], help="log2 LR grid of u-μP")
    s.add_argument("--sp-lrs", type=float, nargs="+", default=[-11, -10, -9, -8, -7, -6], help="log2 LR grid of SP")
    s.add_argument("--parametrizations", nargs="+", choices=["umup", "sp"], default=["umup", "sp"])
    s.add_argument("--steps", type=int, default=150)
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--seq-len", type=int, default=64)
    s.add_argument("--depth", type=int, default=2)
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    s.add_argument("--out", default="umup_sweep", help="output folder (default umup_sweep)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_cmd_sweep)
    c = sub.add_parser("coord-check", help="activation/gradient RMS per layer across widths (plot)",
                       description="Record activation and weight-gradient RMS for a few Adam steps at each width.")
    c.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256])
    c.add_argument("--parametrizations", nargs="+", choices=["umup", "sp"], default=["umup", "sp"])
    c.add_argument("--steps", type=int, default=4)
    c.add_argument("--batch-size", type=int, default=8)
    c.add_argument("--seq-len", type=int, default=64)
    c.add_argument("--out", default="umup_coord_check", help="output folder (default umup_coord_check)")
    c.set_defaults(func=_cmd_coord_check)
    return p


def _validate(args: argparse.Namespace) -> str | None:
    if any(w < 32 or w % 32 for w in args.widths):
        return f"--widths must be multiples of 32 (head_dim 32), got {args.widths}"
    if args.steps < 1:
        return f"--steps must be >= 1, got {args.steps}"
    return None


def _cmd_sweep(args: argparse.Namespace) -> int:
    err = _validate(args)
    if err:
        logger.error("%s", err)
        return 2
    import torch

    from hf_ext.umup.sweep import lr_sweep, plot_sweep, save_rows, transfer_summary

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    rows = lr_sweep(widths=args.widths, log2_lrs={"umup": args.umup_lrs, "sp": args.sp_lrs},
                    parametrizations=args.parametrizations, steps=args.steps, seeds=args.seeds,
                    batch_size=args.batch_size, seq_len=args.seq_len, depth=args.depth, progress=not args.no_progress)
    save_rows(rows, out / "sweep.json")
    png = plot_sweep(rows, out / "sweep.png", title=f"{args.steps} steps, seeds {args.seeds}")
    summary = transfer_summary(rows)
    print(json.dumps(summary["best_log2_lr"]))
    print(f"wrote {out / 'sweep.json'} and {png}")
    return 0


def _cmd_coord_check(args: argparse.Namespace) -> int:
    err = _validate(args)
    if err:
        logger.error("%s", err)
        return 2
    from hf_ext.umup.coord_check import coord_check, plot_coord_check, width_growth

    out = Path(args.out)
    rows = coord_check(widths=args.widths, parametrizations=args.parametrizations, steps=args.steps,
                       batch_size=args.batch_size, seq_len=args.seq_len)
    out.mkdir(parents=True, exist_ok=True)
    (out / "coord_check.json").write_text(json.dumps(rows, indent=1))
    png = plot_coord_check(rows, out / "coord_check.png")
    for p in args.parametrizations:
        print(f"{p}: activation RMS max/min across widths {width_growth(rows, p, 'act'):.2f}")
    print(f"wrote {out / 'coord_check.json'} and {png}")
    return 0
