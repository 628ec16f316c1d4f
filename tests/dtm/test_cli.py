"""`hf-ext dtm score|scan|plan` on the built-in tiny model."""

from __future__ import annotations

import json

from hf_ext.cli import main


def test_dtm_cli_score_scan_plan(tmp_path, capsys):
    out = tmp_path / "score.json"
    assert main(["dtm", "score", "-N", "6", "--no-progress", "--aligned", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["teacher_forced"]["variant"] == "dtm.teacher_forced" and res["aligned"]["variant"] == "dtm.aligned"
    assert main(["dtm", "scan", "-N", "6", "--no-progress", "--prune", "0.5", "--out", str(tmp_path / "s.json")]) == 0
    assert len(json.loads((tmp_path / "s.json").read_text())["rows"]) == 28
    assert main(["dtm", "plan", "-N", "6", "--no-progress", "--out", str(tmp_path / "p.json")]) == 0
    assert "int8" in json.loads((tmp_path / "p.json").read_text())
    assert main(["dtm", "score", "-N", "0"]) == 2 and "must be ≥ 1" in capsys.readouterr().err
