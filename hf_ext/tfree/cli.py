"""``hf-ext tfree train|generate|stats``: train a T-FREE model, generate with it, tokenizer statistics (std-lib only here).

Examples:
    hf-ext tfree stats --text "Tokenizer-free models hash words into trigram activations."
    hf-ext tfree train --out runs/tfree-tiny --steps 200 --plot   # Python's own help texts, a tiny Llama backbone
    hf-ext tfree generate --model runs/tfree-tiny --prompt "The return statement"
"""

from __future__ import annotations

import argparse
import json

from hf_ext.utils import cli
from hf_ext.utils.deprecation import warn_deprecated
from hf_ext.utils.logging import get_logger

logger = get_logger(__name__)


def add_commands(actions) -> None:
    """T-FREE: words hashed to sparse trigram activations instead of subword tokens.

    Sub-commands: ``train``, ``generate``, ``stats``.
    """
    t = cli.add_command(actions, "train", _cmd_train, help="train a (tiny or converted) T-FREE model and save it",
                        description="Train a T-FREE model on text files (default: Python's pydoc help topics) and save "
                                    "model + tokenizer to --out (loads with AutoModelForCausalLM/AutoTokenizer).")
    cli.add_common_options(t, model="a Hub id / folder of a causal LM to convert (convert_to_tfree); default: a tiny "
                                    "random backbone built in code", device="auto", seed=0, out=cli.REQUIRED,
                           out_help="the model, its tokenizer, train_losses.json (and loss.png with --plot)", json=True,
                           progress=True)
    t.add_argument("--text-file", type=cli.existing_path, action="append", default=[], help="training text (repeatable; one document per file)")
    t.add_argument("--family", default="llama", help="tiny backbone family: llama, qwen2, gpt_neox, gpt2, opt")
    t.add_argument("--hidden-size", type=cli.positive_int, default=64, help="hidden size of the tiny backbone (default: %(default)s)")
    t.add_argument("--layers", type=cli.positive_int, default=2, help="decoder layers of the tiny backbone (default: %(default)s)")
    t.add_argument("--hash-vocab-size", type=cli.positive_int, default=2048, help="v (rows of embedding and head)")
    t.add_argument("--num-activations", type=cli.positive_int, default=4, help="m (rows per trigram)")
    t.add_argument("--num-lowercase-activations", type=cli.non_negative_int, default=0, help="k (rows shared with the lowercase)")
    t.add_argument("--hash-scheme", default="aa_md5", choices=["aa_md5", "fast"],
                   help="trigram hash: the reference's AA MD5 scheme or a faster one (default: %(default)s)")
    t.add_argument("--pos-weight", type=cli.finite_float, default=10.0,
                   help="weight of the active rows in the sparse BCE loss (default: %(default)s)")
    t.add_argument("--steps", type=cli.positive_int, default=200, help="optimiser steps (default: %(default)s)")
    t.add_argument("--batch-size", type=cli.positive_int, default=8,
                   help="global batch in windows, split across processes (default: %(default)s)")
    t.add_argument("--max-words", type=cli.positive_int, default=32, help="words per training sequence (default: %(default)s)")
    t.add_argument("--lr", type=cli.finite_float, default=3e-3, help="learning rate (default: %(default)s)")
    t.add_argument("--max-docs", type=cli.positive_int, default=40, help="documents of the default corpus")
    t.add_argument("--plot", action="store_true", help="also write loss.png, the loss curve, into --out")
    t.add_argument("--png", default=None, metavar="PATH",
                   help="deprecated (removed in hf-ext 0.3): write the loss curve to PATH; use --plot")
    t.add_argument("--fsdp", action="store_true", help="shard with FSDP2 (torchrun; implied by an Accelerate FSDP2 "
                                                       "config)")

    g = cli.add_command(actions, "generate", _cmd_generate, help="generate text with a saved T-FREE model",
                        description="Load a T-FREE folder (hf-ext tfree train --out …) and continue --prompt.")
    cli.add_common_options(g, model="folder or Hub id of a T-FREE model with its tokenizer", model_required=True,
                           device="cpu", seed=0, json=True)
    g.add_argument("--prompt", action="append", required=True, help="prompt (repeatable: a batch)")
    g.add_argument("--max-new-words", type=cli.positive_int, default=20, help="words to generate (default: %(default)s)")
    g.add_argument("--do-sample", action="store_true", help="sample instead of greedy/beam decoding")
    g.add_argument("--temperature", type=cli.finite_float, default=1.0, help="sampling temperature (default: %(default)s)")
    g.add_argument("--top-k", type=cli.non_negative_int, default=None, help="sample from the k most likely words (default: all)")
    g.add_argument("--num-beams", type=cli.positive_int, default=1, help="beam search width (default: %(default)s)")

    s = cli.add_command(actions, "stats", _cmd_stats, help="word split, fertility and parameter counts of a text",
                        description="Tokenizer statistics: T-FREE words per whitespace word, distinct words, activations "
                                    "per word, and the embedding+head parameters of T-FREE vs a classic vocabulary.")
    cli.add_common_options(s, json=True)
    s.add_argument("--text", default=None, help="text to analyse (default: --text-file or Python's help topics)")
    s.add_argument("--text-file", type=cli.existing_path, default=None, help="a file to analyse")
    s.add_argument("--hash-vocab-size", type=cli.positive_int, default=8000, help="v (default: %(default)s)")
    s.add_argument("--num-activations", type=cli.positive_int, default=10, help="m (default: %(default)s)")
    s.add_argument("--hidden-size", type=cli.positive_int, default=4096, help="h for the parameter comparison")
    s.add_argument("--classic-vocab", type=cli.positive_int, default=64000, help="classic vocabulary size compared against")
    s.add_argument("--show-words", type=cli.non_negative_int, default=0, help="print the first n words")


