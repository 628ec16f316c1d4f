"""`hf-ext dtm score|scan|plan` on the built-in tiny model."""

from __future__ import annotations

import json

import pytest

from hf_ext.cli import main


def test_dtm_cli_score_scan_plan(tmp_path, capsys):
    assert main(["dtm", "score", "-N", "6", "--no-progress", "--aligned", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "score.json").read_text())
    assert res["teacher_forced"]["variant"] == "dtm.teacher_forced" and res["aligned"]["variant"] == "dtm.aligned"
    assert main(["dtm", "scan", "-N", "6", "--no-progress", "--prune", "0.5", "--out", str(tmp_path)]) == 0
    assert len(json.loads((tmp_path / "scan.json").read_text())["rows"]) == 28
    capsys.readouterr()
    assert main(["dtm", "plan", "-N", "6", "--no-progress", "--out", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((tmp_path / "plan.json").read_text())
    assert "int8" in json.loads((tmp_path / "plan.json").read_text())
    assert main(["dtm", "score", "-N", "0"]) == 2 and "--max-new-tokens" in capsys.readouterr().err


def test_dtm_cli_pre_0_2_flags_still_work(tmp_path):
    """--base (now --model) and --out FILE.json (now a folder) keep working for one release, with a warning."""
    with pytest.warns(FutureWarning) as caught:
        assert main(["dtm", "score", "-N", "4", "--no-progress", "--base", "", "--out", str(tmp_path / "s.json")]) == 0
    messages = " ".join(str(w.message) for w in caught)
    assert "--base is deprecated" in messages and "(a file) is deprecated" in messages
    assert json.loads((tmp_path / "s.json").read_text())["teacher_forced"]["variant"] == "dtm.teacher_forced"
