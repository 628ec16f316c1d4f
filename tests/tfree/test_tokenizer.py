"""TFreeTokenizer: AutoTokenizer round trip, activation ids against the hasher, padding, errors."""

from __future__ import annotations

import numpy as np
import pytest

from hf_ext.tfree import TFreeTokenizer
from hf_ext.tfree.hashing import TrigramHasher
from hf_ext.tfree.wordsplit import SPECIAL_WORDS, text_to_words


def test_save_load_with_auto_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    tok = TFreeTokenizer(words=["alpha"], hash_vocab_size=4096, num_activations=6, num_lowercase_activations=2,
                         hash_scheme="fast", grow_dictionary=True)
    tok("grown words here")
    tok.save_pretrained(tmp_path)
    data_files = sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".py")  # .py: only after export_for_hub
    assert data_files == ["hf_ext_manifest.json", "tokenizer_config.json", "words.json"]
    assert sum((tmp_path / f).stat().st_size for f in data_files) < 10_000  # small files, no hash table
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, TFreeTokenizer)
    assert loaded.words == tok.words and loaded.hash_config() == tok.hash_config()
    assert loaded.words[: len(SPECIAL_WORDS)] == list(SPECIAL_WORDS)
    assert loaded("grown words").input_ids == tok("grown words").input_ids


def test_activation_ids_match_hasher_and_padding():
    tok = TFreeTokenizer(hash_vocab_size=8000, num_activations=10, num_lowercase_activations=2)
    h = TrigramHasher(8000, 10, 2)
    texts = ["Hello world!", "a"]
    enc = tok.encode_activations(texts, return_tensors="np", padding_side="right")
    for b, text in enumerate(texts):
        words = text_to_words(text, parse_special=False)
        assert enc["attention_mask"][b].sum() == len(words)
        for p, w in enumerate(words):
            row = enc["activation_ids"][b, p]
            expected = sorted(np.concatenate([h.rows(np.array([t]))[0] for t in h.trigram_ids(w)]).tolist())
            assert row[row >= 0].tolist() == expected
    left = tok.encode_activations(texts, return_tensors="np", padding_side="left")
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert (left["activation_ids"][1, 2] == enc["activation_ids"][1, 0]).all()
    flat = tok.encode_activations(texts, format="flat")
    assert flat["num_words"] == [3, 1] and flat["activation_ids"][1][0] == enc["activation_ids"][1, 0][
        enc["activation_ids"][1, 0] >= 0].tolist()
    short = tok.encode_activations(texts, max_words=2, return_tensors="np")
    assert short["activation_ids"].shape[1] == 2
    eos = tok.encode_activations(["a"], add_eos_token=True, format="flat")["activation_ids"][0]
    assert len(eos) == 2 and sorted(eos[1]) == sorted(h.whole_word_row("<|endoftext|>").tolist())


def test_same_text_same_encoding_regardless_of_history():
    a, b = TFreeTokenizer(), TFreeTokenizer()
    b.encode_activations(["lots of other words first", "and more"])
    b.add_words(b.tokenize("grow the dictionary"))
    ea = a.encode_activations(["the same text"], return_tensors="np")
    eb = b.encode_activations(["the same text"], return_tensors="np")
    assert (ea["activation_ids"] == eb["activation_ids"]).all()


def _saved(tok):
    import tempfile

    path = tempfile.mkdtemp()
    tok.save_pretrained(path)
    return path


def test_dictionary_grows_only_when_asked():
    frozen = TFreeTokenizer(words=["known"])  # the default: a fixed dictionary
    n = len(frozen)
    with pytest.raises(ValueError, match="grow_dictionary=False"):
        frozen("known unknownword")
    assert len(frozen) == n and frozen("known").input_ids == [frozen.words.index("known")]
    assert frozen.encode_activations(["known unknownword"], format="flat")["num_words"] == [2]  # needs no dictionary
    assert len(frozen) == n
    tok = TFreeTokenizer(words=["known"], grow_dictionary=True)
    tok("known unknownword")
    assert len(tok) == n + 1 and tok.words[-1] == "unknownword"
    tok.truncate_dictionary(n)
    assert frozen.add_words(["unknownword"]) == [n] and frozen("known unknownword").input_ids[-1] == n
    loaded = TFreeTokenizer.from_pretrained(_saved(tok))
    assert loaded.grow_dictionary is True  # the choice is saved with the tokenizer


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_activations=10"):
        TFreeTokenizer(hash_vocab_size=8, num_activations=10)
    with pytest.raises(ValueError, match="unknown hash_scheme"):
        TFreeTokenizer(hash_scheme="crc32")
    with pytest.raises(TypeError, match="words must be a sequence of str"):
        TFreeTokenizer(words="the")
    tok = TFreeTokenizer()
    with pytest.raises(ValueError, match="format="):
        tok.encode_activations(["a"], format="coo")
    with pytest.raises(ValueError, match="max_words must be a positive int or None, got 0"):
        tok.encode_activations(["a"], max_words=0)
    with pytest.raises(ValueError, match="outside the dictionary"):
        tok.decode([10**6])
    with pytest.raises(TypeError, match="text must be a str"):
        text_to_words(3)


