"""``hf-ext atman explain`` on the built-in tiny model: the --out folder, --json, and the pre-0.2 file flags."""

from __future__ import annotations

import json

import pytest

from hf_ext.cli import main

ARGS = ["atman", "explain", "--prompt", "the cat sat", "--target", " on", "--no-progress"]


def test_explain_writes_html_and_json_into_out(tmp_path, capsys):
    assert main([*ARGS, "--out", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "explanation.json").read_text())
    assert len(printed["units"]) == len("the cat sat") + 1  # character tokens + <s>
    assert "<html" in (tmp_path / "explanation.html").read_text().lower()


def test_pre_0_2_file_flags_still_work(tmp_path):
    with pytest.warns(FutureWarning) as caught:
        assert main([*ARGS, "--out", str(tmp_path / "a.html"), "--json", str(tmp_path / "a.json")]) == 0
    assert (tmp_path / "a.html").is_file() and json.loads((tmp_path / "a.json").read_text())["units"]
    assert sum("is deprecated" in str(w.message) for w in caught) == 2
