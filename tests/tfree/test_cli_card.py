"""``hf-ext tfree train|generate|stats`` and the T-FREE model card."""

from __future__ import annotations

import json

import pytest

from hf_ext.cli import main


@pytest.mark.slow
def test_cli_train_generate_stats(tmp_path, capsys):
    text = tmp_path / "corpus.txt"
    text.write_text("the cat sat on the mat. the dog ate the bone.\n" * 4, encoding="utf-8")
    out = tmp_path / "model"
    assert main(["tfree", "train", "--out", str(out), "--text-file", str(text), "--steps", "5", "--hidden-size", "32",
                 "--hash-vocab-size", "256", "--max-words", "8", "--no-progress"]) == 0
    assert (out / "config.json").is_file() and (out / "words.json").is_file()
    assert main(["tfree", "generate", "--model", str(out), "--prompt", "the cat", "--max-new-words", "3",
                 "--json"]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(printed[printed.index("["):])
    assert rows[0]["prompt"] == "the cat" and isinstance(rows[0]["continuation"], str)
    assert main(["tfree", "stats", "--text", "Hello world, 1234!", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["whitespace_words"] == 3 and stats["tfree_words"] == 9  # Hello world , <|ws|> 1 2 3 4 !
    assert stats["params_ratio"] == pytest.approx(8000 / 64000)


def test_cli_bad_input(capsys):
    assert main(["tfree", "stats", "--text", "x", "--hash-vocab-size", "4", "--num-activations", "10"]) == 2
    assert main(["tfree"]) == 2


def test_model_card_renders(llama_tfree):
    from hf_ext.hub import render_model_card

    model, _ = llama_tfree
    card = render_model_card("tfree", card_data={"license": "apache-2.0", "tags": ["t-free"]},
                             model_name="tiny-tfree", config=model.config.to_dict(), training_steps=10,
                             final_loss=0.5, corpus="Python help topics")
    text = str(card)
    assert "T-FREE" in text and "1024" in text and "llama" in text and "final loss 0.5000" in text
    assert "deiseroth2024tfree" in text and "license: apache-2.0" in text
