"""Multi-query associative recall (MQAR, Arora, Eyuboglu et al., "Zoology", ICLR 2024), the seventh MAD task.

Byte-identical to ``multiquery_ar`` of ``HazyResearch/zoology`` (``zoology/data/multiquery_ar.py`` at
``d88d6f5474f36998d82d5c3bd58a190248d0a669``, ``num_passes=1``) when torch's RNG is seeded with the segment seed
right before the call (zoology draws the filler tokens from torch's *global* generator and leaves seeding it to
the caller; here a private ``torch.Generator`` seeded with the same seed gives the same stream).

Layout of one example (``L = seq_len``, ``k = num_kv_pairs``, ``V = vocab_size``):

- positions ``0 .. 2k-1``: ``k`` key-value pairs ``key_1 value_1 … key_k value_k``; keys are ``k`` distinct ids of
  ``[1, V // 2)``, values ``k`` distinct ids of ``[V // 2, V)`` (id 0 is the filler id before filling);
- the query region ``2k .. L-1``: each key queried once, at position ``2k + 2 g_i`` where the gaps ``g`` are ``k``
  distinct draws of ``[0, (L - 2k) // 2)`` from the power law ``p(g) ∝ a · (g + 1) ** (a - 1)`` (``a =
  power_a``; ``a = 1`` is uniform, small ``a`` puts queries close to the context); the target at a query position is
  its value (``-100`` elsewhere: the targets are already aligned with the inputs, predict ``targets[t]`` from
  ``inputs[:t+1]``);
- every other query-region position holds a filler token: 0 when ``random_non_queries=False``, else a uniform id of
  ``[0, V)``.

**The key/value overwrite behaviour (zoology issue #29).** With ``random_non_queries=True`` the fillers are drawn
from the *whole* vocabulary, so a filler can be one of the example's keys (an un-labelled "re-occurrence" of the key,
followed by a random token, before or after its query) or a value. Read as "the latest occurrence of a key
defines its value", such a filler pair overwrites the context pair; MQAR's labels keep the *context* value. We keep
this behaviour, because byte parity with zoology (and thereby comparability with published MQAR numbers) depends on
it; :func:`mqar_filler_collisions` counts the affected queries so that a user can measure it (at the zoology
defaults ``V = 8192, L = 64, k = 4`` 2.6 % of the examples contain one of their keys among their fillers,
measured on 20 000 examples of seed 1), and
``random_non_queries=False`` removes it (fillers are 0, never a key or value).

Example:
    >>> x, y = mqar_arrays(vocab_size=64, num_examples=2, seq_len=16, num_kv_pairs=2, seed=0,
    ...                    random_non_queries=False)
    >>> x[0].tolist()
    [3, 54, 30, 59, 30, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    >>> y[0].tolist()
    [-100, -100, -100, -100, 59, -100, 54, -100, -100, -100, -100, -100, -100, -100, -100, -100]
"""

from __future__ import annotations

import numpy as np

from .config import IGNORE_INDEX, MADTaskConfig, validate_mqar

__all__ = ["mqar_arrays", "mqar_filler_collisions", "mqar_segment_seeds", "mqar_split"]


def mqar_segment_seeds(seed: int) -> dict[str, int]:
    """The per-split segment seeds of data seed ``seed``, drawn as zoology's ``prepare_data`` draws them for one
    train and one test segment (train from ``[0, 2**31)``, test from ``[2**31, 2**32)``: never equal).

    Example:
        >>> s = mqar_segment_seeds(123)
        >>> s["train"] < 2**31 <= s["test"]
        True
    """
    rs = np.random.RandomState(seed)
    train = int(rs.randint(0, 2**31, size=1)[0])
    test = int(rs.randint(2**31, 2**32, size=1)[0])
    return {"train": train, "test": test}


