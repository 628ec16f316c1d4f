"""Cells of notebooks/03_tfree.ipynb (built by notebooks/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# T-FREE: tokenizer-free sparse trigram embeddings\n\n"
        "T-FREE (Deiseroth et al., EMNLP 2024) drops the subword vocabulary: text is split into *words*, each word "
        "`' w '` into byte trigrams, and each trigram is hashed to `m` of `v` rows. The embedding sums those rows, the "
        "head predicts the next word's rows (multi-label BCE), and decoding scores a word dictionary that can be "
        "swapped without retraining. With `v = 8000` the embedding and head are 12.5 % of a 64k vocabulary's."
    ),
    new_markdown_cell("## 1. Words, whitespace and exact round trips"),
    new_code_cell(
        "from hf_ext.tfree import TFreeTokenizer\n\n"
        "tok = TFreeTokenizer(hash_vocab_size=8000, num_activations=10, num_lowercase_activations=2,\n"
        "                     grow_dictionary=True)  # new words join the word list (default: a fixed list)\n"
        "text = 'Hello  world!\\nnumbers 1234 and <|special|> look-alikes'\n"
        "words = tok.tokenize(text)\n"
        "print(words)\n"
        "ids = tok(text).input_ids\n"
        "assert tok.decode(ids) == text  # exact, including the double space and the escaped <|...|>\n"
        "print(tok.decode(ids))"
    ),
    new_markdown_cell("## 2. Trigrams → hashed activation ids (no dictionary needed)\n\n"
                      "`Hello` has 5 byte trigrams; each maps to `m = 10` rows, 2 of them shared with `hello`."),
    new_code_cell(
        "import numpy as np\n"
        "h = tok.hasher\n"
        "print('trigram ids:', h.trigram_ids('Hello').tolist())\n"
        "shared = set(tok.word_pattern('Hello').tolist()) & set(tok.word_pattern('hello').tolist())\n"
        "print('rows shared by Hello/hello:', len(shared))\n"
        "enc = tok.encode_activations(['Hello world!', 'T-FREE'])\n"
        "print(enc['activation_ids'].shape, enc['attention_mask'])"
    ),
    new_markdown_cell("## 3. A tiny model: any decoder backbone, trained for a few seconds"),
    new_code_cell(
        "import torch\n"
        "from hf_ext.tfree.training import tiny_tfree, train_tfree\n\n"
        "corpus = ['The quick brown fox jumps over the lazy dog.', 'A stitch in time saves nine.',\n"
        "          'All that glitters is not gold.']\n"
        "torch.set_num_threads(1)\n"
        "model, tok = tiny_tfree('qwen2', hash_vocab_size=1024, num_activations=4, hidden_size=64, pos_weight=10.0,\n"
        "                        loss_scale=100.0)\n"
        "for sentence in corpus:\n"
        "    tok.add_words(tok.tokenize(sentence))  # the corpus words into the word dictionary\n"
        "model.set_decode_dictionary(tok)\n"
        "losses = train_tfree(model, tok, corpus * 4, steps=120, max_words=8, lr=3e-3, progress=False)\n"
        "print(f'loss {losses[0]:.2f} -> {losses[-1]:.3f}')"
    ),
    new_markdown_cell("## 4. `generate()`: greedy, sampling, beam search — dictionary scores as logits"),
    new_code_cell(
        "print(model.generate_text(tok, ['The quick brown', 'A stitch'], max_new_words=8, do_sample=False))\n"
        "ids = tok(['All that'], return_tensors='pt').input_ids\n"
        "beams = model.generate(ids, max_new_tokens=5, num_beams=3, do_sample=False)\n"
        "print(tok.decode(beams[0]))\n"
        "torch.manual_seed(0)\n"
        "print(tok.decode(model.generate(ids, max_new_tokens=5, do_sample=True, temperature=0.02)[0]))"
    ),
    new_markdown_cell("## 5. Save / load with the Auto classes, and parameter counts"),
    new_code_cell(
        "import tempfile\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    model.save_pretrained(d); tok.save_pretrained(d)\n"
        "    m2, t2 = AutoModelForCausalLM.from_pretrained(d), AutoTokenizer.from_pretrained(d)\n"
        "print(type(m2).__name__, type(t2).__name__, m2.dictionary_size, 'dictionary words')\n"
        "for v in (8000, 16000, 32000):\n"
        "    print(f'v={v}: embedding+head = {v / 64000:.3f}x the parameters of a 64k vocabulary')"
    ),
]
