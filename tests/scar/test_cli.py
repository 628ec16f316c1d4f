"""`hf-ext scar train|detect|generate` on a saved tiny model and a small CSV (offline)."""

from __future__ import annotations

import csv
import json

from hf_ext.cli import main
from hf_ext.scar.toy import concept_corpus
from hf_ext.testing import tiny_causal_lm, tiny_tokenizer


def test_scar_cli_train_detect_generate(tmp_path, capsys, caplog):
    base = tmp_path / "base"
    tiny_causal_lm("gpt2").save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    texts, labels = concept_corpus(40, seed=0)
    with open(tmp_path / "data.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))
    out = tmp_path / "scar"
    assert main(["scar", "train", "--model", str(base), "--data", str(tmp_path / "data.csv"), "--layer", "1",
                 "--epochs", "1", "--batch-size", "64", "--out", str(out), "--no-progress"]) == 0
    assert (out / "adapter_model.safetensors").is_file() and (out / "README.md").is_file()
    capsys.readouterr()
    assert main(["scar", "detect", "--adapter", str(out), "--text", "the cat .", "--text", "the war .", "--tokens"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["text"] for r in rows] == ["the cat .", "the war ."] and 0 <= rows[0]["concept"] <= 1
    assert len(rows[0]["tokens"]) == len("the cat .") + 1  # char tokens + <s>
    assert main(["scar", "generate", "--adapter", str(out), "--prompt", "the cat", "--max-new-tokens", "4",
                 "--strength", "5", "--op", "replace"]) == 0
    assert "steered:" in capsys.readouterr().out
    # bad input: unknown concept, --data without --model
    assert main(["scar", "generate", "--adapter", str(out), "--prompt", "x", "--concept", "nope"]) == 2
    assert "unknown concept" in capsys.readouterr().err
    assert main(["scar", "train", "--data", str(tmp_path / "data.csv"), "--out", str(tmp_path / "x")]) == 2


def test_scar_cli_train_at_a_named_module_and_report(tmp_path, capsys):
    from hf_ext.scar import LatentReport, ScarConfig

    base = tmp_path / "base"
    tiny_causal_lm("llama").save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    texts, labels = concept_corpus(30, seed=1)
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in zip(texts, labels)))
    out = tmp_path / "scar"
    assert main(["scar", "train", "--model", str(base), "--data", str(tmp_path / "data.jsonl"), "--layer", "1",
                 "--site", "module", "--site-module", "model.layers.1.self_attn.o_proj", "--epochs", "1",
                 "--batch-size", "64", "--out", str(out), "--no-progress"]) == 0
    cfg = ScarConfig.from_pretrained(out)
    assert cfg.site == "module" and cfg.site_module == "model.layers.1.self_attn.o_proj"
    (tmp_path / "texts.txt").write_text("\n".join(texts[:6]) + "\n\n")
    capsys.readouterr()
    rep = tmp_path / "report"
    assert main(["scar", "report", "--adapter", str(out), "--texts", str(tmp_path / "texts.txt"), "--text", "the war .",
                 "--latents", "concept", "3", "--top-k", "4", "--out", str(rep), "--json", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    report = LatentReport.load(rep / "latent_report.json")
    assert printed == report.to_dict() and report.latents == [0, 3] and report.num_texts == 7
    assert "<html" in (rep / "latent_report.html").read_text()
    assert main(["scar", "report", "--adapter", str(out), "--out", str(rep), "--no-progress"]) == 2
    assert main(["scar", "report", "--adapter", str(out), "--text", "x", "--latents", "nope", "--out", str(rep)]) == 2
