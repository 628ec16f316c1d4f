"""``hf-ext tfree train|generate|stats``: train a T-FREE model, generate with it, tokenizer statistics (std-lib only here).

Examples:
    hf-ext tfree stats --text "Tokenizer-free models hash words into trigram activations."
    hf-ext tfree train --out runs/tfree-tiny --steps 200          # Python's own help texts, a tiny Llama backbone
    hf-ext tfree generate --model runs/tfree-tiny --prompt "The return statement"
"""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``tfree`` group (``train``, ``generate``, ``stats``) to the ``hf-ext`` parser."""
    p = subparsers.add_parser("tfree", help="T-FREE: tokenizer-free sparse trigram embeddings",
                              description="T-FREE: words hashed to sparse trigram activations instead of subword tokens.")
    sub = p.add_subparsers(dest="tfree_command", metavar="ACTION", required=True)

    t = sub.add_parser("train", help="train a (tiny or converted) T-FREE model and save it",
                       description="Train a T-FREE model on text files (default: Python's pydoc help topics) and save "
                                   "model + tokenizer to --out (loads with AutoModelForCausalLM/AutoTokenizer).")
    t.add_argument("--out", required=True, help="folder to save the model and tokenizer to")
    t.add_argument("--text-file", action="append", default=[], help="training text (repeatable; one document per file)")
    t.add_argument("--model", default=None, help="a Hub id / folder of a causal LM to convert (convert_to_tfree); "
                                                  "default: a tiny random backbone built in code")
    t.add_argument("--family", default="llama", help="tiny backbone family: llama, qwen2, gpt_neox, gpt2, opt")
    t.add_argument("--hidden-size", type=int, default=64)
    t.add_argument("--layers", type=int, default=2)
    t.add_argument("--hash-vocab-size", type=int, default=2048, help="v (rows of embedding and head)")
    t.add_argument("--num-activations", type=int, default=4, help="m (rows per trigram)")
    t.add_argument("--num-lowercase-activations", type=int, default=0, help="k (rows shared with the lowercase)")
    t.add_argument("--hash-scheme", default="aa_md5", choices=["aa_md5", "fast"])
    t.add_argument("--pos-weight", type=float, default=10.0)
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--batch-size", type=int, default=8, help="global batch in windows (split across processes)")
    t.add_argument("--max-words", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--max-docs", type=int, default=40, help="documents of the default corpus")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--png", default=None, help="write the loss curve here")
    t.add_argument("--fsdp", action="store_true", help="shard with FSDP2 (torchrun; implied by an Accelerate FSDP2 "
                                                       "config)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_cmd_train)

    g = sub.add_parser("generate", help="generate text with a saved T-FREE model",
                       description="Load a T-FREE folder (hf-ext tfree train --out …) and continue --prompt.")
    g.add_argument("--model", required=True, help="folder or Hub id of a T-FREE model with its tokenizer")
    g.add_argument("--prompt", action="append", required=True, help="prompt (repeatable: a batch)")
    g.add_argument("--max-new-words", type=int, default=20)
    g.add_argument("--do-sample", action="store_true")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--num-beams", type=int, default=1)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu")
    g.add_argument("--json", action="store_true", help="print JSON")
    g.set_defaults(func=_cmd_generate)

    s = sub.add_parser("stats", help="word split, fertility and parameter counts of a text",
                       description="Tokenizer statistics: T-FREE words per whitespace word, distinct words, activations "
                                   "per word, and the embedding+head parameters of T-FREE vs a classic vocabulary.")
    s.add_argument("--text", default=None, help="text to analyse (default: --text-file or Python's help topics)")
    s.add_argument("--text-file", default=None)
    s.add_argument("--hash-vocab-size", type=int, default=8000)
    s.add_argument("--num-activations", type=int, default=10)
    s.add_argument("--hidden-size", type=int, default=4096, help="h for the parameter comparison")
    s.add_argument("--classic-vocab", type=int, default=64000, help="classic vocabulary size compared against")
    s.add_argument("--show-words", type=int, default=0, help="print the first n words")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_stats)
    return p


def _read_texts(files: list[str]) -> list[str]:
    from pathlib import Path

    return [Path(f).read_text(encoding="utf-8") for f in files]


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hf_ext.tfree.training import stdlib_corpus, tiny_tfree, train_tfree

    texts = _read_texts(args.text_file) if args.text_file else stdlib_corpus(args.max_docs)
    try:
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
        losses = train_tfree(model, tok, texts, steps=args.steps, batch_size=args.batch_size, max_words=args.max_words,
                             lr=args.lr, seed=args.seed, progress=not args.no_progress, fsdp=args.fsdp)
    except ValueError as err:
        logger.error("%s", err)
        return 1
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
        (out / "losses.json").write_text(json.dumps({"losses": losses, "world_size": state.num_processes,
                                                     "sharding": report}))
        if args.png:
            from hf_ext.tfree.training import plot_losses

            plot_losses(losses, args.png)
        print(f"trained {args.steps} steps on {len(texts)} documents, {state.num_processes} process(es)"
              f"{' (FSDP2)' if report['sharded'] else ''}: loss {losses[0]:.3f} -> {losses[-1]:.3f}; saved to {out} "
              f"(dictionary: {plain.dictionary_size} words)")
    state.wait_for_everyone()
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hf_ext  # noqa: F401  (registers the Auto classes)

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).to(args.device).eval()
    if getattr(model.config, "model_type", None) != "tfree":
        logger.error("%s is not a T-FREE model (model_type=%r)", args.model, model.config.model_type)
        return 1
    torch.manual_seed(args.seed)
    kwargs = {"do_sample": args.do_sample, "num_beams": args.num_beams}
    if args.do_sample:
        kwargs.update(temperature=args.temperature, top_k=args.top_k)
    texts = model.generate_text(tok, args.prompt, max_new_words=args.max_new_words, **kwargs)
    if args.json:
        print(json.dumps([{"prompt": p, "continuation": t} for p, t in zip(args.prompt, texts)], indent=1))
    else:
        for p, t in zip(args.prompt, texts):
            print(f"{p}{t}")
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
    try:
        tok = TFreeTokenizer(hash_vocab_size=args.hash_vocab_size, num_activations=args.num_activations)
    except (TypeError, ValueError) as err:
        logger.error("%s", err)
        return 1
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
    if args.json:
        print(json.dumps({**stats, "first_words": words[: args.show_words]}, indent=1, ensure_ascii=False))
    else:
        for k, v in stats.items():
            print(f"{k:34} {v:.3f}" if isinstance(v, float) else f"{k:34} {v}")
        if args.show_words:
            print("first words:", words[: args.show_words])
    return 0