@pytest.mark.slow
def test_datasets_map_num_proc_matches_single_process():
    from datasets import Dataset

    tok = TFreeTokenizer(hash_vocab_size=512, num_activations=4)
    texts = [f"document {i}: the cat sat on mat number {i}." for i in range(8)]
    ds = Dataset.from_dict({"text": texts})

    def enc(batch):
        return {"activation_ids": tok.encode_activations(batch["text"], format="flat")["activation_ids"]}

    single = ds.map(enc, batched=True, batch_size=3)["activation_ids"]
    multi = ds.map(enc, batched=True, batch_size=3, num_proc=2)["activation_ids"]
    assert single == multi


def test_first_pass_batch_equals_word_by_word():
    """A new tokenizer's first pass (all new words hashed in one batch) == the per-word reference path, and the same
    encoding again (warm) and split over several calls."""
    texts = ["Hello  world!\n\nNew words: Straße, naïve, 漢字, x_y=1+2.", "<|ws|> looks special", "", "  ", "again Hello"]
    kwargs = dict(hash_vocab_size=4000, num_activations=8, num_lowercase_activations=3)
    h = TrigramHasher(4000, 8, 3)
    cold = TFreeTokenizer(**kwargs)
    first = cold.encode_activations(texts, format="flat")
    for text, per_word in zip(texts, first["activation_ids"]):
        words = text_to_words(text, parse_special=False)
        assert len(per_word) == len(words)
        for w, ids in zip(words, per_word):
            assert ids == sorted(h.word_pattern(w)[0].tolist()), w
    assert cold.encode_activations(texts, format="flat") == first
    piecewise = TFreeTokenizer(**kwargs)
    parts = [piecewise.encode_activations([t], format="flat")["activation_ids"][0] for t in texts]
    assert parts == first["activation_ids"]


def test_thousands_of_new_words_at_once():
    """More new words than the cache's initial capacity (1,024) in one call: patterns, dictionary and model."""
    from hf_ext.tfree import TFreeConfig, TFreeForCausalLM

    words = [f"w{i}x" for i in range(3000)]
    tok = TFreeTokenizer(words=words, hash_vocab_size=1000, num_activations=4)
    indptr, data, n_tri = tok.words_to_patterns(words)
    h = TrigramHasher(1000, 4)
    for i in (0, 1023, 1024, 2999):
        assert data[indptr[i]:indptr[i + 1]].tolist() == sorted(h.word_pattern(words[i])[0].tolist())
    for source in (tok, [f"v{i}y" for i in range(3000)]):
        model = TFreeForCausalLM(TFreeConfig(hash_vocab_size=1000, num_activations=4))
        model.set_decode_dictionary(source)
        assert model.dictionary_size >= 3000


@pytest.mark.parametrize("parse_special", [False, True])
def test_ascii_letter_fast_path_keeps_maximal_letter_runs(parse_special):
    """The split tries an ASCII letter run first: a run that goes on with a non-ASCII letter (either side of it) must
    still be one word, exactly as the reference split (``text_to_words``) makes it."""
    texts = ["abcé éabc aéb Zürich naïveté ABCжxyz x1y _a_ a'b ÀB", "résumé<|ws|>café  l'été\nSTRASSEß", "ß" * 3 + "a" * 300]
    tok = TFreeTokenizer(hash_vocab_size=512, num_activations=4, parse_special=parse_special)
    assert tok.fast_tokenize(texts) == [text_to_words(t, parse_special=parse_special) for t in texts]


def test_csr_gather_across_slices(monkeypatch):
    """encode_activations(format="csr") writes the patterns in slices of whole words: with slices of a few entries
    (many word boundaries on and around slice ends) it equals each word's own pattern from the hasher."""
    import hf_ext.tfree.pattern_cache as pattern_cache

    texts = ["Hello  world, a b c!\n\nStraße 12 x", "", "<|ws|> again Hello", " "]
    h = TrigramHasher(4000, 8, 3)
    for chunk in (1, 7, 8, 50, 1 << 20):
        monkeypatch.setattr(pattern_cache, "_GATHER_CHUNK", chunk)
        tok = TFreeTokenizer(hash_vocab_size=4000, num_activations=8, num_lowercase_activations=3)
        enc = tok.encode_activations(texts, format="csr")
        words = [w for t in texts for w in text_to_words(t, parse_special=False)]
        assert len(enc["word_offsets"]) == len(words) + 1
        ids, offsets = enc["activation_ids"], enc["word_offsets"]
        for k, w in enumerate(words):
            assert ids[offsets[k]:offsets[k + 1]].tolist() == sorted(h.word_pattern(w)[0].tolist()), (chunk, w)
