"""Helpers of the multi-process tests: the README's launch recipes, running them, comparing saved outputs."""

from __future__ import annotations

import importlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
#: fp32, N processes vs 1 (see the README's "Scaling out"): 99.9 % of the weights within FINE, all within COARSE. The
#: few coordinates beyond FINE have a (near-)zero true gradient (attention key biases, never-seen vocabulary rows),
#: where Adam turns float noise into steps of up to ±lr; COARSE holds for the README recipes' learning rates and steps.
FINE, COARSE = 1e-5, 5e-4


def readme_recipes(block: int = 0) -> dict[str, list[str]]:
    """``{output folder name: argv}`` of the ``block``-th bash block of the README's "Scaling out" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Scaling out\n", 1)[1].split("\n## ", 1)[0]
    body = section.split("```bash\n")[block + 1].split("```", 1)[0]
    recipes = {}
    for line in body.strip().splitlines():
        argv = shlex.split(line)
        flag = "--out" if "--out" in argv else "--output-dir"
        recipes[Path(argv[argv.index(flag) + 1]).name] = argv
    return recipes


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}


def launch(argv: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a README line as written, ``torchrun`` / ``accelerate`` being this interpreter's."""
    if argv[0] == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    elif argv[0] == "accelerate":
        cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", *argv[1:]]
    else:
        raise ValueError(f"not a launch line: {argv}")
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{shlex.join(argv)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def single_process(argv: list[str], out: Path) -> None:
    """The same command in this process (one process, no sharding): ``<module>.main(args)`` with ``out`` as output."""
    module = argv[argv.index("-m") + 1]
    args = [a for a in argv[argv.index("-m") + 2:] if a != "--fsdp"]
    flag = "--out" if "--out" in args else "--output-dir"
    args[args.index(flag) + 1] = str(out)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        assert importlib.import_module(module).main(args) == 0
    finally:  # hf_ext.scar.training turns deterministic algorithms on for its process
        torch.use_deterministic_algorithms(deterministic)


def run_meta(folder: Path) -> tuple[int, list[dict], list[float]]:
    """``(world size, sharding reports, losses)`` from a run's ``losses.json``."""
    meta = json.loads((folder / "losses.json").read_text(encoding="utf-8"))
    report = meta["sharding"]
    reports = [report] if "sharded" in report else list(report.values())
    return int(meta["world_size"]), reports, list(meta["losses"])


def compare_outputs(one: Path, other: Path, coarse: float = COARSE) -> dict[str, float]:
    """Every safetensors file of the 1-process output exists in ``other`` with the same keys, shapes and dtypes;
    weight files agree to FINE (99.9 %) / ``coarse`` (all). Returns ``{relative file: max |Δ|}`` of the weight files."""
    from safetensors.torch import load_file

    files = sorted(p.relative_to(one) for p in one.rglob("*.safetensors"))
    assert files, f"no safetensors files under {one}"
    stats = {}
    for rel in files:
        a, b = load_file(str(one / rel)), load_file(str(other / rel))
        assert sorted(a) == sorted(b), f"{rel}: keys differ"
        for key in a:
            assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, f"{rel}:{key}"
        if rel.name.startswith("optimizer"):  # moments of near-zero gradients: compared through the weights
            continue
        diffs = torch.cat([(a[k].double() - b[k].double()).abs().flatten() for k in a if a[k].is_floating_point()])
        stats[str(rel)] = float(diffs.max())
        assert float(diffs.max()) <= coarse, f"{rel}: max |Δ| {float(diffs.max()):.3g} > {coarse}"
        assert float(torch.quantile(diffs[: 2**24], 0.999)) <= FINE, f"{rel}: 99.9th percentile above {FINE}"
    return stats
