"""Suite-wide pytest hooks (tests/ and the docstring examples under hf_ext/ alike).

- Tier markers are added by rule, so a test lands in its tier wherever it lives (see TESTING.md): tests in
  ``test_cli*.py`` files and hypothesis property tests get ``cli``; docstring examples get ``docs``.
- A warning issued while a test runs with a frame of hf_ext's own code on the stack fails that test: hf_ext must not
  warn on its normal paths (a test that expects a warning catches it with ``pytest.warns``, which this hook does
  not see).
- ``doctest_namespace`` gives docstring examples ``torch`` and the tiny model factories.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HF_EXT_DIR = str(Path(__file__).resolve().parent / "hf_ext") + os.sep


# ------------------------------------------------------------------------------------------------ tier markers


def _is_property_test(item: pytest.Item) -> bool:
    fn = getattr(item, "obj", None)
    return bool(getattr(fn, "is_hypothesis_test", False))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if type(item).__name__ == "DoctestItem":  # pytest.DoctestItem is not public in every pytest 8.x
            item.add_marker(pytest.mark.docs)
        elif item.path.name.startswith("test_cli") or _is_property_test(item):
            item.add_marker(pytest.mark.cli)


# ------------------------------------------------------------------------------------------------ no warnings from hf_ext


def _hf_ext_frame() -> str | None:
    """``file:line`` of the innermost hf_ext frame on the current stack, if any."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(HF_EXT_DIR):
            return f"{filename[len(HF_EXT_DIR) - len('hf_ext/'):]}:{frame.f_lineno}"
        frame = frame.f_back
    return None


#: Warnings raised inside a third-party library on a path hf_ext calls, that hf_ext cannot avoid: (category, message
#: regex, path fragment of the file the warning is attributed to). Every entry says why; keep it short.
THIRD_PARTY_WARNINGS = [
    # diffusers' schedulers call np.array() on a torch tensor in set_timesteps (torch 2.13 + numpy 2): diffusers'
    # own pipelines warn the same; hf_ext only calls retrieve_timesteps.
    (DeprecationWarning, r"__array__ implementation doesn't accept a copy keyword", "diffusers/schedulers/"),
]


def _third_party(msg) -> bool:
    return any(issubclass(msg.category, cat) and re.search(pattern, str(msg.message)) and where in msg.filename
               for cat, pattern, where in THIRD_PARTY_WARNINGS)


def _watch_phase(item: pytest.Item):
    """Wrap ``warnings._showwarnmsg_impl`` (called for every warning that passes the filters, also from C code) for one
    test phase; returns a function that restores it and lists the offending warnings."""
    offending: list[str] = []
    original = warnings._showwarnmsg_impl

    def show(msg):
        where = _hf_ext_frame()
        if where is not None and not _third_party(msg):
            offending.append(f"{msg.category.__name__}: {msg.message} (issued at {msg.filename}:{msg.lineno}, "
                             f"hf_ext frame {where})")
        original(msg)

    warnings._showwarnmsg_impl = show

    def finish() -> list[str]:
        if warnings._showwarnmsg_impl is show:
            warnings._showwarnmsg_impl = original
        return offending

    return finish


def _phase(item: pytest.Item):
    finish = _watch_phase(item)
    outcome = yield
    offending = finish()
    if offending and outcome.exception is None:
        outcome.force_exception(pytest.fail.Exception(
            "hf_ext code issued warning(s) during this test (fix the cause; expected ones belong in pytest.warns):\n  "
            + "\n  ".join(offending), pytrace=False))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    yield from _phase(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield from _phase(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    yield from _phase(item)


# ------------------------------------------------------------------------------------------------ doctests


@pytest.fixture(autouse=True)
def _doctest_names(request):
    """Docstring examples see ``torch`` and the tiny factories without importing them, run single-threaded and in a
    fresh working folder (examples write files: ``runs/``, ``out/``, plots)."""
    if type(request.node).__name__ != "DoctestItem":
        return
    request.getfixturevalue("monkeypatch").chdir(request.getfixturevalue("tmp_path"))
    import torch

    from hf_ext import testing

    torch.set_num_threads(1)
    namespace = request.getfixturevalue("doctest_namespace")
    namespace.update(torch=torch, tiny_causal_lm=testing.tiny_causal_lm, tiny_tokenizer=testing.tiny_tokenizer)
