"""Every causal-LM type of the installed transformers × every model-agnostic hf_ext feature (issue 17).

Each cell is one test. Its status (pass / n/a / unsupported / fail, see ``cells.py``) is recorded for the support
table; the test fails when the status regresses against the committed ``docs/supported_models.json`` (a pass may
not become anything else, an unsupported may not become a fail), is expected to fail (xfail) where the committed
table already says fail or the type is new (unknown), and is skipped where the feature does not apply.
"""

from __future__ import annotations

import pytest

from .catalog import run_type
from .table import regression

pytestmark = pytest.mark.conformance


def test_cell(model_type, feature, committed, record_property):
    status, detail = run_type(model_type, [feature])[feature]
    record_property("conformance_cell", {"type": model_type, "feature": feature, "status": status, "detail": detail})
    why = regression(committed, model_type, feature, status)
    if why is not None:
        pytest.fail(f"regression: {why}: {detail}")
    known = model_type in committed.get("types", {})
    if status == "fail":
        pytest.xfail(("known failure: " if known else "unknown type (not in the committed table): ") + detail)
    if status == "n/a":
        pytest.skip(f"not applicable: {detail}")
