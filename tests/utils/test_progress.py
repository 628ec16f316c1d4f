"""Progress bars show when asked for, unless --no-progress or transformers' settings hide them."""

from __future__ import annotations

import pytest
import transformers
from transformers.utils import logging as hf_logging

from hf_ext.utils.progress import progress_bar, progress_enabled


@pytest.fixture
def restore_transformers():
    verbosity, bars = transformers.logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    yield
    transformers.logging.set_verbosity(verbosity)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()


def _shown(**kwargs) -> bool:
    bar = progress_bar(range(3), **kwargs)
    shown = not bar.disable  # read before iterating: a finished bar closes, which sets disable
    assert list(bar) == [0, 1, 2]  # iterates either way
    return shown


def test_progress_follows_the_flag_and_transformers(restore_transformers):
    transformers.logging.set_verbosity_warning()
    hf_logging.enable_progress_bar()
    assert _shown(enabled=True) and not _shown(enabled=False)
    transformers.logging.set_verbosity_error()
    assert not _shown(enabled=True) and not progress_enabled(True)
    transformers.logging.set_verbosity_info()
    hf_logging.disable_progress_bar()
    assert not _shown(enabled=True)
    hf_logging.enable_progress_bar()
    assert _shown(enabled=True)


def test_disable_is_not_accepted():
    with pytest.raises(TypeError, match="enabled="):
        progress_bar(range(3), disable=True)


def test_library_bars_are_hidden_within_the_block_and_restored(restore_transformers):
    from datasets.utils import logging as ds_logging
    from huggingface_hub.utils import are_progress_bars_disabled

    from hf_ext.utils.progress import library_progress_bars

    hf_logging.enable_progress_bar()
    ds_logging.enable_progress_bar()
    with library_progress_bars(True):  # --no-progress not given: nothing changes
        assert hf_logging.is_progress_bar_enabled() and ds_logging.is_progress_bar_enabled()
    hub_before = are_progress_bars_disabled()
    with library_progress_bars(False):
        assert not hf_logging.is_progress_bar_enabled() and not ds_logging.is_progress_bar_enabled()
        assert are_progress_bars_disabled()
    assert hf_logging.is_progress_bar_enabled() and ds_logging.is_progress_bar_enabled()
    assert are_progress_bars_disabled() == hub_before
