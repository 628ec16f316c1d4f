"""``hf-ext mad``: generate/export the MAD datasets, run the benchmark, render the report (std-lib imports only here).

Examples:
    hf-ext mad grid                                   # the 66 settings with their names
    hf-ext mad generate in-context-recall --num-train-examples 64 --out cr.parquet
    hf-ext mad export --out mad_export --tasks CR M   # parquet per config + dataset card
    hf-ext mad run --arch "mh-attention,swiglu,mh-attention,swiglu" --protocol madlab --lite --out mad_results
    accelerate launch -m hf_ext.mad.bench --arch "mH Sg mA Sg" --full --out mad_results   # multi-GPU
    hf-ext mad report mad_results --out mad_results/report
"""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger(__name__)


def _kv_overrides(items) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value (a mad-lab setting such as vocab_size=64), got {item!r}")
        k, v = item.split("=", 1)
        out[k] = json.loads(v) if v not in ("madlab", "fast") else v
    return out


def _add_run_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("--arch", required=True, help="MADStack layer pattern ('mh-attention,swiglu,...', 'mH Sg mA Sg'), "
                   "'hf:<model_type>' (hf:llama, hf:gpt2, hf:mamba ...), 'umup', or a folder with a config.json")
    r.add_argument("--protocol", choices=["madlab", "clean"], default="madlab")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--lite", dest="preset", action="store_const", const="lite",
                   help="6 baselines x 1 lr x wd 0, 20 epochs (default)")
    g.add_argument("--full", dest="preset", action="store_const", const="full",
                   help="66 settings x lr grid x wd {0, 0.1}, 200 epochs (396 runs for the default grid)")
    r.set_defaults(preset="lite")
    r.add_argument("--tasks", nargs="*", default=None, help="restrict to these tasks (names or CR NR FR M C SC)")
    r.add_argument("--lrs", nargs="*", type=float, default=None, help="override the LR grid")
    r.add_argument("--wds", nargs="*", type=float, default=None, help="override the weight-decay grid")
    r.add_argument("--epochs", type=int, default=None)
    r.add_argument("--max-steps", type=int, default=None, help="cap optimiser steps per run (smoke tests)")
    r.add_argument("--hidden-size", type=int, default=128)
    r.add_argument("--num-layers", type=int, default=4)
    r.add_argument("--num-heads", type=int, default=None)
    r.add_argument("--batch-size", type=int, default=128)
    r.add_argument("--set", nargs="*", default=None, metavar="KEY=VALUE",
                   help="override mad-lab settings of every job, e.g. num_train_examples=512 mode=fast")
    r.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", default="mad_results")
    r.add_argument("--no-resume", action="store_true", help="rerun jobs already in --out")
    r.add_argument("--report", action="store_true", help="also render the report into <out>/report")
    r.add_argument("--no-progress", action="store_true")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``mad`` group (``grid``, ``generate``, ``export``, ``run``, ``report``) to the ``hf-ext`` parser."""
    p = subparsers.add_parser("mad", help="MAD synthetic tasks: datasets, benchmark runner, report",
                              description="MAD (Poli et al., ICML 2024): the six synthetic tasks as HF datasets and "
                                          "the benchmark runner.")
    sub = p.add_subparsers(dest="mad_command", metavar="ACTION", required=True)

    gr = sub.add_parser("grid", help="list the 66 benchmark settings")
    gr.add_argument("--json", action="store_true")
    gr.set_defaults(func=_cmd_grid)

    ge = sub.add_parser("generate", help="generate one task setting and write parquet")
    ge.add_argument("name", help="task, shorthand or grid name (e.g. CR_vs-64_sl-128_ntr-12800)")
    ge.add_argument("--mode", choices=["madlab", "fast"], default="madlab")
    ge.add_argument("--seed", type=int, default=None)
    ge.add_argument("--set", nargs="*", default=None, metavar="KEY=VALUE")
    ge.add_argument("--out", default=None, help="folder for {train,test}.parquet (default: print a summary only)")
    ge.set_defaults(func=_cmd_generate)

    ex = sub.add_parser("export", help="parquet of every config + dataset card (ready for the Hub)")
    ex.add_argument("--out", required=True)
    ex.add_argument("--tasks", nargs="*", default=None)
    ex.add_argument("--repo-id", default="org/mad-synthetics")
    ex.add_argument("--set", nargs="*", default=None, metavar="KEY=VALUE")
    ex.add_argument("--push", action="store_true", help="upload to --repo-id after exporting")
    ex.set_defaults(func=_cmd_export)

    r = sub.add_parser("run", help="run the benchmark (resumable; accelerate launch for several GPUs)")
    _add_run_arguments(r)
    r.set_defaults(func=_cmd_run)

    rp = sub.add_parser("report", help="table + plots + markdown from a results folder")
    rp.add_argument("results", help="results folder (or .parquet/.json)")
    rp.add_argument("--out", default=None, help="default <results>/report")
    rp.add_argument("--title", default="MAD benchmark")
    rp.set_defaults(func=_cmd_report)
    return p


def _cmd_grid(args) -> int:
    from hf_ext.mad import benchmark_grid

    grid = benchmark_grid()
    if args.json:
        print(json.dumps([{"name": c.name, "madlab_path": c.madlab_path, **c.to_dict()} for c in grid], indent=1))
    else:
        for c in grid:
            print(f"{c.name:<40} {c.madlab_path}")
        print(f"{len(grid)} settings")
    return 0


def _cmd_generate(args) -> int:
    from pathlib import Path

    from hf_ext.mad import config_from_name, generate_splits

    try:
        over = _kv_overrides(args.set)
        over["mode"] = args.mode
        if args.seed is not None:
            over["seed"] = args.seed
        cfg = config_from_name(args.name, **over)
    except ValueError as err:
        logger.error("%s", err)
        return 1
    splits = generate_splits(cfg, progress=True)
    if args.out:
        import pyarrow.parquet as pq

        from hf_ext.mad.builder import to_arrow_table

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for split, (x, y) in splits.items():
            pq.write_table(to_arrow_table(x, y), out / f"{split}.parquet")
    for split, (x, y) in splits.items():
        print(f"{cfg.name} {split}: input_ids {tuple(x.shape)}, scored targets/row {float((y != -100).sum(1).mean()):.2f}")
    return 0


def _cmd_export(args) -> int:
    from hf_ext.mad import benchmark_grid, export_parquet, push_mad_to_hub

    try:
        configs = benchmark_grid(args.tasks, **_kv_overrides(args.set))
    except ValueError as err:
        logger.error("%s", err)
        return 1
    if args.push:
        print(push_mad_to_hub(args.repo_id, args.out, configs))
    else:
        out = export_parquet(args.out, configs, repo_id=args.repo_id)
        print(f"wrote {len(configs)} configs and the dataset card to {out}")
    return 0


def _cmd_run(args) -> int:
    from hf_ext.mad.bench import run_benchmark

    try:
        rows = run_benchmark(args.arch, protocol=args.protocol, preset=args.preset, out_dir=args.out, tasks=args.tasks,
                             lrs=args.lrs, wds=args.wds, epochs=args.epochs, hidden_size=args.hidden_size,
                             num_layers=args.num_layers, num_heads=args.num_heads, batch_size=args.batch_size,
                             max_steps=args.max_steps, overrides=_kv_overrides(args.set), seed=args.seed,
                             precision=args.precision, progress=not args.no_progress, resume=not args.no_resume)
    except ValueError as err:
        logger.error("%s", err)
        return 1
    print(f"{len(rows)} result rows in {args.out}")
    if args.report:
        from pathlib import Path

        from hf_ext.mad.report import mad_report

        paths = mad_report(args.out, Path(args.out) / "report")
        print(paths["table"].round(3).to_string())
        print(f"report: {paths['markdown']}")
    return 0


def _cmd_report(args) -> int:
    from pathlib import Path

    from hf_ext.mad.report import mad_report

    try:
        paths = mad_report(args.results, args.out or Path(args.results) / "report", title=args.title)
    except (FileNotFoundError, ValueError) as err:
        logger.error("%s", err)
        return 1
    print(paths["table"].round(3).to_string())
    print(f"wrote {paths['markdown']}, {paths['bars']} and {len(paths['knobs'])} knob plots")
    return 0
