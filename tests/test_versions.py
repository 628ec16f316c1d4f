"""The declared version range is the tested one: pyproject's lower bounds are constraints/oldest.txt's pins (torch's
floor is the documented exception), known-good.txt is a full environment inside the range, and the CI tiers exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
#: Floors declared but not tested here, with the reason (TESTING.md): only torch 2.13.0 CPU installs on this machine.
UNTESTED_FLOORS = {"torch": "2.11"}
#: The GPU machine's versions (the GPU figures): no floor may be above them.
GPU_MACHINE = {"torch": "2.11", "transformers": "5.17", "accelerate": "1.15", "peft": "0.21", "diffusers": "0.42.1"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra if not r.startswith("hf-ext[")]
    return reqs


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints" / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{name}: {line!r} is not a pin"
            pins[_norm(req.name)] = spec.version
    return pins


def _floor(spec: SpecifierSet) -> str | None:
    floors = [s.version for s in spec if s.operator == ">="]
    return floors[0] if floors else None


def test_every_floor_is_pinned_in_oldest_and_nothing_else():
    oldest = _pins("oldest.txt")
    floors = {_norm(r.name): _floor(r.specifier) for r in _requirements()}
    missing = sorted(n for n, f in floors.items() if f is None)
    assert not missing, f"dependencies without a lower bound: {missing}"
    for name, floor in floors.items():
        if name in UNTESTED_FLOORS:
            assert floor == UNTESTED_FLOORS[name], (name, floor)
            continue
        assert oldest.get(name) == floor, f"{name}: pyproject floor {floor} but oldest.txt pins {oldest.get(name)}"
    assert set(oldest) == set(floors), "oldest.txt pins exactly the floors (torch: the installable 2.13.0)"


def test_floors_are_not_above_the_gpu_machine():
    floors = {_norm(r.name): _floor(r.specifier) for r in _requirements()}
    for name, gpu in GPU_MACHINE.items():
        assert Version(floors[name]) <= Version(gpu), f"{name} floor {floors[name]} is above the GPU machine's {gpu}"


def test_known_good_is_a_full_environment_inside_the_range():
    good = _pins("known-good.txt")
    for req in _requirements():
        name = _norm(req.name)
        assert name in good, f"known-good.txt lacks {name}"
        assert req.specifier.contains(good[name], prereleases=True), f"known-good {name}=={good[name]} not in {req}"
    assert not [n for n in good if n.startswith("nvidia-")], "CUDA wheels do not belong in the CPU environment"
    assert "hf-ext" not in good


def test_requires_python_and_tier_table():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    env = {k: v for k, v in os.environ.items() if k != "HF_EXT_TIME_FACTOR"}  # the quiet-machine table
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "tiers.py"), "--table"], capture_output=True, text=True,
                         check=True, env=env).stdout
    for tier in ("core", "conformance", "real", "multiprocess", "cli", "docs", "newest", "oldest", "total"):
        assert re.search(rf"^{tier}\s+\d+ min", out, re.M), (tier, out)
    testing = (ROOT / "TESTING.md").read_text()
    for tier, minutes in re.findall(r"^(\w+)\s+(\d+) min", out, re.M):
        assert re.search(rf"^\| {tier} \| {minutes} min \|", testing, re.M), f"TESTING.md disagrees on {tier}"