def mqar_arrays(vocab_size: int, num_examples: int, seq_len: int, seed: int, num_kv_pairs: int = 8,
                power_a: float = 0.01, random_non_queries: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One MQAR segment: ``(inputs, targets)``, both ``int64 [num_examples, seq_len]``, ``-100`` = ignored.

    Args:
        vocab_size: ``V`` (keys ``[1, V//2)``, values ``[V//2, V)``; zoology's paper uses 8192).
        num_examples: rows.
        seq_len: ``L`` (even, ``< V``, ``>= 4 * num_kv_pairs``).
        seed: the segment seed (numpy's legacy ``RandomState`` for keys, values and gaps; a torch generator for
            the fillers).
        num_kv_pairs: ``k`` pairs per example, each queried once.
        power_a: power-law exponent of the query gaps (see the module docstring).
        random_non_queries: fill non-query positions with uniform ids of ``[0, V)`` (zoology's default) or 0.

    Raises:
        ValueError: a violated constraint (see :func:`validate_mqar`) or ``num_examples < 1``.

    Example:
        >>> x, y = mqar_arrays(8192, num_examples=3, seq_len=64, seed=1, num_kv_pairs=4)
        >>> x.shape, int((y != -100).sum(axis=1)[0])
        ((3, 64), 4)
    """
    validate_mqar(vocab_size, seq_len, num_kv_pairs, power_a)
    if num_examples < 1:
        raise ValueError(f"num_examples={num_examples!r} must be >= 1")
    n, k, half = num_examples, num_kv_pairs, vocab_size // 2
    rs = np.random.RandomState(seed)
    # legacy ``choice(pool, k, replace=False)`` without p is ``pool[permutation(len(pool))[:k]]``; the three
    # draws run in zoology's order (all keys, then all values, then all gaps), one row after the other
    keys = np.stack([1 + rs.permutation(half - 1)[:k] for _ in range(n)]).astype(np.int64)
    values = np.stack([half + rs.permutation(vocab_size - half)[:k] for _ in range(n)]).astype(np.int64)
    slots = (seq_len - 2 * k) // 2
    weights = power_a * np.arange(1, slots + 1) ** (power_a - 1)
    weights = weights / weights.sum()
    gaps = np.stack([rs.choice(slots, size=k, replace=False, p=weights) for _ in range(n)]).astype(np.int64)

    inputs = np.zeros((n, seq_len), dtype=np.int64)
    inputs[:, 0:2 * k:2], inputs[:, 1:2 * k:2] = keys, values
    query_pos = 2 * k + 2 * gaps
    rows = np.arange(n)[:, None]
    inputs[rows, query_pos] = keys
    targets = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int64)
    targets[rows, query_pos] = values
    if random_non_queries:
        import torch

        gen = torch.Generator().manual_seed(seed)
        fill = torch.randint(vocab_size, size=(n, seq_len), generator=gen).numpy()
        free = inputs == 0  # keys and values are >= 1, so 0 marks exactly the filler slots
        inputs[free] = fill[free]
    return inputs, targets


def mqar_filler_collisions(inputs: np.ndarray, targets: np.ndarray, num_kv_pairs: int) -> np.ndarray:
    """Per example, how many of its keys also occur as a *filler* (an unlabelled position of the query region):
    the queries whose key-value pair a "latest occurrence wins" reading would overwrite (zoology issue #29).

    Args:
        inputs, targets: ``[N, L]`` arrays of :func:`mqar_arrays`.
        num_kv_pairs: ``k`` of the setting.

    Returns:
        ``int64 [N]`` counts in ``[0, k]``.

    Example:
        >>> x, y = mqar_arrays(64, num_examples=50, seq_len=32, seed=0, num_kv_pairs=4)
        >>> int(mqar_filler_collisions(x, y, 4).sum()) > 0
        True
        >>> x, y = mqar_arrays(64, num_examples=50, seq_len=32, seed=0, num_kv_pairs=4, random_non_queries=False)
        >>> int(mqar_filler_collisions(x, y, 4).sum())
        0
    """
    x, y = np.asarray(inputs), np.asarray(targets)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"inputs and targets must both be [N, L], got shapes {x.shape} and {y.shape}")
    keys = x[:, 0:2 * num_kv_pairs:2]
    filler = x.copy()
    filler[:, :2 * num_kv_pairs] = -1
    filler[y != IGNORE_INDEX] = -1  # query positions carry the key legitimately
    return (keys[:, :, None] == filler[:, None, :]).any(axis=2).sum(axis=1).astype(np.int64)


def mqar_split(cfg: MADTaskConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole ``split`` (``"train"``/``"test"``) of an MQAR ``cfg``: :func:`mqar_arrays` at the split's segment
    seed (:func:`mqar_segment_seeds` of ``cfg.seed``). Both ``cfg.mode`` values give these bytes: MQAR has a single
    generator, and the test split never depends on the train size.

    Example:
        >>> from hf_ext.mad.config import baseline
        >>> x, y = mqar_split(baseline("MQAR", num_test_examples=5), "test")
        >>> x.shape
        (5, 64)
    """
    n = cfg.num_train_examples if split == "train" else cfg.num_test_examples
    return mqar_arrays(cfg.vocab_size, n, cfg.seq_len, mqar_segment_seeds(cfg.seed)[split], cfg.num_kv_pairs,
                       cfg.power_a, cfg.random_non_queries)
