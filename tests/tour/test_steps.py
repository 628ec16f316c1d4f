"""Every registered component tour step runs end to end (default, short mode) and writes its artifacts."""

from __future__ import annotations

import json

import pytest

from hf_ext.cli import main
from hf_ext.tour import registered_steps

STEPS = [name for name in registered_steps() if name != "environment"]  # environment: tests/test_cli.py


def test_every_component_has_a_step():
    assert {"core", "atman", "dtm"} <= set(STEPS)


@pytest.mark.parametrize("step", STEPS)
def test_step_runs(step, tmp_path, capsys):
    code = main(["tour", "--steps", step, "--out", str(tmp_path), "--no-progress", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    run_dir = next(tmp_path.glob("tour-*"))
    results = json.loads((run_dir / "results.json").read_text())
    record = results["steps"][0]
    assert record["status"] == "ok", record
    pngs = list((run_dir / step).glob("*.png"))
    assert pngs, f"step {step} wrote no figure"
    report = (run_dir / "report.md").read_text()
    assert f"{step}/{pngs[0].name}" in report
