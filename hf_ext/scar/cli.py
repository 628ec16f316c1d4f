"""``hf-ext scar train|detect|generate`` (standard-library imports only at module level).

Examples:
    hf-ext scar train --out runs/scar-toy                       # toy LM + generated concept corpus, offline
    hf-ext scar train --model gpt2 --data data.csv --layer 6 --concepts toxicity --out runs/scar-gpt2
    hf-ext scar detect --adapter runs/scar-toy --text "the hate and the war ." --text "the cat and the sun ."
    hf-ext scar generate --adapter runs/scar-toy --prompt "the cat and the" --strength 40 --op replace
"""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``scar`` group (``train``, ``detect``, ``generate``) to the ``hf-ext`` parser."""
    p = subparsers.add_parser("scar", help="SCAR: sparse conditioned autoencoders (concept detection and steering)",
                              description="Train, detect with and steer with SCAR adapters on any causal LM.")
    sub = p.add_subparsers(dest="scar_command", metavar="ACTION", required=True)

    t = sub.add_parser("train", help="train a SCAR adapter (default: the offline toy experiment)",
                       description="Cache activations and train a SCAR adapter with transformers.Trainer.")
    t.add_argument("--model", default=None, help="base model Hub id / path (default: a toy LM trained in seconds)")
    t.add_argument("--data", default=None, help="CSV or JSON-lines file with 'text' and 'label' (or one column per "
                                                "concept) columns; required with --model")
    t.add_argument("--concepts", nargs="+", default=["concept"], help="concept names = label columns (default: label)")
    t.add_argument("--layer", type=int, default=-1, help="decoder layer (default: last)")
    t.add_argument("--site", default="block", choices=["mlp", "block"])
    t.add_argument("--n-latents", type=int, default=None)
    t.add_argument("--k", type=int, default=None)
    t.add_argument("--epochs", type=float, default=8)
    t.add_argument("--batch-size", type=int, default=128, help="tokens per step")
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--pos-grad-scale", type=float, default=1.0)
    t.add_argument("--max-length", type=int, default=128)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="adapter folder to write")
    t.add_argument("--device", default="cpu")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_cmd_train)

    d = sub.add_parser("detect", help="per-sequence concept probabilities of texts",
                       description="Print sigma(z_c) per text (mean over tokens) for every concept of the adapter.")
    d.add_argument("--adapter", required=True, help="adapter folder or Hub id")
    d.add_argument("--model", default=None, help="base model (default: the one named in the adapter config)")
    d.add_argument("--text", action="append", required=True, help="a text to score (repeatable)")
    d.add_argument("--tokens", action="store_true", help="also print per-token probabilities")
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=_cmd_detect)

    g = sub.add_parser("generate", help="greedy generation with and without steering",
                       description="Generate from --prompt with the adapter off and steering --concept by --strength.")
    g.add_argument("--adapter", required=True)
    g.add_argument("--model", default=None)
    g.add_argument("--prompt", action="append", required=True, help="repeatable")
    g.add_argument("--concept", default=None, help="concept name (default: the first)")
    g.add_argument("--strength", type=float, default=-100.0, help="alpha (default -100: away from the concept)")
    g.add_argument("--op", default="scale", choices=["scale", "replace"])
    g.add_argument("--output", default=None, choices=["replace", "error_preserving"])
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--device", default="cpu")
    g.set_defaults(func=_cmd_generate)
    return p


def _read_data(path: str, concepts: list[str]) -> tuple[list[str], list]:
    import csv
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--data {path!r} is not a file")
    if file.suffix in (".jsonl", ".json"):
        rows = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        with open(file, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    if not rows or "text" not in rows[0]:
        raise ValueError(f"{path} needs a 'text' column and label column(s) {['label'] if len(concepts) == 1 else concepts}")
    cols = ["label"] if len(concepts) == 1 and "label" in rows[0] else concepts
    missing = [c for c in cols if c not in rows[0]]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing}; columns are {sorted(rows[0])}")
    labels = [[float(r[c]) for c in cols] for r in rows]
    return [r["text"] for r in rows], labels


def _load_base(args, adapter_dir=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = args.model
    if name is None and adapter_dir is not None:
        from hf_ext.scar import ScarConfig

        name = ScarConfig.from_pretrained(adapter_dir).base_model_name_or_path
        if not name:
            raise ValueError(f"{adapter_dir} names no base model; pass --model")
    tok = AutoTokenizer.from_pretrained(name)
    model = AutoModelForCausalLM.from_pretrained(name).to(args.device).eval()
    return model, tok


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from hf_ext.scar import ScarAdapter, build_activation_dataset, detection_auroc, train_scar

    out = Path(args.out)
    torch.manual_seed(args.seed)
    try:
        if args.model is None:
            from hf_ext.scar.toy import concept_corpus, train_toy_lm

            if args.data:
                raise ValueError("--data needs --model (the toy LM only knows the toy vocabulary)")
            logger.warning("no --model given: training the offline toy LM and its generated concept corpus")
            model, tok = train_toy_lm(args.seed, progress=not args.no_progress)
            model.save_pretrained(out / "base_model")
            tok.save_pretrained(out / "base_model")
            texts, labels = concept_corpus(400, seed=args.seed + 2)
            held_texts, held_labels = concept_corpus(200, seed=args.seed + 3)
            base_name = str((out / "base_model").resolve())
        else:
            model, tok = _load_base(args)
            texts, labels = _read_data(args.data, args.concepts) if args.data else (None, None)
            if texts is None:
                raise ValueError("--model needs --data (a CSV/JSONL with text and label columns)")
            split = max(1, len(texts) // 10)
            held_texts, held_labels = texts[:split], labels[:split]
            texts, labels = texts[split:], labels[split:]
            base_name = args.model
        scar = ScarAdapter.for_model(model, layer=args.layer, site=args.site, concepts=args.concepts,
                                     n_latents=args.n_latents, k=args.k, seed=args.seed,
                                     pos_grad_scale=args.pos_grad_scale).attach(model)
        scar.config.base_model_name_or_path = base_name
        ds = build_activation_dataset(model, tok, texts, labels, adapter=scar, max_length=args.max_length,
                                      progress=not args.no_progress)
        train_scar(scar, ds, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                   progress=not args.no_progress, logging_steps=10_000)
        try:
            aurocs = detection_auroc(scar, held_texts, held_labels, tok)
        except ValueError as err:  # e.g. one class only in the held-out split
            logger.warning("no held-out AUROC: %s", err)
            aurocs = {}
    except ValueError as err:
        logger.error("%s", err)
        return 1
    scar.save_pretrained(out, detection_auroc=aurocs or None)
    print(f"wrote {out} ({len(ds)} training tokens; held-out AUROC {json.dumps(aurocs)})")
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from hf_ext.scar import ScarAdapter

    try:
        model, tok = _load_base(args, args.adapter)
        scar = ScarAdapter.from_pretrained(args.adapter, model)
    except (ValueError, OSError) as err:
        logger.error("%s", err)
        return 1
    det = scar.detect(args.text, tok)
    result = []
    for i, text in enumerate(args.text):
        row = {"text": text, **{c: round(float(det.sequence_probs[i, j]), 4) for j, c in enumerate(det.concepts)}}
        if args.tokens:
            ids = det.input_ids[i][det.mask[i]].tolist()
            row["tokens"] = [[tok.decode([t]), round(float(p), 4)] for t, p in zip(ids, det.token_probs[i][det.mask[i]][:, 0])]
        result.append(row)
    print(json.dumps(result, indent=1, ensure_ascii=False))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from hf_ext.scar import ScarAdapter

    try:
        model, tok = _load_base(args, args.adapter)
        scar = ScarAdapter.from_pretrained(args.adapter, model)
        concept = args.concept if args.concept is not None else scar.config.concepts[0]
        scar.config.concept_index(concept)
    except (ValueError, OSError) as err:
        logger.error("%s", err)
        return 1
    from hf_ext.core.inputs import prepare_batch, tokenize_left_padded

    enc = prepare_batch(model, *tokenize_left_padded(tok, args.prompt))
    kw = dict(max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        base = model.generate(**enc, **kw)
        with scar.steer({concept: args.strength}, op=args.op, output=args.output):
            steered = model.generate(**enc, **kw)
    width = enc["input_ids"].shape[1]
    for i, prompt in enumerate(args.prompt):
        print(f"prompt:  {prompt!r}")
        print(f"  base:    {tok.decode(base[i, width:], skip_special_tokens=True)!r}")
        print(f"  steered: {tok.decode(steered[i, width:], skip_special_tokens=True)!r} "
              f"({concept} {args.op} {args.strength:g})")
    return 0
