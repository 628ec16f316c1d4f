"""``hf-ext umup sweep`` (LR transfer), ``coord-check`` and ``train`` (1 or N processes) (std-lib imports only here).

Example:
    hf-ext umup sweep --widths 64 128 256 --steps 150 --seeds 0 1 --out runs/umup_sweep
    hf-ext umup coord-check --widths 64 128 256 --steps 4 --out runs/umup_cc
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_ext.utils import cli
from hf_ext.utils.logging import get_logger

logger = get_logger(__name__)


def add_commands(actions) -> None:
    """u-μP (unit-scaled maximal update parametrization) tools.

    Sub-commands: ``sweep``, ``coord-check``, ``train``.
    """
    s = cli.add_command(actions, "sweep", _cmd_sweep, help="LR transfer across widths: u-μP vs standard parametrisation",
                        description="Train byte-level LMs on the standard-library source over a log2 LR grid per width "
                                    "and parametrisation; write rows (JSON), the optimum per width and a plot (PNG).")
    cli.add_common_options(s, out="umup_sweep", out_help="sweep.json and sweep.png", json=True, progress=True)
    _add_shape_options(s, widths_help="hidden sizes (multiples of 32)", steps=150, batch_size=16)
    s.add_argument("--umup-lrs", type=cli.finite_float, nargs="+", default=[-3, -2, -1, 0, 1],
                   help="log2 LR grid of u-μP (default: %(default)s)")
    s.add_argument("--sp-lrs", type=cli.finite_float, nargs="+", default=[-11, -10, -9, -8, -7, -6],
                   help="log2 LR grid of SP (default: %(default)s)")
    s.add_argument("--seeds", type=cli.non_negative_int, nargs="+", default=[0, 1], help="seeds per grid point (default: %(default)s)")
    s.add_argument("--depth", type=cli.positive_int, default=2, help="decoder layers (default: %(default)s)")
    s.add_argument("--threads", type=cli.positive_int, default=None, help="torch threads (default: torch's)")
    c = cli.add_command(actions, "coord-check", _cmd_coord_check,
                        help="activation/gradient RMS per layer across widths (plot)",
                        description="Record activation and weight-gradient RMS for a few Adam steps at each width.")
    cli.add_common_options(c, seed=0, out="umup_coord_check", out_help="coord_check.json and coord_check.png", json=True)
    _add_shape_options(c, widths_help="hidden sizes (multiples of 32)", steps=4, batch_size=8)

    t = cli.add_command(actions, "train", _cmd_train, help="train a byte-level u-μP Llama on 1 or N processes and save it",
                        description="Train a byte-level u-μP Llama on the standard-library source (offline) with "
                                    "per-role LRs; DDP or FSDP2 under torchrun / accelerate launch -m hf_ext.")
    cli.add_common_options(t, seed=0, out=cli.REQUIRED, out_help="the model (save_pretrained) and losses.json",
                           json=True, progress=True)
    t.add_argument("--width", type=cli.positive_int, default=64, help="hidden size (default: %(default)s)")
    t.add_argument("--depth", type=cli.positive_int, default=2, help="decoder layers (default: %(default)s)")
    t.add_argument("--seq-len", type=cli.positive_int, default=64, help="bytes per sequence (default: %(default)s)")
    t.add_argument("--head-dim", type=cli.positive_int, default=16, help="attention head size (default: %(default)s)")
    t.add_argument("--steps", type=cli.positive_int, default=100, help="optimiser steps (default: %(default)s)")
    t.add_argument("--batch-size", type=cli.positive_int, default=16,
                   help="global batch, split across processes (default: %(default)s)")
    t.add_argument("--lr", type=cli.finite_float, default=0.5, help="u-μP base learning rate η (default: %(default)s)")
    t.add_argument("--weight-decay", type=cli.finite_float, default=0.0, help="independent weight decay (default: %(default)s)")
    t.add_argument("--warmup", type=cli.non_negative_int, default=0, help="warm-up steps before the cosine (default: %(default)s)")
    t.add_argument("--fsdp", action="store_true", help="shard with FSDP2 (implied by an Accelerate FSDP2 config)")


def _add_shape_options(p: argparse.ArgumentParser, *, widths_help: str, steps: int, batch_size: int) -> None:
    p.add_argument("--widths", type=cli.positive_int, nargs="+", default=[64, 128, 256], help=f"{widths_help} (default: %(default)s)")
    p.add_argument("--parametrizations", nargs="+", choices=["umup", "sp"], default=["umup", "sp"],
                   help="u-μP and/or the standard parametrisation (default: both)")
    p.add_argument("--steps", type=cli.positive_int, default=steps, help="Adam steps per run (default: %(default)s)")
    p.add_argument("--batch-size", type=cli.positive_int, default=batch_size, help="sequences per step (default: %(default)s)")
    p.add_argument("--seq-len", type=cli.positive_int, default=64, help="bytes per sequence (default: %(default)s)")


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
    cli.print_result(summary, f"{json.dumps(summary['best_log2_lr'])}\nwrote {out / 'sweep.json'} and {png}",
                     as_json=args.json)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import math

    import torch
    from accelerate import Accelerator

    from hf_ext.core.sharding import sharding_report, unsharded_copy
    from hf_ext.umup.training import build_byte_model, train_umup

    acc = Accelerator(cpu=not torch.cuda.is_available())
    model = build_byte_model(args.width, args.depth, args.seq_len, args.head_dim, seed=args.seed)
    losses = train_umup(model, steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                        weight_decay=args.weight_decay, warmup=args.warmup, seed=args.seed, accelerator=acc,
                        fsdp=args.fsdp, progress=not args.no_progress)
    report = sharding_report(model)
    plain = unsharded_copy(model)  # every process takes part in the gather
    if acc.is_main_process:
        out = Path(args.out)
        plain.save_pretrained(out)
        result = {"losses": losses, "world_size": acc.num_processes, "sharding": report}
        (out / "losses.json").write_text(json.dumps(result), encoding="utf-8")
        cli.print_result(result, f"u-μP: {len(losses)} steps on {acc.num_processes} process(es)"
                                 f"{' (FSDP2)' if report['sharded'] else ''}, loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
                                 f"saved to {out}", as_json=args.json)
    acc.wait_for_everyone()
    return 0 if all(math.isfinite(v) for v in losses) else 1


def _cmd_coord_check(args: argparse.Namespace) -> int:
    err = _validate(args)
    if err:
        logger.error("%s", err)
        return 2
    from hf_ext.umup.coord_check import coord_check, plot_coord_check, width_growth

    out = Path(args.out)
    rows = coord_check(widths=args.widths, parametrizations=args.parametrizations, steps=args.steps,
                       batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "coord_check.json").write_text(json.dumps(rows, indent=1))
    png = plot_coord_check(rows, out / "coord_check.png")
    growth = {p: width_growth(rows, p, "act") for p in args.parametrizations}
    text = "\n".join(f"{p}: activation RMS max/min across widths {g:.2f}" for p, g in growth.items())
    cli.print_result({"activation_rms_growth": growth, "out": str(out)},
                     f"{text}\nwrote {out / 'coord_check.json'} and {png}", as_json=args.json)
    return 0
