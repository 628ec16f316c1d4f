"""Run the test tiers of TESTING.md, each with its own time against its budget, and the version-range runs.

Usage (the venv must hold the project with its ``all,dev`` extras; ``make install`` / ``.ci/run`` build it):

    python3 .ci/tiers.py --venv .venv                       # every tier, then the newest and oldest runs
    python3 .ci/tiers.py --venv .venv --only core,docs      # some tiers
    python3 .ci/tiers.py --table                            # the budget table only

Tiers are marker expressions (markers are registered in pyproject.toml; conftest.py adds ``cli``/``docs`` by rule),
so a helper adds a tier's tests by marking them, and a tier with no tests yet passes (pytest's exit code 5). The
``newest`` run installs the project into a fresh venv with whatever pip resolves today (only torch pinned to the
venv's torch) and runs the smoke selection; the ``oldest`` run does the same against ``constraints/oldest.txt`` and
first asserts with ``pip freeze`` that every floor really resolved. Exit status: non-zero if any tier failed, or if
everything (including the install time passed as ``--started``) took longer than the total limit.

Python 3.8+ standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints"

#: Tests of their own tier; everything else is the core tier.
OWN_TIER_MARKERS = ("conformance", "real", "multiprocess", "cli", "docs")
#: ``make check`` and the newest/oldest smoke: the quick part of the suite.
CHECK_EXPR = "not (slow or real or multiprocess or conformance)"

# name -> (pytest marker expression, budget in seconds on a quiet 2-core machine, what it is)
TIERS = {
    "core": ("not (" + " or ".join(OWN_TIER_MARKERS) + ")", 15 * 60, "every test of no other tier, slow ones included"),
    "conformance": ("conformance", 6 * 60, "components x model families x settings"),
    "real": ("real", 10 * 60, "converted real checkpoints"),
    "multiprocess": ("multiprocess", 4 * 60, "accelerate / torchrun with 2 processes"),
    "cli": ("cli", 4 * 60, "CLI commands and hypothesis property tests"),
    "docs": ("docs", 2 * 60, "README/docs code blocks, docstring examples, mkdocs build --strict"),
}
#: Arguments a tier adds to its pytest command: the docs tier also collects the docstring examples under hf_ext/
#: (pytest's doctest items; conftest.py marks them ``docs``).
TIER_ARGS = {"docs": ["--doctest-modules", "hf_ext", "tests"]}
VERSION_RUNS = {
    "newest": (6 * 60, "today's newest releases: fresh venv + smoke (" + CHECK_EXPR + ")"),
    "oldest": (6 * 60, "constraints/oldest.txt: fresh venv + pip freeze check + smoke"),
}
#: 60 min on the quiet CI machine; HF_EXT_TIME_FACTOR (as for the tests' hang guards) stretches it on a shared machine.
TOTAL_LIMIT_S = int(60 * 60 * float(os.environ.get("HF_EXT_TIME_FACTOR") or 1))
#: Printed with the newest/oldest runs.
KEY_PACKAGES = ("torch", "transformers", "accelerate", "peft", "diffusers", "datasets", "tokenizers",
                "huggingface-hub", "safetensors", "numpy", "sentence-transformers", "evaluate", "scipy")


def budget_table() -> str:
    rows = [("tier", "budget", "selection")]
    rows += [(name, f"{budget // 60} min", f"-m '{expr}'  ({what})") for name, (expr, budget, what) in TIERS.items()]
    rows += [(name, f"{budget // 60} min", what) for name, (budget, what) in VERSION_RUNS.items()]
    rows.append(("total", f"{TOTAL_LIMIT_S // 60} min", "everything .ci/run does, installs included (fails above)"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, width)).rstrip() for r in rows)


def _say(msg: str) -> None:
    print(f"[tiers] {msg}", flush=True)


def _counts(xml_path: Path) -> dict[str, int]:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    if not xml_path.is_file():
        return counts
    for suite in ET.parse(xml_path).getroot().iter("testsuite"):
        tests, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        counts["failed"] += failures + errors
        counts["skipped"] += skipped
        counts["passed"] += tests - failures - errors - skipped
    return counts


class Report:
    def __init__(self, started: float):
        self.started = started
        self.rows: list[tuple[str, float, int, str, dict[str, int]]] = []

    def add(self, name: str, seconds: float, budget: int, status: str, counts: dict[str, int]) -> None:
        self.rows.append((name, seconds, budget, status, counts))
        over = "  OVER BUDGET" if seconds > budget else ""
        _say(f"TIME {name}: {seconds:.0f} s (budget {budget} s) {status}; "
             f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped{over}")

    @property
    def failed(self) -> bool:
        return any(status not in ("passed", "no tests") for _, _, _, status, _ in self.rows)

    def summary(self) -> str:
        lines = [f"{'tier':<14}{'time':>8}{'budget':>8}  status"]
        for name, seconds, budget, status, c in self.rows:
            flag = " (over budget)" if seconds > budget else ""
            lines.append(f"{name:<14}{seconds:>7.0f}s{budget:>7}s  {status}{flag}  "
                         f"[{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped]")
        total = time.time() - self.started
        lines.append(f"{'total':<14}{total:>7.0f}s{TOTAL_LIMIT_S:>7}s  (installs included)")
        return "\n".join(lines)


#: Below this many tests a tier runs in one process: starting xdist workers (each collects the whole suite) costs more.
XDIST_MIN_TESTS = 40


def _collected(python: Path, expr: str, extra: list[str]) -> int | None:
    """How many tests ``-m expr`` selects (None if collection itself failed: the real run then reports why)."""
    proc = subprocess.run([str(python), "-m", "pytest", "--collect-only", "-q", "-m", expr, "-p", "no:cacheprovider",
                           *extra], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode == 5:
        return 0
    match = re.search(r"^(\d+)(?:/\d+)? tests? collected", proc.stdout, re.M)
    return int(match.group(1)) if proc.returncode == 0 and match else None


def run_pytest(python: Path, name: str, expr: str, budget: int, report: Report, workers: str, extra: list[str]) -> None:
    xml = Path(os.environ.get("TMPDIR", "/tmp")) / f"hf_ext-tier-{name}-{os.getpid()}.xml"
    t0 = time.time()
    count = _collected(python, expr, extra)
    if count == 0:
        report.add(name, time.time() - t0, budget, "no tests", {"passed": 0, "failed": 0, "skipped": 0})
        return
    n = workers if count is None or count >= XDIST_MIN_TESTS else "0"
    # loadgroup: tests marked xdist_group("multiprocess") share one worker (the others spread as with "load").
    dist = ["--dist", "loadgroup"] if n != "0" else []
    cmd = [str(python), "-m", "pytest", "-m", expr, "-n", n, *dist, "-p", "no:cacheprovider",
           f"--junitxml={xml}", "-o", "junit_family=xunit2", *extra]
    _say(f"tier {name} ({count} tests): {' '.join(cmd[1:])}")
    rc = subprocess.call(cmd, cwd=ROOT)
    seconds = time.time() - t0
    status = {0: "passed", 5: "no tests"}.get(rc, f"FAILED (pytest exit {rc})")
    report.add(name, seconds, budget, status, _counts(xml))
    xml.unlink(missing_ok=True)


def _pip(python: Path, *args: str) -> None:
    subprocess.check_call([str(python), "-m", "pip", *args], cwd=ROOT)


def _freeze(python: Path) -> dict[str, str]:
    out = subprocess.check_output([str(python), "-m", "pip", "freeze", "--all"], text=True)
    versions = {}
    for line in out.splitlines():
        if "==" in line:
            name, _, version = line.partition("==")
            versions[_norm(name)] = version.strip()
    return versions


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower().strip()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise ValueError(f"{path}: {line!r} is not a 'name==version' pin")
            pins[_norm(name)] = version.strip()
    return pins


def _fresh_venv(base_python: Path, where: Path, torch_version: str) -> tuple[Path, Path]:
    """A new venv at ``where`` with this torch (never a CUDA build pulled by a bare requirement)."""
    shutil.rmtree(where, ignore_errors=True)
    subprocess.check_call([sys.executable, "-m", "venv", str(where)])
    python = where / "bin" / "python"
    pin = where / "torch-pin.txt"
    pin.write_text(f"torch=={torch_version}\n")
    _pip(python, "install", "-q", "--upgrade", "pip")
    _pip(python, "install", "-q", "-c", str(pin), f"torch=={torch_version}")
    return python, pin


def version_run(kind: str, venv_python: Path, report: Report, workers: str, keep: bool) -> None:
    budget, _ = VERSION_RUNS[kind]
    t0 = time.time()
    torch_version = subprocess.check_output(
        [str(venv_python), "-c", "import importlib.metadata as m; print(m.version('torch').split('+')[0])"],
        text=True).strip()
    where = ROOT / f".ci-{kind}"
    status = "passed"
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    try:
        python, pin = _fresh_venv(venv_python, where, torch_version)
        if kind == "oldest":
            oldest = CONSTRAINTS / "oldest.txt"
            _pip(python, "install", "-q", "-c", str(pin), "-c", str(oldest), "-e", ".[all,dev]")
            have = _freeze(python)
            wrong = {name: (want, have.get(name)) for name, want in _pins(oldest).items()
                     if have.get(name, "").split("+")[0] != want}
            if wrong:
                raise RuntimeError(f"floors of constraints/oldest.txt did not resolve (pin, installed): {wrong}")
            _say(f"oldest: pip freeze matches all {len(_pins(oldest))} pins of constraints/oldest.txt")
        else:
            _pip(python, "install", "-q", "--upgrade", "--upgrade-strategy", "eager", "-c", str(pin), "-e", ".[all,dev]")
        have = _freeze(python)
        _say(f"{kind} versions: " + ", ".join(f"{p}=={have.get(p, '-')}" for p in KEY_PACKAGES))
        xml = where / "junit.xml"
        cmd = [str(python), "-m", "pytest", "-m", CHECK_EXPR, "-n", workers, "--dist", "loadgroup", "-p", "no:cacheprovider",
               f"--junitxml={xml}", "-o", "junit_family=xunit2", "-q"]
        _say(f"{kind}: {' '.join(cmd[1:])}")
        rc = subprocess.call(cmd, cwd=ROOT)
        counts = _counts(xml)
        if rc != 0:
            status = f"FAILED (pytest exit {rc})"
    except (subprocess.CalledProcessError, RuntimeError, ValueError) as err:
        status = f"FAILED ({err})"
    finally:
        if not keep:
            shutil.rmtree(where, ignore_errors=True)
    report.add(kind, time.time() - t0, budget, status, counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv", help="venv with the project installed")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated subset of {', '.join([*TIERS, *VERSION_RUNS])} (default: all)")
    parser.add_argument("--workers", default=os.environ.get("HF_EXT_TEST_WORKERS", "2"), help="pytest-xdist -n")
    parser.add_argument("--started", type=float, default=None, help="epoch seconds the whole run started (installs)")
    parser.add_argument("--keep-venvs", action="store_true", help="keep .ci-newest/.ci-oldest for inspection")
    parser.add_argument("--table", action="store_true", help="print the budget table and exit")
    args, pytest_extra = parser.parse_known_args(argv)
    print(budget_table(), flush=True)
    if args.table:
        return 0
    selected = [*TIERS, *VERSION_RUNS] if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in selected if s not in TIERS and s not in VERSION_RUNS]
    if unknown:
        parser.error(f"--only: unknown tier(s) {unknown}; known: {[*TIERS, *VERSION_RUNS]}")
    python = args.venv / "bin" / "python"
    if not python.exists():
        parser.error(f"--venv {args.venv}: no {python}; run `make install` first")
    report = Report(args.started or time.time())
    for name in selected:
        if name in TIERS:
            expr, budget, _ = TIERS[name]
            run_pytest(python, name, expr, budget, report, args.workers, [*TIER_ARGS.get(name, []), *pytest_extra])
        else:
            version_run(name, python, report, args.workers, args.keep_venvs)
    print("\n" + report.summary(), flush=True)
    total = time.time() - report.started
    if total > TOTAL_LIMIT_S:
        _say(f"FAILED: {total:.0f} s in all, above the {TOTAL_LIMIT_S} s limit")
    totals = {k: sum(r[4][k] for r in report.rows) for k in ("passed", "failed", "skipped")}
    # One closing line in the form CI reads: the sum over every tier.
    print(f"tiers: {totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped", flush=True)
    return 1 if report.failed or total > TOTAL_LIMIT_S else 0


if __name__ == "__main__":
    sys.exit(main())
