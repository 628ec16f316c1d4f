"""`hf-ext tour` runs every step end to end (default, short mode), writes each step's artifacts, and prints no warning
or logger line beyond :data:`ALLOWED` (what a user sees on `make demo`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hf_ext.testing import time_factor
from hf_ext.tour import registered_steps

STEPS = [name for name in registered_steps() if name != "environment"]  # environment: tests/test_cli.py

#: Lines that look like warnings or log records but are expected. Keep this short; every entry says why.
ALLOWED = [
    # The per-step budget is wall-clock time: on a loaded machine a step may exceed it, and saying so is the point.
    re.compile(r"^WARNING hf_ext\.tour\.runner: tour step [\w-]+ took [\d.]+ s, over its [\d.]+ s budget$"),
    re.compile(r"^! over its time budget \(a warning only; --full runs have no budget\)$"),  # the table's footnote
    # transformers notes, when diffusers imports CLIPImageProcessor/SiglipImageProcessor, that torchvision is absent and
    # the PIL image processors are used: an environment notice from a third-party import, not from hf_ext's code
    # (PyPI's Linux torchvision wheels are CUDA builds, so the CPU set-up does not install it).
    # (transformers' own "[transformers] …" format, or "WARNING transformers.utils.import_utils: …" once the CLI's
    # logging handler is installed first)
    re.compile(r"^(\[transformers\]|WARNING transformers\.utils\.import_utils:) `\w+ImageProcessor` requires "
               r"torchvision \(not installed\); falling back to "),
]

#: What counts as a warning or a log line: Python warnings, logger records, library log prefixes, printed dicts.
SUSPICIOUS = re.compile(
    r"warn|^\s*(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b|^\[(transformers|diffusers|datasets|huggingface_hub|accelerate|"
    r"peft|torch)\]|^\s*\{'|Traceback|Error\b", re.I)


def test_every_component_has_a_step():
    assert {"core", "atman", "dtm"} <= set(STEPS)


def _lines(text: str) -> list[str]:
    """Output lines, with tqdm's carriage-return redraws split off and progress-bar frames dropped."""
    out = []
    for line in re.split(r"[\r\n]+", text):
        if not line.strip() or re.search(r"\|\s*\d+/\d+ \[", line):  # tqdm: "…| 3/10 [00:01<00:02, 4.5it/s]"
            continue
        out.append(line.rstrip())
    return out


def offending_lines(text: str) -> list[str]:
    return [line for line in _lines(text) if SUSPICIOUS.search(line) and not any(a.search(line) for a in ALLOWED)]


def test_offending_lines_detector():
    sample = ("[1/2] core (core) …\n"
              "/x/y.py:3: FutureWarning: Both `past_key_values` and `cache` are set\n"
              "  warnings.warn(\n"
              "[transformers] The following part of your input was truncated because CLIP can only handle 16 tokens\n"
              "{'train_runtime': '7.2', 'train_loss': '0.57'}\n"
              "toy LM:  50%|█████     | 60/120 [00:06<00:06, 9.8it/s]\r"
              "WARNING hf_ext.tour.runner: tour step core took 67.6 s, over its 30 s budget\n"
              "WARNING hf_ext.scar: something else\n")
    assert offending_lines(sample) == [
        "/x/y.py:3: FutureWarning: Both `past_key_values` and `cache` are set", "  warnings.warn(",
        "[transformers] The following part of your input was truncated because CLIP can only handle 16 tokens",
        "{'train_runtime': '7.2', 'train_loss': '0.57'}", "WARNING hf_ext.scar: something else"]


@pytest.mark.slow
def test_tour_runs_every_step_and_prints_no_warnings(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONWARNINGS", None)  # the interpreter's default filters: what a user running `make demo` sees
    hf_ext_cli = Path(sys.executable).with_name("hf-ext")
    cmd = [str(hf_ext_cli)] if hf_ext_cli.exists() else [sys.executable, "-m", "hf_ext.cli"]
    proc = subprocess.run([*cmd, "tour", "--out", str(tmp_path), "--device", "cpu"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=1800 * time_factor())
    output = proc.stdout + "\n" + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    run_dir = next(tmp_path.glob("tour-*"))
    results = {r["name"]: r for r in json.loads((run_dir / "results.json").read_text())["steps"]}
    report = (run_dir / "report.md").read_text()
    for step in STEPS:
        assert results[step]["status"] == "ok", results[step]
        pngs = list((run_dir / step).glob("*.png"))
        assert pngs, f"step {step} wrote no figure"
        assert f"{step}/{pngs[0].name}" in report
    bad = offending_lines(output)
    assert not bad, "hf-ext tour printed warning/log lines (fix the cause, or allow one in ALLOWED with a reason):\n" \
        + "\n".join(bad)
