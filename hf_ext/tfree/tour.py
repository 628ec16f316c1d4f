"""Tour step ``tfree``: a tiny T-FREE model trained briefly on Python's own help texts, then generating.

Builds a T-FREE tokenizer (byte trigrams hashed to m of v rows, aa_md5 scheme) and a tiny Llama backbone with a
sparse EmbeddingBag input and a multi-label head, trains it for a few seconds on ``pydoc_data.topics`` (shipped with
Python), writes the loss curve, and continues a prompt from the training text with ``generate()`` (greedy, dictionary
decoding). ``--model`` converts that causal LM with ``convert_to_tfree`` instead of building a tiny one.
"""

from __future__ import annotations

from hf_ext.tour import StepResult, TourContext, tour_step


@tour_step("tfree", component="tfree",
           description="T-FREE: trigram-hash tokenizer + tiny model trained on Python's help texts, then generate()")
def tfree_step(ctx: TourContext) -> StepResult:
    """Train a tiny T-FREE model on stdlib help topics and generate from a prompt."""
    import time

    import torch

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    if ctx.device == "cpu":
        torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and robust to busy machines
    try:
        return _run(ctx, t0)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: TourContext, t0: float) -> StepResult:
    import time

    import torch

    from hf_ext.tfree import TFreeTokenizer, convert_to_tfree
    from hf_ext.tfree.training import plot_losses, stdlib_corpus, tiny_tfree, train_tfree
    from hf_ext.tfree.wordsplit import words_to_text

    docs = stdlib_corpus(40 if ctx.full else 2, max_chars=None if ctx.full else 300)
    v, m = 2048, 4
    if ctx.model:
        from transformers import AutoModelForCausalLM

        tok = TFreeTokenizer(hash_vocab_size=v, num_activations=m)
        model = convert_to_tfree(AutoModelForCausalLM.from_pretrained(ctx.model), tokenizer=tok, pos_weight=10.0)
        label = f"{ctx.model} converted to T-FREE"
    else:
        model, tok = tiny_tfree("llama", hash_vocab_size=v, num_activations=m, hidden_size=64, num_layers=2,
                                seed=ctx.seed, pos_weight=10.0)
        label = "tiny Llama backbone (h=64, 2 layers)"
    model = model.to(ctx.device)
    for doc in docs:
        tok.add_words(tok.tokenize(doc))
    model.set_decode_dictionary(tok)
    torch.manual_seed(ctx.seed)
    steps = 600 if ctx.full else 150
    losses = train_tfree(model, tok, docs, steps=steps, batch_size=8, max_words=16, lr=5e-3, seed=ctx.seed,
                         progress=ctx.progress)
    words = tok.tokenize(docs[0])
    start = next((i + 1 for i, w in enumerate(words) if w.startswith("<|") and "\n" in w and i > 8), 0)
    prompt = words_to_text(words[start: start + 6])  # a prompt from the training text, after its title
    truth = words_to_text(words[start: start + 14])[len(prompt):]
    cont = model.generate_text(tok, [prompt], max_new_words=8, do_sample=False)[0]
    artifacts = []
    try:
        artifacts.append(plot_losses(losses, ctx.artifact("tfree_loss.png"), title=f"T-FREE loss, {label}"))
    except ImportError:
        pass
    ws_words = sum(len(d.split()) for d in docs)
    fertility = sum(len(ws) for ws in tok.fast_tokenize(docs)) / max(ws_words, 1)
    h = model.config.hidden_size
    return StepResult(
        metrics={"loss_start": round(losses[0], 3), "loss_end": round(losses[-1], 3), "continuation": cont,
                 "reference": truth, "words_per_ws_word": round(fertility, 3), "dictionary_words": model.dictionary_size,
                 "embed_head_params": 2 * v * h, "vs_64k_vocab": round(v / 64000, 4),
                 "seconds": round(time.perf_counter() - t0, 1)},
        summary=(f"{label}, v={v}, m={m}: trained {steps} steps on {len(docs)} Python help topics, loss "
                 f"{losses[0]:.2f} → {losses[-1]:.2f}. Greedy continuation of {prompt!r}: {cont!r} (training text: "
                 f"{truth!r}). T-FREE words per whitespace word: {fertility:.2f}; embedding+head parameters "
                 f"{2 * v * h:,} = {v / 64000:.3f}× a 64k vocabulary's."),
        artifacts=artifacts,
    )
