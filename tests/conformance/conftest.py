"""Conformance tier: options, the committed table (regression baseline) and the results file.

* ``--full`` (or ``HF_EXT_CONFORMANCE_FULL=1``): every type × every feature. Default (CI): the core and DTM cells of
  every type, the other features on a seeded rotating sample of types (``HF_EXT_CONFORMANCE_SEED``, default the ISO
  year and week, so the sample moves every week; printed in the report header).
* ``--conformance-json PATH`` (or ``HF_EXT_CONFORMANCE_JSON``): write every cell's status there
  (``scripts/supported_models.py`` renders it to ``docs/supported_models.md``).
"""

from __future__ import annotations

import json
import os

import pytest

from .catalog import FEATURES
from .table import BASELINE, cells_of_run, write_results

_RESULTS: dict = {}


def pytest_addoption(parser):
    group = parser.getgroup("conformance")
    group.addoption("--full", action="store_true", default=False,
                    help="conformance tier: every model type x every feature (regenerates the support table)")
    group.addoption("--conformance-json", default=None, help="write the conformance cells to this JSON file")


def pytest_report_header(config):
    from .selection import sample_seed

    return f"conformance: {'full matrix' if full_mode(config) else f'CI sample, seed {sample_seed()}'}"


def full_mode(config) -> bool:
    try:
        flag = config.getoption("--full")
    except ValueError:  # this conftest was not an initial one (pytest run from the repository root)
        flag = False
    return bool(flag) or os.environ.get("HF_EXT_CONFORMANCE_FULL", "") not in ("", "0")


def _json_path(config) -> str | None:
    try:
        path = config.getoption("--conformance-json")
    except ValueError:
        path = None
    return path or os.environ.get("HF_EXT_CONFORMANCE_JSON") or None


@pytest.fixture(scope="session")
def committed() -> dict:
    """The committed table (``docs/supported_models.json``): the baseline a passing cell must not fall from."""
    if not BASELINE.exists():
        return {}
    return json.loads(BASELINE.read_text())


def pytest_runtest_logreport(report):
    for name, value in getattr(report, "user_properties", []):
        if name == "conformance_cell":
            _RESULTS[(value["type"], value["feature"])] = value


def pytest_sessionfinish(session):
    path = _json_path(session.config)
    if path and _RESULTS and not hasattr(session.config, "workerinput"):
        write_results(path, cells_of_run(_RESULTS), FEATURES)


def pytest_generate_tests(metafunc):
    if {"model_type", "feature"} <= set(metafunc.fixturenames):
        from .selection import cells

        pairs = cells(full_mode(metafunc.config))
        metafunc.parametrize(
            ("model_type", "feature"),
            [pytest.param(t, f, marks=pytest.mark.xdist_group(t), id=f"{t}-{f}") for t, f in pairs])
