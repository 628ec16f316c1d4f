"""``hf-ext atman explain``: explain a target with AtMan and write the HTML heat-map (std-lib imports only here).

Example:
    hf-ext atman explain --prompt "the cat sat on the" --target " mat" --granularity word --out atman.html
"""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``atman`` group (``explain``) to the ``hf-ext`` parser."""
    p = subparsers.add_parser("atman", help="AtMan: explanations by attention manipulation",
                              description="AtMan: explain a causal LM's target by suppressing prompt items in attention.")
    sub = p.add_subparsers(dest="atman_command", metavar="ACTION", required=True)
    e = sub.add_parser("explain", help="explain a target and write an HTML heat-map",
                       description="Explain --target given --prompt and write an HTML heat-map (and optionally a PNG/JSON).")
    e.add_argument("--prompt", required=True)
    e.add_argument("--target", required=True)
    e.add_argument("--model", default=None, help="Hub id or local path (default: a tiny random Llama built in code)")
    e.add_argument("--granularity", default="token", help="token, word, sentence, paragraph or a delimiter string")
    e.add_argument("--mode", default="log_additive", choices=["log_additive", "multiplicative", "reference_compat"])
    e.add_argument("--factor", type=float, default=0.1, help="suppression factor in [0, 1] (default 0.1)")
    e.add_argument("--threshold", type=float, default=None, help="cosine threshold κ for co-suppression (default off)")
    e.add_argument("--max-batch-size", type=int, default=8)
    e.add_argument("--postprocessing", default="none", choices=["none", "absolute", "square"])
    e.add_argument("--out", default="atman.html", help="HTML file to write (default atman.html)")
    e.add_argument("--png", default=None, help="also write a PNG bar chart here")
    e.add_argument("--json", default=None, help="also write the explanation as JSON here")
    e.add_argument("--device", default="cpu")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=_cmd_explain)
    return p


def _cmd_explain(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hf_ext.atman import AtManExplainer

    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="sdpa").to(args.device).eval()
    else:
        from hf_ext.tiny import tiny_causal_lm, tiny_tokenizer

        model, tok = tiny_causal_lm("llama").to(args.device), tiny_tokenizer()
        logger.warning("no --model given: explaining a tiny random Llama (the heat-map is meaningless)")
    try:
        explainer = AtManExplainer(model, tok, mode=args.mode, suppression_factor=args.factor,
                                   conceptual_threshold=args.threshold, max_batch_size=args.max_batch_size,
                                   progress=not args.no_progress)
        exp = explainer.explain(args.prompt, args.target, granularity=args.granularity)
    except ValueError as err:
        logger.error("%s", err)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(exp.to_html(postprocessing=args.postprocessing), encoding="utf-8")
    if args.png:
        exp.plot(args.png, postprocessing=args.postprocessing)
    if args.json:
        Path(args.json).write_text(json.dumps(exp.to_dict(), indent=1), encoding="utf-8")
    top = max(zip(exp.importance().tolist(), (u.label for u in exp.units)))
    print(f"wrote {out} ({len(exp.units)} units; most relevant: {top[1]!r}, loss rise {top[0]:.4f})")
    return 0
