"""Code-structure rules of hf_ext (issue 18), checked on the source tree by its AST.

* library code never imports the test kit ``hf_ext.testing`` (it imports ``hf_ext.tiny``);
* no private name (``_x``) is imported from another hf_ext module;
* no file in ``hf_ext/`` is over 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hf_ext"
MAX_LINES = 500
# Private imports the component-registry half of issue 18 removes (registry, MAD CLI/bench cycle, tour registry).
KNOWN_PRIVATE_IMPORTS = {
    ("hf_ext", "hf_ext.auto", "_register_lazily"),
    ("hf_ext.mad.bench", "hf_ext.mad.cli", "_add_run_arguments"),
    ("hf_ext.mad.bench", "hf_ext.mad.cli", "_cmd_run"),
    ("hf_ext.tour.runner", "hf_ext.tour.registry", "_describe"),
}


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _imports(name: str, path: Path, is_package: bool):
    """``(imported module, imported name or None)`` of every import in the module, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                yield target, alias.name


def test_library_code_does_not_import_the_test_kit():
    offenders = []
    for name, (path, is_package) in _modules().items():
        if name == "hf_ext.testing":
            continue
        for target, alias in _imports(name, path, is_package):
            if target == "hf_ext.testing" or (target == "hf_ext" and alias == "testing"):
                offenders.append(f"{path.relative_to(ROOT)} imports hf_ext.testing")
    assert not offenders, "\n".join(offenders) + "\nimport the factories from hf_ext.tiny instead"


def test_no_private_name_crosses_modules():
    modules = _modules()
    found = set()
    for name, (path, is_package) in modules.items():
        for target, alias in _imports(name, path, is_package):
            if (alias and alias.startswith("_") and not alias.startswith("__") and target.startswith("hf_ext")
                    and target != name and f"{target}.{alias}" not in modules):
                found.add((name, target, alias))
    unexpected = sorted(found - KNOWN_PRIVATE_IMPORTS)
    assert not unexpected, f"private names imported across modules (make them public or move the code): {unexpected}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_files_are_small(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it along its meaning"
