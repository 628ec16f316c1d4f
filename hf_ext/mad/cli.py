"""``hf-ext mad``: generate/export the MAD datasets, run the benchmark, render the report (std-lib imports only here).

Examples:
    hf-ext mad grid                                   # the 66 settings with their names
    hf-ext mad generate in-context-recall --set num_train_examples=64 --out runs/cr   # runs/cr/{train,test}.parquet
    hf-ext mad export --out mad_export --tasks CR M   # parquet per config + dataset card
    hf-ext mad run --arch "mh-attention,swiglu,mh-attention,swiglu" --protocol madlab --lite --out mad_results
    accelerate launch -m hf_ext mad run --arch "mH Sg mA Sg" --full --out mad_results   # multi-GPU
    hf-ext mad report mad_results --out mad_results/report
"""

from __future__ import annotations

import argparse
import json

from hf_ext.utils import cli
from hf_ext.utils.logging import get_logger

logger = get_logger(__name__)


def _kv_overrides(items) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value (a mad-lab setting such as vocab_size=64), got {item!r}")
        k, v = item.split("=", 1)
        if v in ("madlab", "fast"):
            out[k] = v
            continue
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            raise ValueError(f"--set {item!r}: the value {v!r} is not a number, true/false or a JSON list "
                             f"(e.g. {k}=64)") from None
    return out


_SET_HELP = "override mad-lab settings, e.g. num_train_examples=512 mode=fast"


def _add_run_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("--arch", required=True, help="MADStack layer pattern ('mh-attention,swiglu,...', 'mH Sg mA Sg'), "
                   "'hf:<model_type>' (hf:llama, hf:gpt2, hf:mamba ...), 'umup', or a folder with a config.json")
    cli.add_common_options(r, seed=0, out="mad_results", out_help="one JSON row per run, results.parquet (and report/)",
                           json=True, progress=True)
    r.add_argument("--protocol", choices=["madlab", "clean"], default="madlab",
                   help="madlab: mad-lab's training protocol; clean: a held-out validation split (default: %(default)s)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--lite", dest="preset", action="store_const", const="lite",
                   help="6 baselines x 1 lr x wd 0, 20 epochs (default)")
    g.add_argument("--full", dest="preset", action="store_const", const="full",
                   help="66 settings x lr grid x wd {0, 0.1}, 200 epochs (396 runs for the default grid)")
    r.set_defaults(preset="lite")
    r.add_argument("--tasks", nargs="*", default=None, help="restrict to these tasks (names or CR NR FR M C SC)")
    r.add_argument("--lrs", nargs="*", type=cli.finite_float, default=None, help="override the LR grid")
    r.add_argument("--wds", nargs="*", type=cli.finite_float, default=None, help="override the weight-decay grid")
    r.add_argument("--epochs", type=cli.positive_int, default=None, help="override the preset's epochs")
    r.add_argument("--max-steps", type=cli.positive_int, default=None, help="cap optimiser steps per run (smoke tests)")
    r.add_argument("--hidden-size", type=cli.positive_int, default=128, help="model width (default: %(default)s)")
    r.add_argument("--num-layers", type=cli.positive_int, default=4, help="layers of the model (default: %(default)s)")
    r.add_argument("--num-heads", type=cli.positive_int, default=None, help="attention heads (default: the model's)")
    r.add_argument("--batch-size", type=cli.positive_int, default=128, help="sequences per step (default: %(default)s)")
    r.add_argument("--set", nargs="*", default=None, metavar="KEY=VALUE", help=f"{_SET_HELP} (every job)")
    r.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="training precision (default: fp32)")
    r.add_argument("--no-resume", action="store_true", help="rerun jobs already in --out")
    r.add_argument("--report", action="store_true", help="also render the report into <out>/report")


