"""Issue 19 item 5: export_for_hub refuses unsafe targets and never mutates the live model, config or classes."""

from __future__ import annotations

import json
import os

import pytest

from hf_ext.hub import export_for_hub


@pytest.fixture(scope="module")
def tfree():
    from hf_ext.tfree.training import tiny_tfree

    return tiny_tfree("llama", hidden_size=32, words=["the", "cat"], hash_vocab_size=256, num_activations=4)


def test_export_refuses_empty_path_current_folder_and_non_empty_folder(tfree, tmp_path, monkeypatch):
    model, tok = tfree
    monkeypatch.chdir(tmp_path)
    for bad in ("", " ", ".", "./", str(tmp_path), tmp_path):
        with pytest.raises(ValueError, match="save_directory"):
            export_for_hub(model, bad)
    assert list(tmp_path.iterdir()) == []  # nothing written
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty; pass overwrite=True"):
        export_for_hub(model, tmp_path / "busy")
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        export_for_hub(model, tmp_path / "busy", overwrite="yes")
    with pytest.raises(TypeError, match="save_directory must be a path"):
        export_for_hub(model, None)
    path = export_for_hub(model, tmp_path / "busy", tokenizer=tok, overwrite=True)
    assert (path / "notes.txt").read_text() == "mine" and (path / "model.safetensors").is_file()


def test_export_leaves_the_live_config_and_classes_alone(tfree, tmp_path):
    model, tok = tfree
    classes = (type(model), type(model.config), type(tok))
    before = [c.__dict__.get("_auto_class") for c in classes]
    config_before = model.config.to_dict()
    path = export_for_hub(model, tmp_path / "export", tokenizer=tok)
    assert json.loads((path / "config.json").read_text())["auto_map"]["AutoConfig"].endswith("TFreeConfig")
    assert json.loads((path / "tokenizer_config.json").read_text())["auto_map"]["AutoTokenizer"][0]
    assert getattr(model.config, "auto_map", None) is None
    assert [c.__dict__.get("_auto_class") for c in classes] == before
    after = model.config.to_dict()
    assert {k: v for k, v in after.items() if k != "architectures"} == \
        {k: v for k, v in config_before.items() if k != "architectures"}
    model.save_pretrained(tmp_path / "plain")  # a later plain save writes no code and no auto_map
    tok.save_pretrained(tmp_path / "plain")
    assert not [p.name for p in (tmp_path / "plain").iterdir() if p.suffix == ".py"]
    assert "auto_map" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    assert "auto_map" not in json.loads((tmp_path / "plain" / "tokenizer_config.json").read_text())


def test_export_is_atomic_and_a_re_export_replaces_its_own_files(tfree, tmp_path):
    model, tok = tfree
    path = export_for_hub(model, tmp_path / "export", tokenizer=tok)
    assert "tokenizer_config.json" in json.loads((path / "hf_ext_manifest.json").read_text())["files"]
    export_for_hub(model, path, overwrite=True)  # without the tokenizer: its files were ours, so they go
    assert not (path / "tokenizer_config.json").exists()
    assert not [n for n in os.listdir(tmp_path) if ".hf_ext-tmp-" in n]
