"""A tiny T-FREE model learns a toy corpus (Accelerate loop and transformers.Trainer)."""

from __future__ import annotations

import pytest
import torch

from hf_ext.tfree.training import TFreeDataCollator, tiny_tfree, train_tfree, word_windows

CORPUS = ["The quick brown fox jumps over the lazy dog.", "A stitch in time saves nine.",
          "All that glitters is not gold."]


@pytest.mark.slow
def test_tiny_model_learns_and_reproduces_memorised_sentences():
    model, tok = tiny_tfree("llama", hash_vocab_size=1024, num_activations=4, hidden_size=64, seed=0,
                            pos_weight=10.0, loss_scale=100.0)
    for sentence in CORPUS:
        tok.add_words(tok.tokenize(sentence))  # the corpus words into the tokenizer's dictionary
    model.set_decode_dictionary(tok)
    losses = train_tfree(model, tok, CORPUS * 4, steps=120, batch_size=8, max_words=8, lr=3e-3, progress=False, seed=0)
    assert min(losses[-10:]) < 0.1 * losses[0]
    out = model.generate_text(tok, ["The quick brown", "A stitch"], max_new_words=8, do_sample=False)
    assert out[0] == " fox jumps over the lazy dog."
    assert out[1] == " in time saves nine."


def test_word_windows_and_collator():
    _, tok = tiny_tfree("llama", hash_vocab_size=256, num_activations=2, hidden_size=32)
    windows = word_windows(tok, ["a b c", "d e"], max_words=3)
    # words: a b c <eot> d e <eot> -> windows of 3 with stride 3
    assert [len(w["activation_ids"]) for w in windows] == [3, 3]
    assert windows[0]["activation_ids"][0] == tok.word_pattern("a").tolist()
    batch = TFreeDataCollator()(windows)
    assert batch["activation_ids"].shape[:2] == (2, 3) and torch.equal(batch["labels"], batch["activation_ids"])
    with pytest.raises(ValueError, match="max_words"):
        word_windows(tok, ["a"], max_words=1)
    with pytest.raises(ValueError, match="activation_ids"):
        TFreeDataCollator()([{"input_ids": [1]}])


@pytest.mark.slow
def test_trainer_trains(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    model, tok = tiny_tfree("qwen2", hash_vocab_size=512, num_activations=4, hidden_size=32, pos_weight=10.0,
                            loss_scale=100.0)
    ds = Dataset.from_list(word_windows(tok, CORPUS * 4, max_words=8))
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=40, learning_rate=1e-2,
                             logging_steps=5, report_to=[], save_strategy="no", use_cpu=True, seed=0,
                             disable_tqdm=True)
    trainer = Trainer(model=model.train(), args=args, train_dataset=ds, data_collator=TFreeDataCollator())
    trainer.train()
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert logged[-1] < 0.5 * logged[0]
    model.eval()
