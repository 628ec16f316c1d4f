"""T-FREE tokenizer speed: TFreeTokenizer.encode_activations vs a 64k ByteLevel BPE (tokenizers, encode_batch), words/s.

Both arms encode the same documents — Python's own help topics (``pydoc_data.topics``) plus the docstrings of a fixed
list of standard-library modules — in one batch call: the BPE (trained with ``tokenizers`` on that very text, vocab
target 64k) with ``encode_batch`` (Rust, all cores), T-FREE to activation ids in CSR form (regex split in C,
whitespace rules in numpy, one pattern per distinct word; single thread). Throughput is whitespace-separated input
words per second; the target is T-FREE words/s ≥ 1.0× BPE's in both rows of the same run:

* **cold**: every repeat encodes the corpus with a *new* tokenizer of each kind (T-FREE: empty word and trigram
  caches, so every distinct word is split into trigrams and every distinct trigram md5-hashed; BPE: empty word
  cache): the first pass a user makes over a corpus neither has seen. Timed before anything else is encoded.
* **warm**: the same two tokenizers encode the corpus again and again (caches filled).

Both arms are checked to be reversible on the text (after the timings).
"""

from __future__ import annotations

import sys
import time

from _timing import append_json_row, common_argparser, format_ab, plot_ab, time_ab

NAME = "tfree_tokenizer_speed"


CORPORA = ("python-docs", "package-metadata", "random-words")


