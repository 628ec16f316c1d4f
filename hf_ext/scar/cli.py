"""``hf-ext scar train|detect|generate`` (standard-library imports only at module level).

Examples:
    hf-ext scar train --out runs/scar-toy                       # toy LM + generated concept corpus, offline
    torchrun --nproc_per_node 2 -m hf_ext scar train-activations --synthetic 512 --n-inputs 16 --fsdp --out runs/scar
    hf-ext scar train --model gpt2 --data data.csv --layer 6 --concepts toxicity --out runs/scar-gpt2
    hf-ext scar detect --adapter runs/scar-toy --text "the hate and the war ." --text "the cat and the sun ."
    hf-ext scar generate --adapter runs/scar-toy --prompt "the cat and the" --strength 40 --op replace
    hf-ext scar report --adapter runs/scar-toy --texts corpus.txt --latents concept 12 --top-k 10 --out runs/report
"""

from __future__ import annotations

import argparse
import json

from hf_ext.utils import cli
from hf_ext.utils.logging import get_logger

logger = get_logger(__name__)


def add_commands(actions) -> None:
    """Train, detect with and steer with SCAR adapters on any causal LM.

    Sub-commands: ``train``, ``train-activations``, ``detect``, ``generate``, ``report``.
    """
    t = cli.add_command(actions, "train", _cmd_train, help="train a SCAR adapter (default: the offline toy experiment)",
                        description="Cache activations and train a SCAR adapter with transformers.Trainer.")
    cli.add_common_options(t, model="base causal LM, Hub id or folder (default: a toy LM trained in seconds)", device="cpu",
                           seed=0, out=cli.REQUIRED, out_help="the adapter (and the toy base model under base_model/)",
                           json=True, progress=True)
    t.add_argument("--data", type=cli.existing_path, default=None, help="CSV or JSON-lines file with 'text' and 'label' (or one column per "
                                                "concept) columns; required with --model")
    t.add_argument("--concepts", nargs="+", default=["concept"], help="concept names = label columns (default: label)")
    t.add_argument("--layer", type=int, default=-1, help="decoder layer (default: last)")
    t.add_argument("--site", default="block",
                   help="activation site with --model: block / residual_post (decoder-layer output), residual_pre "
                        "(its input), mlp, attention, or module with --site-module (default: %(default)s)")
    t.add_argument("--site-module", default=None, metavar="NAME",
                   help="with --site module: the submodule whose output is hooked, e.g. model.layers.3.self_attn.o_proj")
    t.add_argument("--n-latents", type=cli.positive_int, default=None, help="SAE width (default: the adapter's default for the model)")
    t.add_argument("--k", type=cli.positive_int, default=None, help="active latents per token, TopK (default: the adapter's)")
    t.add_argument("--epochs", type=cli.finite_float, default=8, help="passes over the cached activations (default: %(default)s)")
    t.add_argument("--batch-size", type=cli.positive_int, default=128, help="tokens per step (default: %(default)s)")
    t.add_argument("--lr", type=cli.finite_float, default=3e-3, help="learning rate (default: %(default)s)")
    t.add_argument("--pos-grad-scale", type=cli.finite_float, default=1.0,
                   help="weight of positive tokens in the concept loss (default: %(default)s)")
    t.add_argument("--max-length", type=cli.positive_int, default=128, help="tokens per text (default: %(default)s)")

    a = cli.add_command(actions, "train-activations", _cmd_train_activations,
                        help="train an adapter on cached activations with plain Accelerate (1 or N processes)",
                        description="Train on a saved activation dataset (or synthetic activations); run it under "
                                    "accelerate launch -m hf_ext scar train-activations … for several processes.")
    source = a.add_mutually_exclusive_group(required=True)
    source.add_argument("--activations", type=cli.existing_path, help="an activation store folder (build_activation_dataset(..., output_dir=...)) "
                                              "or a dataset saved with build_activation_dataset(...).save_to_disk")
    source.add_argument("--synthetic", type=cli.positive_int, help="train on this many seeded synthetic tokens (a smoke test)")
    cli.add_common_options(a, seed=0, out=cli.REQUIRED, out_help="the adapter and losses.json (written by the main process)",
                           json=True, progress=True)
    a.add_argument("--n-inputs", type=cli.positive_int, default=16, help="activation width for --synthetic (default: %(default)s)")
    a.add_argument("--concepts", nargs="+", default=["concept"], help="concept names (default: concept)")
    a.add_argument("--n-latents", type=cli.positive_int, default=None, help="SAE width (default: the config's)")
    a.add_argument("--k", type=cli.positive_int, default=None, help="active latents per token, TopK (default: the config's)")
    a.add_argument("--layer", type=int, default=0, help="decoder layer recorded in the config (default: %(default)s)")
    a.add_argument("--site", default="mlp", help="activation site recorded in the config (default: %(default)s)")
    a.add_argument("--epochs", type=cli.positive_int, default=1, help="passes over the data (default: %(default)s)")
    a.add_argument("--batch-size", type=cli.positive_int, default=2048, help="global batch, split across processes "
                                                               "(default: %(default)s)")
    a.add_argument("--lr", type=cli.finite_float, default=1e-5, help="learning rate (default: %(default)s)")
    a.add_argument("--pos-grad-scale", type=cli.finite_float, default=1.0,
                   help="weight of positive tokens in the concept loss (default: %(default)s)")
    a.add_argument("--bce-weight", type=cli.finite_float, default=1.0, help="weight of the concept loss (default: %(default)s)")
    a.add_argument("--fsdp", action="store_true", help="shard the adapter with FSDP2 (implied by an Accelerate FSDP2 "
                                                       "config)")

    d = cli.add_command(actions, "detect", _cmd_detect, help="per-sequence concept probabilities of texts",
                        description="Print sigma(z_c) per text (mean over tokens) for every concept of the adapter (JSON).")
    d.add_argument("--adapter", type=cli.model_or_path, required=True, help="adapter folder or Hub id")
    cli.add_common_options(d, model="base model (default: the one named in the adapter config)", device="cpu", json=True)
    d.add_argument("--text", action="append", required=True, help="a text to score (repeatable)")
    d.add_argument("--tokens", action="store_true", help="also print per-token probabilities")

    g = cli.add_command(actions, "generate", _cmd_generate, help="greedy generation with and without steering",
                        description="Generate from --prompt with the adapter off and steering --concept by --strength.")
    g.add_argument("--adapter", type=cli.model_or_path, required=True, help="adapter folder or Hub id")
    cli.add_common_options(g, model="base model (default: the one named in the adapter config)", device="cpu", json=True)
    g.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable: a batch)")
    g.add_argument("--concept", default=None, help="concept name (default: the first)")
    g.add_argument("--strength", type=cli.finite_float, default=-100.0, help="alpha (default -100: away from the concept)")
    g.add_argument("--op", default="scale", choices=["scale", "replace"],
                   help="scale the concept latent by alpha or replace it with alpha (default: %(default)s)")
    g.add_argument("--output", default=None, choices=["replace", "error_preserving"],
                   help="how the steered reconstruction enters the model (default: the adapter config's)")
    g.add_argument("--max-new-tokens", type=cli.positive_int, default=32, help="tokens to generate (default: %(default)s)")


    r = cli.add_command(actions, "report", _cmd_report, help="top-activating contexts per latent, as HTML and JSON",
                        description="Read --text/--texts through the base model and write latent_report.html and "
                                    "latent_report.json into --out: per latent, the tokens where it fires most, "
                                    "with their context.")
    r.add_argument("--adapter", required=True, help="adapter folder or Hub id")
    cli.add_common_options(r, model="base model (default: the one named in the adapter config)", device="cpu",
                           out=cli.REQUIRED, out_help="latent_report.html, latent_report.json", json=True, progress=True)
    r.add_argument("--text", action="append", default=[], help="a text to read (repeatable)")
    r.add_argument("--texts", default=None, metavar="FILE", help="a text file, one text per line")
    r.add_argument("--latents", nargs="+", default=None,
                   help="latent indices or concept names, or 'all' (default: the conditioned latents)")
    r.add_argument("--top-k", type=cli.non_negative_int, default=10, help="contexts per latent (default: %(default)s)")
    r.add_argument("--window", type=cli.non_negative_int, default=8, help="context tokens on each side (default: %(default)s)")
    r.add_argument("--activation", default="latents", choices=["latents", "pre_activations"],
                   help="h after TopK or z before it (default: %(default)s)")


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hf_ext.scar import ScarAdapter

    texts = list(args.text)
    if args.texts is not None:
        file = Path(args.texts)
        if not file.is_file():
            logger.error("--texts %r is not a file; give a text file with one text per line", args.texts)
            return 2
        texts += [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        logger.error("give texts to read with --text (repeatable) or --texts FILE")
        return 2
    latents = args.latents
    if latents is not None and latents != ["all"]:
        latents = [int(x) if x.lstrip("-").isdigit() else x for x in latents]
    elif latents == ["all"]:
        latents = "all"
    model, tok = _load_base(args, args.adapter)
    scar = ScarAdapter.from_pretrained(args.adapter, model)
    report = scar.latent_report(texts, tok, latents=latents, top_k=args.top_k, window=args.window,
                                activation=args.activation, progress=not args.no_progress)
    html = report.save(cli.out_file(args.out, "latent_report.html"))
    report.save(html.with_suffix(".json"))
    fired = sum(1 for c in report.contexts if c)
    cli.print_result(report.to_dict(), f"wrote {html} ({len(report.latents)} latents, {fired} active on these texts)",
                     as_json=args.json)
    return 0


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

    out = Path(cli.check_out_dir(args.out))  # nothing is written before the arguments are checked
    if args.data and not Path(args.data).is_file():
        raise FileNotFoundError(f"--data {args.data!r}: no such file (expected a CSV or JSON-lines file)")
    torch.manual_seed(args.seed)
    site_kw = {"site_module": args.site_module} if args.site_module is not None else {}
    if args.model is None:
        from hf_ext.scar.toy import concept_corpus, train_toy_lm

        if args.data:
            raise ValueError("--data needs --model (the toy LM only knows the toy vocabulary)")
        from hf_ext.tiny import tiny_causal_lm

        # the adapter options are checked on an untrained model of the toy's shape, before minutes of training
        shape = {"hidden_size": 32, "num_layers": 2}
        ScarAdapter.for_model(tiny_causal_lm("llama", **shape), layer=args.layer, site=args.site,
                              concepts=args.concepts, **site_kw, n_latents=args.n_latents, k=args.k, seed=args.seed,
                              pos_grad_scale=args.pos_grad_scale)
        logger.warning("no --model given: training the offline toy LM and its generated concept corpus")
        model, tok = train_toy_lm(args.seed, progress=not args.no_progress, **shape)
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
    scar = ScarAdapter.for_model(model, layer=args.layer, site=args.site, concepts=args.concepts, **site_kw,
                                 n_latents=args.n_latents, k=args.k, seed=args.seed,
                                 pos_grad_scale=args.pos_grad_scale).attach(model)
    scar.config.base_model_name_or_path = base_name
    if args.model is None:  # only now that --layer/--k/... are known to fit the model
        model.save_pretrained(out / "base_model")
        tok.save_pretrained(out / "base_model")
    ds = build_activation_dataset(model, tok, texts, labels, adapter=scar, max_length=args.max_length,
                                  progress=not args.no_progress)
    train_scar(scar, ds, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
               progress=not args.no_progress, logging_steps=10_000)
    try:
        aurocs = detection_auroc(scar, held_texts, held_labels, tok)
    except ValueError as err:  # e.g. one class only in the held-out split
        logger.warning("no held-out AUROC: %s", err)
        aurocs = {}
    scar.save_pretrained(out, detection_auroc=aurocs or None)
    cli.print_result({"out": str(out), "training_tokens": len(ds), "detection_auroc": aurocs},
                     f"wrote {out} ({len(ds)} training tokens; held-out AUROC {json.dumps(aurocs)})", as_json=args.json)
    return 0


def _cmd_train_activations(args: argparse.Namespace) -> int:
    import math
    import os
    from pathlib import Path

    import torch

    from hf_ext.core.sharding import sharding_report, unsharded_copy
    from hf_ext.scar import ScarAdapter, ScarConfig
    from hf_ext.scar.training import accelerate_train, synthetic_activations

    torch.use_deterministic_algorithms(True, warn_only=True)
    if args.activations:
        from hf_ext.scar.activation_store import ActivationStore, is_activation_store

        if is_activation_store(args.activations):
            ds = ActivationStore(args.activations)
            n_inputs = ds.n_inputs
        else:
            from datasets import load_from_disk

            ds = load_from_disk(args.activations).with_format("torch")
            n_inputs = len(ds[0]["activations"])
    else:
        n_inputs = args.n_inputs
        ds = synthetic_activations(args.synthetic, n_inputs, len(args.concepts), seed=args.seed)
    cfg = ScarConfig(n_inputs=n_inputs, n_latents=args.n_latents, k=args.k, layer=args.layer, site=args.site,
                     concepts=args.concepts, pos_grad_scale=args.pos_grad_scale, bce_weight=args.bce_weight)
    adapter = ScarAdapter(cfg, seed=args.seed)
    losses = accelerate_train(adapter, ds, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              progress=not args.no_progress, fsdp=args.fsdp)
    report = sharding_report(adapter)
    plain = unsharded_copy(adapter)  # a collective when sharded: every process takes part
    if int(os.environ.get("RANK", "0")) == 0:
        out = Path(args.out)
        plain.save_pretrained(out, card=False)
        result = {"losses": losses, "sharding": report, "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
        (out / "losses.json").write_text(json.dumps(result))
        summary = f"trained {len(losses)} steps, final loss {losses[-1]:.4f}" if losses else "no steps"
        cli.print_result(result, f"{summary}; wrote {out}", as_json=args.json)
    return 0 if all(math.isfinite(v) for v in losses) else 1


def _cmd_detect(args: argparse.Namespace) -> int:
    from hf_ext.scar import ScarAdapter

    model, tok = _load_base(args, args.adapter)
    scar = ScarAdapter.from_pretrained(args.adapter, model)
    det = scar.detect(args.text, tok)
    result = []
    for i, text in enumerate(args.text):
        row = {"text": text, **{c: round(float(det.sequence_probs[i, j]), 4) for j, c in enumerate(det.concepts)}}
        if args.tokens:
            ids = det.input_ids[i][det.mask[i]].tolist()
            row["tokens"] = [[tok.decode([t]), round(float(p), 4)] for t, p in zip(ids, det.token_probs[i][det.mask[i]][:, 0])]
        result.append(row)
    cli.print_result(result, "", as_json=True)  # structured either way: one row per text
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from hf_ext.scar import ScarAdapter

    model, tok = _load_base(args, args.adapter)
    scar = ScarAdapter.from_pretrained(args.adapter, model)
    concept = args.concept if args.concept is not None else scar.config.concepts[0]
    scar.config.concept_index(concept)
    from hf_ext.core.inputs import prepare_batch, tokenize_left_padded

    enc = prepare_batch(model, *tokenize_left_padded(tok, args.prompt))
    kw = dict(max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        base = model.generate(**enc, **kw)
        with scar.steer({concept: args.strength}, op=args.op, output=args.output):
            steered = model.generate(**enc, **kw)
    width = enc["input_ids"].shape[1]
    rows = [{"prompt": prompt, "base": tok.decode(base[i, width:], skip_special_tokens=True),
             "steered": tok.decode(steered[i, width:], skip_special_tokens=True)} for i, prompt in enumerate(args.prompt)]
    text = "\n".join(f"prompt:  {r['prompt']!r}\n  base:    {r['base']!r}\n  steered: {r['steered']!r} "
                     f"({concept} {args.op} {args.strength:g})" for r in rows)
    cli.print_result({"concept": concept, "op": args.op, "strength": args.strength, "generations": rows}, text,
                     as_json=args.json)
    return 0
