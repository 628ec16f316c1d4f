"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and each of our contract types can break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    exe = str(exe) if exe.exists() else shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports is not installed: pip install 'hf-ext[dev]' (import-linter)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(cwd)]),  # tests.import_contracts, the probe
           "COLUMNS": "400"}  # no wrapped lines
    return subprocess.run([exe, "--no-cache", *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_contracts_hold():
    res = _lint_imports()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout and "4 kept" in res.stdout


def _config(tmp_path: Path, contract: str, root: str = "hf_ext") -> str:
    path = tmp_path / "contracts.toml"
    path.write_text(
        f'[tool.importlinter]\nroot_package = "{root}"\ncontract_types = [\n'
        '  "shared_imports_no_component: tests.import_contracts.SharedImportsNoComponentContract",\n'
        '  "no_private_names_across_packages: tests.import_contracts.NoPrivateNamesAcrossPackagesContract",\n]\n\n'
        f"[[tool.importlinter.contracts]]\nname = \"probe\"\n{contract}\n"
    )
    return str(path)


def test_shared_contract_breaks_for_a_package_that_imports_a_component(tmp_path):
    # dtm imports core (another registered component): as a "shared" source it breaks the contract
    res = _lint_imports(_config(tmp_path, 'type = "shared_imports_no_component"\nsource_modules = ["hf_ext.dtm"]'))
    assert res.returncode == 1 and "hf_ext.dtm" in res.stdout and "hf_ext.core" in res.stdout, res.stdout


def test_private_names_contract_reports_violations_and_stale_entries(tmp_path):
    """A probe package: b imports a private name of a (a violation), c a public one and a's own modules a private one
    (both fine); an 'allowed' entry that matches nothing is reported as stale."""
    files = {
        "probe/__init__.py": "",
        "probe/a/__init__.py": "from .x import _helper\n",
        "probe/a/x.py": "def _helper():\n    return 1\n\n\ndef public():\n    return 2\n",
        "probe/b/__init__.py": "",
        "probe/b/y.py": "def f():\n    from probe.a.x import (\n        public,\n        _helper,\n    )\n    return public, _helper\n",
        "probe/c.py": "from probe.a.x import public\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    config = _config(tmp_path, 'type = "no_private_names_across_packages"\nallowed = ["probe.c -> probe.a.x: _gone"]',
                     root="probe")
    res = _lint_imports(config, cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    errors = [line for line in res.stdout.splitlines() if "private name" in line or "'allowed' entry" in line]
    assert errors == ["private name imported from another package: probe.b.y -> probe.a.x: _helper (line 2)",
                      "'allowed' entry matches no import any more (delete it): probe.c -> probe.a.x: _gone"], res.stdout
    config = _config(tmp_path, 'type = "no_private_names_across_packages"\nallowed = ["probe.b.y -> probe.a.x: _helper"]',
                     root="probe")
    assert _lint_imports(config, cwd=tmp_path).returncode == 0
