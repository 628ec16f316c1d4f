"""hf_ext's loggers follow transformers' verbosity; library code logs instead of printing."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

from hf_ext.utils.logging import get_logger, set_verbosity, transformers_verbosity

HF_EXT = Path(__file__).resolve().parents[2] / "hf_ext"


@pytest.fixture
def restore_verbosity():
    old = transformers.logging.get_verbosity()
    yield
    transformers.logging.set_verbosity(old)


def test_transformers_set_verbosity_error_silences_hf_ext(caplog, restore_verbosity):
    from hf_ext.tour.runner import logger as module_logger  # a real module's logger

    caplog.set_level(logging.DEBUG)
    probe = get_logger("hf_ext.probe")
    for logger in (probe, module_logger):
        transformers.logging.set_verbosity_error()
        logger.warning("hidden: error verbosity")
        transformers.logging.set_verbosity_warning()
        logger.warning("shown: warning")
        logger.info("hidden: info below warning")
        transformers.logging.set_verbosity_info()
        logger.info("shown: info")
    messages = [(r.name, r.getMessage()) for r in caplog.records if r.name in (probe.name, module_logger.name)]
    assert messages == [(name, m) for name in (probe.name, module_logger.name) for m in ("shown: warning", "shown: info")]
    assert transformers_verbosity() == transformers.logging.get_verbosity() == logging.INFO


def test_verbosity_is_read_without_importing_transformers():
    code = ("import os, sys; os.environ['TRANSFORMERS_VERBOSITY'] = 'error'\n"
            "from hf_ext.utils.logging import transformers_verbosity, set_verbosity\n"
            "assert transformers_verbosity() == 40 and 'transformers' not in sys.modules\n"
            "set_verbosity(20)\n"  # hf-ext -v before transformers is imported: holds after its import
            "import transformers\n"
            "assert transformers.logging.get_verbosity() == 20 == transformers_verbosity()\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_set_verbosity_rejects_a_non_level(restore_verbosity):
    with pytest.raises(ValueError, match="level=15 is not a logging level"):
        set_verbosity(15)


def _py_files():
    return sorted(p for p in HF_EXT.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_uses_the_hf_ext_logger_family():
    offenders = [str(p.relative_to(HF_EXT)) for p in _py_files() if p.name != "logging.py"
                 and ("logging.getLogger(" in p.read_text() or "logging.get_logger(" in p.read_text())]
    assert not offenders, f"use hf_ext.utils.logging.get_logger(__name__) in {offenders}"


def _library_nodes(tree: ast.Module):
    """The module's code that imports reach: not its ``if __name__ == "__main__":`` block, nor a module-level
    ``main``/``_main`` (what ``python -m <module>`` runs: a script's output is its result)."""
    for node in tree.body:
        is_main_block = (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                         and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")
        is_entry = isinstance(node, ast.FunctionDef) and node.name in ("main", "_main")
        if not (is_main_block or is_entry):
            yield from ast.walk(node)


def test_no_print_in_library_code():
    """Only command-line code prints (its output is the command's result)."""
    cli_modules = {"cli.py", "runner.py"}  # every */cli.py, hf_ext/utils/cli.py, and the tour's CLI (tour/runner.py)
    offenders = []
    for path in _py_files():
        if path.name in cli_modules:
            continue
        for node in _library_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(HF_EXT)}:{node.lineno}")
    assert not offenders, f"print() in library code (log it, or return it): {offenders}"
