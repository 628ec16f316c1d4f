"""The malformed-input catalogue (issue 19): every case must end in a clear error, none unclear, none silent.

See :mod:`tests.reliability.catalogue` for what counts as clear; the cases live in ``cases_*.py``, one module per
component, and each is a real call of a public entry point.
"""

from __future__ import annotations

import importlib.util

import pytest

from . import cases_core, cases_other, cases_scar, cases_tfree_umup  # noqa: F401 - they register their cases
from .catalogue import CASES

if importlib.util.find_spec("diffusers") is not None:  # the diffusion extra
    from . import cases_diffusion  # noqa: F401

MIN_CASES = 300


def test_catalogue_is_large_enough():
    assert len(CASES) >= MIN_CASES, f"the catalogue has {len(CASES)} cases; issue 19 asks for >= {MIN_CASES}"


@pytest.mark.parametrize("entry", CASES, ids=[c.id for c in CASES])
def test_clear_error(entry):
    try:
        result = entry.call()
    except entry.types as err:
        message = str(err)
        missing = [n for n in entry.needles if n not in message]
        assert not missing, f"unclear {type(err).__name__}: {message!r} does not mention {missing}"
    except Exception as err:  # noqa: BLE001 - any other type is an unclear error
        pytest.fail(f"unclear error: {type(err).__name__}: {err}")
    else:
        pytest.fail(f"silent result: the call returned {result!r:.200}")
