"""``hf-ext dtm score|scan|plan``: divergent token metrics and DTM-guided compression from the command line.

Standard-library imports only at module level (``hf-ext --help`` must not import torch).

Examples:
    hf-ext dtm score --model gpt2 --candidate ./gpt2-int8 --prompts prompts.txt -N 128
    hf-ext dtm scan --model gpt2 --prompts prompts.txt -N 64 --prune 0.5 0.9 --out runs/dtm   # runs/dtm/scan.json
    hf-ext dtm plan --model gpt2 --prompts prompts.txt -N 64 --min-fdt-ratio 0.9 --out runs/dtm
Without ``--model`` a seeded tiny Llama (random weights) and built-in prompts are used (a smoke run). The result is
JSON: printed, or written to ``--out``/<command>.json (``--base`` is the pre-0.2 name of ``--model``).
"""

from __future__ import annotations

import argparse
import json
import sys

from hf_ext.utils import cli
from hf_ext.utils.logging import get_logger
from hf_ext.utils.saving import atomic_write_text

logger = get_logger(__name__)

_DEFAULT_PROMPTS = ["the cat sat on the", "once upon a time", "to be or not to be", "hello world, this is"]


def add_commands(actions) -> None:
    """Divergent token metrics and DTM-guided compression.

    Sub-commands: ``score``, ``scan``, ``plan``.
    """
    for name, help_ in (("score", "FDT/SDT of a candidate model against the base's greedy continuations"),
                        ("scan", "per-component sensitivity scan ranked by FDTM"),
                        ("plan", "greedy int8/sparsity plan in FDTM order")):
        s = cli.add_command(actions, name, _run, help=help_)
        cli.add_common_options(s, model="base causal LM, Hub id or folder (default: a tiny random Llama)", device="cpu",
                               seed=0, out_help=f"{name}.json", out_when_absent="print the JSON result", json=True,
                               progress=True)
        cli.add_deprecated_alias(s, "--base", "--model")
        s.add_argument("--prompts", type=cli.existing_path, help="text file, one prompt per line (default: a few built-in prompts)")
        s.add_argument("-N", "--max-new-tokens", type=cli.positive_int, default=32, help="reference length N (default 32)")
        s.add_argument("--cache-dir", help="cache the greedy reference here")
        if name == "score":
            s.add_argument("--candidate", type=cli.model_or_path, help="candidate model (default: the base with all Linears int8-fake-quantized)")
            s.add_argument("--aligned", action="store_true", help="also the who-what-benchmark aligned variant")
        else:
            s.add_argument("--prune", type=cli.unit_fraction, nargs="*", default=[], help="sparsity levels to scan/plan")
            s.add_argument("--no-int8", action="store_true", help="skip int8")
        if name == "plan":
            s.add_argument("--min-fdt-ratio", type=cli.finite_float, default=0.9, help="keep mean FDT/N above this (default 0.9)")


def _load(args):
    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(args.model).to(args.device).eval()
        return model, AutoTokenizer.from_pretrained(args.model), args.model
    from hf_ext.tiny import tiny_causal_lm, tiny_tokenizer

    return tiny_causal_lm("llama", seed=args.seed).to(args.device), tiny_tokenizer(), "tiny-llama (random)"


def _run(args: argparse.Namespace) -> int:
    import torch

    from hf_ext import dtm

    torch.manual_seed(args.seed)
    if args.max_new_tokens <= 0:
        print(f"error: -N/--max-new-tokens must be ≥ 1, got {args.max_new_tokens}", file=sys.stderr)
        return 2
    model, tok, label = _load(args)
    prompts = _DEFAULT_PROMPTS
    if args.prompts:
        with open(args.prompts, encoding="utf-8") as f:
            prompts = [line.rstrip("\n") for line in f if line.strip()]
    progress = not args.no_progress
    ref = dtm.reference(model, prompts, max_new_tokens=args.max_new_tokens, tokenizer=tok, cache_dir=args.cache_dir,
                        progress=progress)
    if args.dtm_command == "score":
        if args.candidate:
            from transformers import AutoModelForCausalLM

            cand = AutoModelForCausalLM.from_pretrained(args.candidate).to(args.device).eval()
            result = {"teacher_forced": dtm.score(cand, ref, base=model).to_dict()}
            if args.aligned:
                result["aligned"] = dtm.score_aligned(cand, ref, tokenizer=tok, base=model).to_dict()
        else:
            with dtm.fake_quant(model, dtm.list_components(model)):
                result = {"candidate": "base with every decoder Linear int8 (fake quant)",
                          "teacher_forced": dtm.score(model, ref).to_dict()}
                if args.aligned:
                    result["aligned"] = dtm.score_aligned(model, ref, tokenizer=tok).to_dict()
    else:
        methods = {} if args.no_int8 else {"int8": [8]}
        if args.prune:
            methods["prune"] = list(args.prune)
        if not methods:
            print("error: nothing to scan: drop --no-int8 or pass --prune levels", file=sys.stderr)
            return 2
        scan = dtm.sensitivity_scan(model, ref, methods=methods, progress=progress)
        if args.dtm_command == "scan":
            result = json.loads(scan.to_json())
        else:
            plan = dtm.build_plan(model, ref, scan, int8=not args.no_int8, prune_levels=args.prune,
                                  min_fdt_ratio=args.min_fdt_ratio, base_model=label, progress=progress)
            result = json.loads(plan.to_json())
    if args.out:
        path = cli.out_file(args.out, f"{args.dtm_command}.json", legacy_suffixes=(".json",))
        atomic_write_text(path, json.dumps(result, indent=1))  # a reader never sees half a plan
        cli.print_result(result, f"wrote {path}", as_json=args.json)
    else:  # the result has no shorter text form than its JSON
        cli.print_result(result, json.dumps(result, indent=1), as_json=True)
    return 0
