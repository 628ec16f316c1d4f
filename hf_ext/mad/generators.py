"""The six MAD task generators in pure numpy, in two modes (MQAR, the seventh task, has one generator:
:mod:`hf_ext.mad.generators_mqar`, byte-identical to zoology, whatever the mode).

``mode="madlab"``
    Byte-identical to ``athms/mad-lab:mad/data/instances.py@0f49a45`` as ``train.py`` drives it: one
    ``np.random.default_rng(seed)`` generates the train split and then continues for the test split, selective
    copying draws its blank positions from the legacy global RNG seeded by ``np.random.seed(seed)`` (here a private
    ``np.random.RandomState(seed)``), memorization's key-value map comes from its own ``default_rng(seed)``. The
    reference's quirks are kept (see :func:`generate`). Faster than the reference because it draws the same random
    numbers with cheaper calls: ``rng.choice(k)`` is ``rng.integers(0, k)``, consecutive equal-bound draws are one
    vectorised call, and fuzzy recall shuffles an index array into cached permutation tables instead of shuffling
    Python lists of tuples (same Fisher-Yates draws, about 180x faster at vocab 128).
    Consequence of the shared stream: test examples depend on ``num_train_examples``.

``mode="fast"``
    Same distributions, different bytes. Every random number is a counter-based hash of
    ``(seed, task, split, example index, stream, position)`` (splitmix64), so example *i* is a pure function of its
    index: random access, sharding over processes and resumable streaming, and the test split does not depend on the
    train size. CR/NR/SC/C/M are vectorised over examples; fuzzy recall loops per example with a per-example
    ``default_rng([seed, task, split, i])`` but needs no permutation tables (O(1) in the vocab). Two reference bugs are
    fixed in fast mode only: compression with ``frac_noise > 0`` masks the noise targets (mad-lab's dead code returned
    ``inputs, inputs``), and recall's guaranteed non-noise slot is drawn among the real slots.

All arrays are ``int64`` ``[N, output_length]``; ``-100`` marks ignored target positions.

Example:
    >>> from hf_ext.mad.config import baseline
    >>> from hf_ext.mad.generators import generate_splits
    >>> s = generate_splits(baseline("in-context-recall", num_train_examples=4, num_test_examples=2))
    >>> s["train"][0].shape, s["test"][1].shape
    ((4, 127), (2, 127))
    >>> s["train"][0][0, :12].tolist()
    [1, 14, 2, 9, 6, 13, 5, 15, 3, 14, 2, 9]
"""

from __future__ import annotations

import hashlib

import numpy as np

from .config import MQAR, MADTaskConfig
from .generators_fast import SPLIT_IDS, generate_fast  # noqa: F401 - SPLIT_IDS re-exported
from .generators_madlab import MadlabStream
from .generators_mqar import mqar_split
from .layout import generate_kv_map, vocab_layout

SPLITS: tuple[str, ...] = ("train", "test")

__all__ = ["SPLITS", "arrays_sha256", "generate", "generate_kv_map", "generate_splits", "vocab_layout"]


def arrays_sha256(*arrays: np.ndarray) -> str:
    """sha256 over the int64 C-order bytes of ``arrays`` concatenated (the golden-hash rule of the spec).

    Example:
        >>> arrays_sha256(np.zeros(2, dtype=np.int64))[:8]
        '374708ff'
    """
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return h.hexdigest()


def _split_size(cfg: MADTaskConfig, split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; MAD has {list(SPLITS)} (no validation split, as in mad-lab)")
    return cfg.num_train_examples if split == "train" else cfg.num_test_examples


def generate_splits(cfg: MADTaskConfig, progress: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Both splits of ``cfg`` in one pass: ``{"train": (inputs, targets), "test": (inputs, targets)}``.

    In ``madlab`` mode this is mad-lab's ``generate_data``: train first, then test from the same RNG stream.

    Example:
        >>> from hf_ext.mad.config import baseline
        >>> out = generate_splits(baseline("C", num_train_examples=3, num_test_examples=2))
        >>> out["train"][0].shape, bool((out["train"][0] == out["train"][1]).all())
        ((3, 32), True)
    """
    if not isinstance(cfg, MADTaskConfig):
        raise TypeError(f"generate_splits expects a MADTaskConfig, got {type(cfg).__name__}")
    if cfg.task == MQAR:
        return {s: mqar_split(cfg, s) for s in SPLITS}
    if cfg.mode == "madlab":
        stream = MadlabStream(cfg)
        train = stream.draw(cfg.num_train_examples, True, progress)
        test = stream.draw(cfg.num_test_examples, False, progress)
        return {"train": train, "test": test}
    return {s: generate_fast(cfg, s, 0, _split_size(cfg, s), progress=progress) for s in SPLITS}


def generate(cfg: MADTaskConfig, split: str = "train", start: int = 0, stop: int | None = None,
             progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Examples ``[start, stop)`` of one split of ``cfg``: ``(inputs, targets)``, each ``int64 [n, output_length]``.

    Args:
        cfg: the setting (its ``mode`` picks the generator).
        split: ``"train"`` or ``"test"``.
        start, stop: example range (default the whole split). In ``fast`` mode any range is generated directly
            (random access); in ``madlab`` mode the reference stream is replayed from the start (and the test
            split needs the whole train split drawn first); MQAR draws its whole split and slices it.
        progress: show a tqdm bar.

    Raises:
        ValueError: unknown split, or a range outside the split.

    Example:
        >>> from hf_ext.mad.config import baseline
        >>> cfg = baseline("selective-copying", mode="fast", num_train_examples=100)
        >>> x, y = generate(cfg, "train", 10, 12)
        >>> bool((x == generate(cfg, "train")[0][10:12]).all())
        True
    """
    if not isinstance(cfg, MADTaskConfig):
        raise TypeError(f"generate expects a MADTaskConfig, got {type(cfg).__name__}")
    n = _split_size(cfg, split)
    stop = n if stop is None else stop
    if not 0 <= start <= stop <= n:
        raise ValueError(f"example range [{start}, {stop}) is outside the {split} split of {n} examples")
    if cfg.task == MQAR:
        x, y = mqar_split(cfg, split)
        return x[start:stop], y[start:stop]
    if cfg.mode == "fast":
        return generate_fast(cfg, split, start, stop, progress=progress)
    stream = MadlabStream(cfg)
    if split == "test":
        stream.draw(cfg.num_train_examples, True, progress, desc=f"{cfg.name} (replaying train)")
        x, y = stream.draw(stop, False, progress)
    else:
        x, y = stream.draw(stop, True, progress)
    return x[start:stop], y[start:stop]