def add_commands(actions) -> None:
    """MAD (Poli et al., ICML 2024): the six synthetic tasks as HF datasets and the benchmark runner.

    Sub-commands: ``grid``, ``generate``, ``export``, ``run``, ``report``.
    """
    gr = cli.add_command(actions, "grid", _cmd_grid, help="list the 66 benchmark settings")
    cli.add_common_options(gr, json=True)

    ge = cli.add_command(actions, "generate", _cmd_generate, help="generate one task setting and write parquet")
    ge.add_argument("name", help="task, shorthand or grid name (e.g. CR_vs-64_sl-128_ntr-12800)")
    cli.add_common_options(ge, out_help="train.parquet and test.parquet", out_when_absent="print a summary only",
                           json=True, progress=True)
    ge.add_argument("--seed", type=cli.non_negative_int, default=None, help="generator seed (default: the setting's)")
    ge.add_argument("--mode", choices=["madlab", "fast"], default="madlab",
                    help="madlab: byte-identical to mad-lab; fast: vectorised (default: %(default)s)")
    ge.add_argument("--set", nargs="*", default=None, metavar="KEY=VALUE", help=_SET_HELP)

    ex = cli.add_command(actions, "export", _cmd_export, help="parquet of every config + dataset card (ready for the Hub)")
    cli.add_common_options(ex, out=cli.REQUIRED, out_help="<config>/{train,test}-*.parquet and the dataset card README.md",
                           json=True, progress=True)
    ex.add_argument("--tasks", nargs="*", default=None, help="restrict to these tasks (names or CR NR FR M C SC)")
    ex.add_argument("--repo-id", default="org/mad-synthetics", help="dataset repository named in the card and for --push")
    ex.add_argument("--set", nargs="*", default=None, metavar="KEY=VALUE", help=f"{_SET_HELP} (every config)")
    ex.add_argument("--push", action="store_true", help="upload to --repo-id after exporting")

    r = cli.add_command(actions, "run", _cmd_run, help="run the benchmark (resumable; accelerate launch for several GPUs)",
                        description="Run the benchmark: accelerate launch -m hf_ext mad run … spreads the runs over "
                                    "processes.")
    _add_run_arguments(r)

    rp = cli.add_command(actions, "report", _cmd_report, help="table + plots + markdown from a results folder")
    rp.add_argument("results", type=cli.existing_path, help="results folder (or .parquet/.json)")
    cli.add_common_options(rp, out_help="mad_scores.csv, mad_bars.png, knob plots, report.md",
                           out_when_absent="<results>/report", json=True)
    rp.add_argument("--title", default="MAD benchmark", help="report title (default: %(default)s)")


def _cmd_grid(args) -> int:
    from hf_ext.mad import benchmark_grid

    grid = benchmark_grid()
    cli.print_result([{"name": c.name, "madlab_path": c.madlab_path, **c.to_dict()} for c in grid],
                     "\n".join([*(f"{c.name:<40} {c.madlab_path}" for c in grid), f"{len(grid)} settings"]),
                     as_json=args.json)
    return 0


def _cmd_generate(args) -> int:
    from pathlib import Path

    from hf_ext.mad import config_from_name, generate_splits

    over = _kv_overrides(args.set)
    over["mode"] = args.mode
    if args.seed is not None:
        over["seed"] = args.seed
    cfg = config_from_name(args.name, **over)
    splits = generate_splits(cfg, progress=not args.no_progress)
    if args.out:
        import pyarrow.parquet as pq

        from hf_ext.mad.builder import to_arrow_table

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for split, (x, y) in splits.items():
            pq.write_table(to_arrow_table(x, y), out / f"{split}.parquet")
    summary = {split: {"input_ids": list(x.shape), "scored_targets_per_row": float((y != -100).sum(1).mean())}
               for split, (x, y) in splits.items()}
    cli.print_result({"name": cfg.name, **summary}, "\n".join(
            f"{cfg.name} {split}: input_ids {tuple(v['input_ids'])}, scored targets/row {v['scored_targets_per_row']:.2f}"
            for split, v in summary.items()), as_json=args.json)
    return 0


def _cmd_export(args) -> int:
    from hf_ext.mad import benchmark_grid, export_parquet, push_mad_to_hub

    configs = benchmark_grid(args.tasks, **_kv_overrides(args.set))
    if args.push:
        url = push_mad_to_hub(args.repo_id, args.out, configs)
        cli.print_result({"url": url, "configs": len(configs)}, url, as_json=args.json)
    else:
        out = export_parquet(args.out, configs, repo_id=args.repo_id, progress=not args.no_progress)
        cli.print_result({"out": str(out), "configs": len(configs)},
                         f"wrote {len(configs)} configs and the dataset card to {out}", as_json=args.json)
    return 0


def _cmd_run(args) -> int:
    from hf_ext.mad.bench import run_benchmark

    rows = run_benchmark(args.arch, protocol=args.protocol, preset=args.preset, out_dir=args.out, tasks=args.tasks,
                         lrs=args.lrs, wds=args.wds, epochs=args.epochs, hidden_size=args.hidden_size,
                         num_layers=args.num_layers, num_heads=args.num_heads, batch_size=args.batch_size,
                         max_steps=args.max_steps, overrides=_kv_overrides(args.set), seed=args.seed,
                         precision=args.precision, progress=not args.no_progress, resume=not args.no_resume)
    lines = [f"{len(rows)} result rows in {args.out}"]
    if args.report:
        from pathlib import Path

        from hf_ext.mad.report import mad_report

        paths = mad_report(args.out, Path(args.out) / "report")
        lines += [paths["table"].round(3).to_string(), f"report: {paths['markdown']}"]
    cli.print_result(rows, "\n".join(lines), as_json=args.json)
    return 0


def _cmd_report(args) -> int:
    from pathlib import Path

    from hf_ext.mad.report import mad_report

    paths = mad_report(args.results, args.out or Path(args.results) / "report", title=args.title)
    table = paths["table"].round(3)
    cli.print_result(json.loads(table.to_json(orient="index")),
                     f"{table.to_string()}\nwrote {paths['markdown']}, {paths['bars']} and {len(paths['knobs'])} knob plots",
                     as_json=args.json)
    return 0