def _read_texts(files: list[str]) -> list[str]:
    from pathlib import Path

    return [Path(f).read_text(encoding="utf-8") for f in files]


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hf_ext.tfree.training import stdlib_corpus, tiny_tfree, train_tfree

    texts = _read_texts(args.text_file) if args.text_file else stdlib_corpus(args.max_docs)
    if args.model:
        from transformers import AutoModelForCausalLM

        from hf_ext.tfree import TFreeTokenizer, convert_to_tfree

        tok = TFreeTokenizer(hash_vocab_size=args.hash_vocab_size, num_activations=args.num_activations,
                             num_lowercase_activations=args.num_lowercase_activations, hash_scheme=args.hash_scheme)
        model = convert_to_tfree(AutoModelForCausalLM.from_pretrained(args.model), tokenizer=tok,
                                 pos_weight=args.pos_weight)
    else:
        model, tok = tiny_tfree(args.family, hash_vocab_size=args.hash_vocab_size,
                                num_activations=args.num_activations,
                                num_lowercase_activations=args.num_lowercase_activations,
                                hash_scheme=args.hash_scheme, hidden_size=args.hidden_size,
                                num_layers=args.layers, seed=args.seed, pos_weight=args.pos_weight)
    for text in texts:  # the decode dictionary: every word of the training text
        tok.add_words(w for w in tok.tokenize(text))
    model.set_decode_dictionary(tok)
    accelerator = None
    if args.device != "auto" and cli.resolve_device(args.device) == "cpu":  # CPU forced (default: CUDA if any)
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=True)
    losses = train_tfree(model, tok, texts, steps=args.steps, batch_size=args.batch_size, max_words=args.max_words,
                         lr=args.lr, seed=args.seed, progress=not args.no_progress, accelerator=accelerator,
                         fsdp=args.fsdp)
    import torch
    from accelerate import PartialState

    from hf_ext.core.sharding import sharding_report, unsharded_copy

    state, report = PartialState(cpu=not torch.cuda.is_available()), sharding_report(model)
    plain = unsharded_copy(model)  # a collective when sharded: every process takes part
    if state.is_main_process:
        out = Path(args.out)
        plain.save_pretrained(out)
        tok.save_pretrained(out)
        (out / "train_losses.json").write_text(json.dumps(losses))
        result = {"losses": losses, "world_size": state.num_processes, "sharding": report}
        (out / "losses.json").write_text(json.dumps(result))
        if args.png or args.plot:
            from hf_ext.tfree.training import plot_losses

            if args.png:
                warn_deprecated("--png PATH", "--plot (writes loss.png into --out)", category=FutureWarning)
            plot_losses(losses, args.png or out / "loss.png")
        cli.print_result({**result, "out": str(out), "documents": len(texts), "dictionary_size": plain.dictionary_size},
                         f"trained {args.steps} steps on {len(texts)} documents, {state.num_processes} process(es)"
                         f"{' (FSDP2)' if report['sharded'] else ''}: loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
                         f"saved to {out} (dictionary: {plain.dictionary_size} words)", as_json=args.json)
    state.wait_for_everyone()
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hf_ext  # noqa: F401  (registers the Auto classes)

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).to(args.device).eval()
    if getattr(model.config, "model_type", None) != "tfree":
        raise ValueError(f"--model {args.model!r} is not a T-FREE model (model_type="
                         f"{model.config.model_type!r}); pass a folder saved by `hf-ext tfree train`")
    torch.manual_seed(args.seed)
    kwargs = {"do_sample": args.do_sample, "num_beams": args.num_beams}
    if args.do_sample:
        kwargs.update(temperature=args.temperature, top_k=args.top_k)
    texts = model.generate_text(tok, args.prompt, max_new_words=args.max_new_words, **kwargs)
    cli.print_result([{"prompt": p, "continuation": t} for p, t in zip(args.prompt, texts)],
                     "\n".join(f"{p}{t}" for p, t in zip(args.prompt, texts)), as_json=args.json)
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from hf_ext.tfree import TFreeTokenizer
    from hf_ext.tfree.training import stdlib_corpus

    if args.text is not None:
        texts = [args.text]
    elif args.text_file:
        texts = _read_texts([args.text_file])
    else:
        texts = stdlib_corpus()
    tok = TFreeTokenizer(hash_vocab_size=args.hash_vocab_size, num_activations=args.num_activations)
    words = [w for ws in tok.fast_tokenize(texts) for w in ws]
    ws_words = sum(len(t.split()) for t in texts)
    enc = tok.encode_activations(texts, format="flat")
    acts = [len(set(w)) for doc in enc["activation_ids"] for w in doc]
    h = args.hidden_size
    stats = {
        "documents": len(texts), "characters": sum(map(len, texts)), "whitespace_words": ws_words,
        "tfree_words": len(words), "words_per_whitespace_word": len(words) / max(ws_words, 1),
        "distinct_words": len(set(words)), "mean_unique_activations_per_word": sum(acts) / max(len(acts), 1),
        "embedding_head_params_tfree": 2 * args.hash_vocab_size * h,
        "embedding_head_params_classic": 2 * args.classic_vocab * h,
        "params_ratio": args.hash_vocab_size / args.classic_vocab,
    }
    lines = [f"{k:34} {v:.3f}" if isinstance(v, float) else f"{k:34} {v}" for k, v in stats.items()]
    if args.show_words:
        lines.append(f"first words: {words[: args.show_words]}")
    cli.print_result({**stats, "first_words": words[: args.show_words]}, "\n".join(lines), as_json=args.json)
    return 0