def corpus(quick: bool, name: str = "python-docs") -> list[str]:
    """The documents of one corpus, in a fixed order.

    * ``python-docs`` (default): pydoc help topics + stdlib docstrings (module, classes, functions, methods);
    * ``package-metadata``: the ``METADATA`` files (package descriptions: prose, code, markup) of the installed
      distributions, in name order, up to 1.2 M characters;
    * ``random-words``: 600 seeded "sentences" of 60-160 words drawn uniformly from wordfreq's 20,000 most frequent
      German, French, Russian and Spanish words: far more distinct words per token than natural text (a
      first pass where most words are new).
    """
    from pydoc_data.topics import topics

    if quick:  # smoke test: no module imports
        return [topics[k][:1500] for k in sorted(topics)[:30]]
    if name == "package-metadata":
        from importlib import metadata

        docs, total = [], 0
        for dist in sorted(metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
            text = dist.read_text("METADATA") or ""
            docs.append(text)
            total += len(text)
            if total > 1_200_000:
                break
        return docs
    if name == "random-words":
        import random

        from wordfreq import top_n_list

        rng, docs = random.Random(0), []
        for lang in ("de", "fr", "ru", "es"):
            words = top_n_list(lang, 20000)
            for _ in range(150):
                doc = [rng.choice(words) for _ in range(rng.randint(60, 160))]
                docs.append(" ".join(w.capitalize() if rng.random() < 0.1 else w for w in doc))
        return docs
    from hf_ext.reproduce.tfree import python_docs  # the text of hf-ext reproduce tfree, too

    return python_docs()


def main(argv=None) -> int:
    parser = common_argparser(__doc__.splitlines()[0])
    parser.add_argument("--bpe-vocab", type=int, default=64000)
    parser.add_argument("--hash-vocab-size", type=int, default=8000)
    parser.add_argument("--corpus", choices=CORPORA, default="python-docs",
                        help="the text both arms encode (default: python-docs; the others re-check other text)")
    args = parser.parse_args(argv)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from hf_ext.tfree import TFreeTokenizer

    docs = corpus(args.quick, args.corpus)
    n_chars, n_words = sum(map(len, docs)), sum(len(d.split()) for d in docs)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    t0 = time.perf_counter()
    bpe.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=args.bpe_vocab, show_progress=False,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    train_s = time.perf_counter() - t0
    repeats = args.repeats or (2 if args.quick else 7)

    def new_tfree():
        return TFreeTokenizer(hash_vocab_size=args.hash_vocab_size, num_activations=10)

    # cold: fresh tokenizers built beforehand (construction is not timed), one per call, both arms
    bpe_json = bpe.to_str()
    fresh_bpe = iter([Tokenizer.from_str(bpe_json) for _ in range(repeats + 1)])
    fresh_tfree = iter([new_tfree() for _ in range(repeats + 1)])
    cold = time_ab(lambda: next(fresh_bpe).encode_batch(docs),
                   lambda: next(fresh_tfree).encode_activations(docs, format="csr"),
                   repeats=repeats, warmup=0, label_a="bpe_encode_batch", label_b="tfree_encode")
    tok = new_tfree()
    warm = time_ab(lambda: bpe.encode_batch(docs), lambda: tok.encode_activations(docs, format="csr"),
                   repeats=repeats, warmup=1, label_a="bpe_encode_batch", label_b="tfree_encode")
    # correctness: both arms are reversible on (a sample of) this text
    sample = docs[:: max(1, len(docs) // 50)]
    bad_bpe = sum(bpe.decode(e.ids) != d for e, d in zip(bpe.encode_batch(sample), sample))
    tok.add_words(w for d in sample for w in tok.tokenize(d))  # the decode check needs the words in the dictionary
    bad_tfree = sum(tok.decode(tok(d).input_ids) != d for d in sample)
    if bad_tfree:
        print(f"T-FREE round trip failed on {bad_tfree}/{len(sample)} documents", file=sys.stderr)
        return 1
    enc = tok.encode_activations(docs, format="csr")
    n_tfree_words = int(enc["text_offsets"][-1])
    n_bpe_tokens = sum(len(e.ids) for e in bpe.encode_batch(docs))
    ratios = {}
    print(f"corpus: {len(docs)} documents, {n_chars:,} characters, {n_words:,} whitespace words "
          f"({len(tok._cache):,} distinct T-FREE words); BPE trained in {train_s:.1f} s to {bpe.get_vocab_size():,} "
          f"entries (target {args.bpe_vocab:,}); BPE round-trip mismatches {bad_bpe}/{len(sample)}")
    for case, res in (("cold", cold), ("warm", warm)):
        wps_bpe, wps_tfree = n_words / res["median_a_s"], n_words / res["median_b_s"]
        ratios[case] = wps_tfree / wps_bpe
        print(format_ab(res, case=f"{args.corpus}, {case}"))
        print(f"  {case}: words/s BPE {wps_bpe:,.0f}, T-FREE {wps_tfree:,.0f}: {ratios[case]:.2f}× BPE (target ≥ 1.0)")
    print(f"units per whitespace word on this text: BPE {n_bpe_tokens / n_words:.3f}, T-FREE {n_tfree_words / n_words:.3f}")
    row = {"benchmark": NAME, "case": args.corpus, "quick": args.quick, "device": "cpu", "documents": len(docs),
           "characters": n_chars, "whitespace_words": n_words, "bpe_vocab": bpe.get_vocab_size(),
           "bpe_train_s": train_s, "baseline": "tokenizers ByteLevel BPE encode_batch",
           "project": "TFreeTokenizer.encode_activations(format='csr')", "tfree_distinct_words": len(tok._cache),
           "bpe_tokens_per_ws_word": n_bpe_tokens / n_words, "tfree_words_per_ws_word": n_tfree_words / n_words}
    for case, res in (("cold", cold), ("warm", warm)):
        row.update({f"{case}_words_per_s_bpe": n_words / res["median_a_s"],
                    f"{case}_words_per_s_tfree": n_words / res["median_b_s"],
                    f"{case}_speed_ratio_tfree_over_bpe": ratios[case], f"{case}_target_met": ratios[case] >= 1.0,
                    **{f"{case}_{k}": v for k, v in res.items() if not k.startswith("times_")}})
    append_json_row(NAME, row, out=args.out, device="cpu")
    suffix = "" if args.corpus == "python-docs" else f"_{args.corpus}"
    plot_ab(f"{args.out}/{NAME}{suffix}.png", {"cold (new tokenizers)": cold, "warm (caches filled)": warm},
            title=f"T-FREE vs 64k BPE, {args.corpus}, {n_words:,} words (CPU)", unit="s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
