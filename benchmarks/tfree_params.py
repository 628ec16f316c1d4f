"""T-FREE parameters and fertility: embedding+head parameters vs a 64k vocabulary, tokens per word vs a 64k BPE.

1. **Parameters.** The same tiny Llama backbone (hidden 64; the ratio does not depend on h) built twice: as
   ``TFreeForCausalLM`` with ``v`` ∈ {8k, 16k, 32k} hash rows (EmbeddingBag + Linear head) and as a
   ``LlamaForCausalLM`` with a 64,000-entry vocabulary (untied embedding + LM head). The parameters of both modules are
   *counted* on the built models. Target: ≤ 0.15× at v = 8k.
2. **Fertility** (units per whitespace-separated word; lower is better) on en/de/ru/vi/ar text. The texts are
   **synthetic**: seeded Zipf samples of the ``wordfreq`` top-20k word lists of each language (wordfreq's data:
   Wikipedia, subtitles, news, books, web, Twitter, Reddit), written as sentences (capitalised first word, commas,
   full stops). Baselines: a 64k ByteLevel BPE trained with ``tokenizers`` on English text (Python's stdlib docs, as
   in ``tfree_tokenizer_speed.py``; like the paper's English-trained tokenizers) and one trained on the union of the
   five synthetic texts. **Not comparable to the paper's Table 1**: different texts and different tokenizer
   training data; T-FREE needs no training at all.
"""

from __future__ import annotations

import random
import sys

from _timing import append_json_row, common_argparser

NAME = "tfree_params"
LANGS = ("en", "de", "ru", "vi", "ar")


def synthetic_text(lang: str, n_words: int, seed: int = 0) -> str:
    """Seeded Zipf sample of wordfreq's top-20k ``lang`` words, formatted as sentences."""
    import wordfreq

    freqs = wordfreq.get_frequency_dict(lang)
    words = sorted(freqs, key=freqs.__getitem__, reverse=True)[:20000]
    weights = [freqs[w] for w in words]
    rng = random.Random(f"{lang}-{seed}")
    sample = rng.choices(words, weights=weights, k=n_words)
    out, i = [], 0
    while i < len(sample):
        n = rng.randint(6, 18)
        sent = sample[i: i + n]
        i += n
        sent[0] = sent[0][:1].upper() + sent[0][1:]
        if len(sent) > 8:
            sent[len(sent) // 2] += ","
        out.append(" ".join(sent) + ".")
    return " ".join(out)


def count_params() -> list[dict]:
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_ext.tfree import TFreeConfig, TFreeForCausalLM

    def backbone(vocab):
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=vocab, tie_word_embeddings=False)

    classic = LlamaForCausalLM(backbone(64000))
    classic_params = classic.model.embed_tokens.weight.numel() + classic.lm_head.weight.numel()
    rows = []
    for v in (8000, 16000, 32000):
        m = TFreeForCausalLM(TFreeConfig(text_config=backbone(16), hash_vocab_size=v, num_activations=10))
        tfree_params = m.embed.weight.numel() + m.lm_head.weight.numel()
        rows.append({"hash_vocab_size": v, "hidden_size": 64, "tfree_embed_head_params": tfree_params,
                     "bpe64k_embed_head_params": classic_params, "ratio": tfree_params / classic_params,
                     "target": "<= 0.15 at v=8k" if v == 8000 else "report",
                     "target_met": (tfree_params / classic_params <= 0.15) if v == 8000 else None,
                     "ratio_at_h4096": (2 * v * 4096) / (2 * 64000 * 4096)})
    return rows


def train_bpe(texts, vocab):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return bpe


def main(argv=None) -> int:
    args = common_argparser(__doc__.splitlines()[0]).parse_args(argv)
    from tfree_tokenizer_speed import corpus

    from hf_ext.tfree import TFreeTokenizer

    for row in count_params():
        print(f"v={row['hash_vocab_size']:>5}: T-FREE embedding+head {row['tfree_embed_head_params']:,} vs 64k vocab "
              f"{row['bpe64k_embed_head_params']:,} -> {row['ratio']:.3f}x ({row['target']})")
        append_json_row(NAME, {"benchmark": NAME, "case": f"params_v{row['hash_vocab_size']}", "quick": args.quick,
                               "device": "cpu", "baseline": "LlamaForCausalLM, 64k vocab (untied)",
                               "project": "TFreeForCausalLM", **row}, out=args.out, device="cpu")
    n = 1500 if args.quick else 60000
    texts = {lang: synthetic_text(lang, n) for lang in LANGS}
    en_docs = corpus(args.quick)
    bpe_en = train_bpe(en_docs, 64000)
    bpe_multi = train_bpe([texts[lang][i: i + 5000] for lang in LANGS for i in range(0, len(texts[lang]), 5000)],
                          64000)
    tok = TFreeTokenizer(hash_vocab_size=8000, num_activations=10)
    print("fertility (units per whitespace word; synthetic wordfreq text; NOT comparable to the paper's Table 1)")
    print(f"{'lang':5} {'T-FREE':>8} {'BPE-en-64k':>11} {'BPE-multi-64k':>14}")
    for lang, text in texts.items():
        ws = len(text.split())
        f_t = len(tok.fast_tokenize([text])[0]) / ws
        f_en = len(bpe_en.encode(text).ids) / ws
        f_multi = len(bpe_multi.encode(text).ids) / ws
        print(f"{lang:5} {f_t:8.3f} {f_en:11.3f} {f_multi:14.3f}")
        append_json_row(NAME, {"benchmark": NAME, "case": f"fertility_{lang}", "quick": args.quick, "device": "cpu",
                               "corpus": f"synthetic: Zipf sample of wordfreq top-20k '{lang}' words, {n} words, seed 0",
                               "baseline": "64k ByteLevel BPE (tokenizers) trained on English stdlib docs / on the 5 "
                                           "synthetic texts", "project": "TFreeTokenizer", "whitespace_words": ws,
                               "fertility_tfree": f_t, "fertility_bpe_en": f_en, "fertility_bpe_multi": f_multi,
                               "bpe_en_vocab": bpe_en.get_vocab_size(), "bpe_multi_vocab": bpe_multi.get_vocab_size(),
                               "note": "not comparable to paper Table 1"}, out=args.out, device="cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
