"""``hf-ext atman explain``: explain a target with AtMan and write the HTML heat-map (std-lib imports only here).

Example:
    hf-ext atman explain --prompt "the cat sat on the" --target " mat" --granularity word --out runs/atman --plot
    hf-ext atman explain --prompt "the cat sat on the" --target " mat" --foil " hat" --out runs/atman
    hf-ext atman explain --dataset items.jsonl --out runs/atman   # explanations.jsonl + index.html + one page each
"""

from __future__ import annotations

import argparse
import json

from hf_ext.utils import cli
from hf_ext.utils.deprecation import warn_deprecated
from hf_ext.utils.logging import get_logger

logger = get_logger(__name__)


def add_commands(actions) -> None:
    """AtMan: explain a causal LM's target by suppressing prompt items in attention.

    Sub-commands: ``explain``.
    """
    e = cli.add_command(actions, "explain", _cmd_explain, help="explain a target and write an HTML heat-map",
                        description="Explain --target given --prompt; write explanation.html and explanation.json (and "
                                    "with --plot a PNG bar chart) into --out. With --dataset ITEMS.jsonl (one JSON "
                                    "object per line: prompt, target, optional foil, granularity, id) write "
                                    "explanations.jsonl, one page per item under html/ and an index.html instead.")
    e.add_argument("--prompt", help="the prompt whose units are explained (required unless --dataset)")
    e.add_argument("--target", help="the continuation whose loss the units are scored against (required unless --dataset)")
    e.add_argument("--foil", default=None,
                   help="contrast target: explain why --target rather than --foil (default: no contrast)")
    e.add_argument("--dataset", default=None, metavar="ITEMS.jsonl",
                   help="explain every line of a JSONL file ({\"prompt\", \"target\"[, \"foil\", \"granularity\", "
                        "\"id\"]}) instead of --prompt/--target")
    e.add_argument("--step", default="cross_entropy", choices=["cross_entropy", "probability"],
                   help="what Δ measures per target token (default: %(default)s)")
    cli.add_common_options(e, model="causal LM Hub id or folder (default: a tiny random Llama built in code)", device="cpu",
                           seed=0, out="atman_out", out_help="explanation.html, explanation.json, explanation.png "
                           "(with --dataset: explanations.jsonl, index.html, html/)", progress=True)
    # --json: print the explanation as JSON; the pre-0.2 form --json PATH (write it to PATH) still works, with a warning
    e.add_argument("--json", nargs="?", const=True, default=False, metavar="PATH",
                   help="print the explanation as JSON instead of a summary line")
    e.add_argument("--granularity", default="token",
                   help="unit size: token, word, sentence, paragraph or a delimiter string (default: %(default)s)")
    e.add_argument("--mode", default="log_additive", choices=["log_additive", "multiplicative", "reference_compat"],
                   help="how suppression enters attention (default: %(default)s)")
    e.add_argument("--factor", type=cli.finite_float, default=0.1, help="suppression factor in [0, 1] (default: %(default)s)")
    e.add_argument("--threshold", type=cli.finite_float, default=None,
                   help="cosine threshold κ for co-suppressing similar units (default: off)")
    e.add_argument("--max-batch-size", type=cli.positive_int, default=8,
                   help="suppressed copies per forward pass (default: %(default)s)")
    e.add_argument("--postprocessing", default="none", choices=["none", "absolute", "square"],
                   help="transform of the relevance before display (default: %(default)s)")
    e.add_argument("--plot", action="store_true", help="also write explanation.png, a bar chart")
    e.add_argument("--png", default=None, metavar="PATH",
                   help="deprecated (removed in hf-ext 0.3): write the bar chart to PATH; use --plot")


def _cmd_explain(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.dataset is not None and (args.prompt is not None or args.target is not None or args.foil is not None):
        logger.error("--dataset %r replaces --prompt/--target/--foil; give either the file or one prompt", args.dataset)
        return 2
    if args.dataset is None and (args.prompt is None or args.target is None):
        logger.error("give --prompt and --target (or --dataset ITEMS.jsonl); got prompt=%r target=%r",
                     args.prompt, args.target)
        return 2
    import torch

    from hf_ext.atman import AtManExplainer

    torch.manual_seed(args.seed)
    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="sdpa").to(args.device).eval()
    else:
        from hf_ext.tiny import tiny_causal_lm, tiny_tokenizer

        model, tok = tiny_causal_lm("llama", seed=args.seed).to(args.device), tiny_tokenizer()
        logger.warning("no --model given: explaining a tiny random Llama (the heat-map is meaningless)")
    explainer = AtManExplainer(model, tok, mode=args.mode, suppression_factor=args.factor,
                               conceptual_threshold=args.threshold, max_batch_size=args.max_batch_size,
                               progress=not args.no_progress)
    if args.dataset is not None:
        from .batch import explain_dataset

        summary = explain_dataset(explainer, args.dataset, args.out, granularity=args.granularity, step=args.step,
                                  postprocessing=args.postprocessing, progress=not args.no_progress)
        cli.print_result(summary, f"wrote {summary['jsonl']} and {summary['index']} ({summary['items']} explanations)",
                         as_json=args.json is True)
        return 0
    exp = explainer.explain(args.prompt, args.target, granularity=args.granularity, step=args.step, foil=args.foil)
    html = cli.out_file(args.out, "explanation.html", legacy_suffixes=(".html", ".htm"))
    html.write_text(exp.to_html(postprocessing=args.postprocessing), encoding="utf-8")
    result = exp.to_dict()
    json_path = html.with_suffix(".json")
    if isinstance(args.json, str):
        warn_deprecated(f"--json {args.json} (a file)", "--json (print) or the explanation.json that --out holds",
                        category=FutureWarning)
        json_path = Path(args.json)
    json_path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    if args.png:
        warn_deprecated("--png PATH", "--plot (writes explanation.png into --out)", category=FutureWarning)
        exp.plot(args.png, postprocessing=args.postprocessing)
    elif args.plot:
        exp.plot(html.with_suffix(".png"), postprocessing=args.postprocessing)
    top = max(zip(exp.importance().tolist(), (u.label for u in exp.units)))
    cli.print_result(result, f"wrote {html} ({len(exp.units)} units; most relevant: {top[1]!r}, loss rise {top[0]:.4f})",
                     as_json=args.json is True)
    return 0
