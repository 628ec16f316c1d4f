"""``hf-ext moral score|eval|fit``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hf_ext.cli import main


def test_score_offline_with_shipped_direction(capsys, minilm):
    assert main(["moral", "score", "kill people", "smile at my friend", "--templates", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["encoder"] == "sentence-transformers/all-MiniLM-L6-v2" and out["use_templates"] is True
    kill, smile = (s["score"] for s in out["scores"])
    assert kill < 0 < smile
    assert kill == pytest.approx(float(minilm.score(["kill people"], use_templates=True)[0]), abs=1e-5)
    assert main(["moral", "score", "Someone was cruel."]) == 0
    assert "Someone was cruel." in capsys.readouterr().out


def test_model_fits_and_caches(tiny_st_dir, tmp_path, capsys, monkeypatch):
    args = ["moral", "score", "kill", "hug", "--model", str(tiny_st_dir), "--cache-dir", str(tmp_path), "--json",
            "--no-progress"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)["scores"]
    cached = list(tmp_path.glob("*-en/moral_direction.json"))
    assert len(cached) == 1

    from hf_ext.moral.direction import MoralDirection

    def no_fit(*a, **k):
        raise AssertionError("the cached direction should have been used")

    monkeypatch.setattr(MoralDirection, "fit", classmethod(no_fit))
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["scores"] == first


def test_fit_and_eval(tiny_st_dir, tmp_path, capsys):
    assert main(["moral", "fit", "--model", str(tiny_st_dir), "--out", str(tmp_path / "md"), "--no-progress"]) == 0
    assert (tmp_path / "md" / "moral_direction.safetensors").is_file()
    capsys.readouterr()
    rc = main(["moral", "eval", "--model", str(tiny_st_dir), "--direction", str(tmp_path / "md"), "--out",
               str(tmp_path / "ev"), "--no-progress", "--study", "regional"])
    assert rc == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["user_study"]["n"] == 113 and -1 <= res["user_study"]["r"] <= 1
    assert set(res["mfq"]["foundations"]) == {"care", "fairness", "loyalty", "authority", "purity"}
    for png in ("user_study.png", "pc1_actions.png", "mfq_foundations.png"):
        assert (tmp_path / "ev" / png).stat().st_size > 1000
    assert "Pearson r" in capsys.readouterr().out


def test_bad_usage(tmp_path, capsys):
    assert main(["moral", "score", "töten", "--language", "de"]) == 2
    assert "English-only" in capsys.readouterr().err
    assert main(["moral", "score", "x", "--direction", str(tmp_path / "missing")]) == 2
    assert main(["moral", "score"]) == 2  # argparse: TEXT required


def test_cli_module_imports_only_stdlib():
    code = ("import sys, argparse; import hf_ext.moral.cli as c; p = argparse.ArgumentParser(); "
            "c.add_commands(p.add_subparsers()); bad = [m for m in ('torch', 'numpy', 'sentence_transformers') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
