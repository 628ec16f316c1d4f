"""Token layout shared by both MAD generator modes: vocabulary ranges, memorization's key-value map, the
selective-copying layout and the progress bar of a generation run.

Example:
    >>> from hf_ext.mad.config import baseline
    >>> vocab_layout(baseline("selective-copying"))
    {'content': (0, 14), 'blank': 14, 'copy': 15}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .config import IGNORE_INDEX, MADTaskConfig

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["copy_layout", "generate_kv_map", "progress_bar", "vocab_layout"]


def progress_bar(total: int, desc: str, enabled: bool) -> tqdm:
    """A tqdm bar over ``total`` examples (silent unless ``enabled``)."""
    from hf_ext.utils.progress import progress_bar

    return progress_bar(total=total, desc=desc, enabled=enabled, leave=False)


def vocab_layout(cfg: MADTaskConfig) -> dict[str, Any]:
    """Token ranges of ``cfg``: ``keys``/``values``/``noise``/``content`` as ``(lo, hi)`` half-open, plus specials.

    Example:
        >>> from hf_ext.mad.config import baseline
        >>> vocab_layout(baseline("noisy-in-context-recall"))["noise"]
        (16, 32)
    """
    V, nvs, t = cfg.vocab_size, cfg.noise_vocab_size, cfg.task
    if t in ("in-context-recall", "noisy-in-context-recall"):
        nsv = (V if cfg.multi_query else V - 1) - nvs
        out = {"keys": (0, nsv // 2), "values": (nsv // 2, nsv), "noise": (nsv, nsv + nvs)}
        if not cfg.multi_query:
            out["copy_prefix"] = V - 1
        return out
    if t == "fuzzy-in-context-recall":
        nsv = (V - 1 if cfg.multi_query else V - 2) - nvs
        out = {"keys": (0, nsv // 2), "values": (nsv // 2, nsv), "noise": (nsv, nsv + nvs),
               "pad": V - 1 if cfg.multi_query else V - 2}
        if not cfg.multi_query:
            out["copy_prefix"] = V - 1
        return out
    if t == "memorization":
        n = V - 1  # mad-lab's MADConfig builds the map over vocab_size - 1 (noise not subtracted)
        return {"keys": (0, n // 2), "values": (n // 2, n), "noise": (V - 1 - nvs, V - 1), "insert": V - 1}
    if t == "multi-query-associative-recall":  # zoology: id 0 is the filler before filling, keys start at 1
        return {"keys": (1, V // 2), "values": (V // 2, V), "filler": (0, V) if cfg.random_non_queries else (0, 1)}
    if t == "compression":
        return {"content": (0, V - 1 - nvs), "noise": (V - 1 - nvs, V - 1), "compression": V - 1}
    return {"content": (0, V - 2), "blank": V - 2, "copy": V - 1}  # selective-copying


def generate_kv_map(vocab_size: int, seed: int) -> np.ndarray:
    """Memorization's fixed key -> value map (mad-lab ``generate_kv_map(vocab_size, seed=seed)``), as an array.

    Returns:
        ``int64 [n_keys, 2]``: column 0 the keys in mad-lab's (shuffled) order, column 1 their values;
        ``n_keys = vocab_size // 2`` (``zip`` truncates the longer value list).

    Example:
        >>> generate_kv_map(255, 12345).shape
        (127, 2)
    """
    rng = np.random.default_rng(seed)
    keys = np.arange(vocab_size // 2)
    values = np.arange(vocab_size // 2, vocab_size)
    rng.shuffle(keys)  # == rng.shuffle(list(permutations(keys, 1))): same Fisher-Yates draws
    rng.shuffle(values)
    n = min(len(keys), len(values))
    return np.stack([keys[:n], values[:n]], axis=1).astype(np.int64)


def copy_layout(tokens: np.ndarray, slots: np.ndarray, cfg: MADTaskConfig) -> tuple:
    """Selective copying's ``(inputs, targets)`` ``[N, L]``: ``tokens [N, ntc]`` placed after inserting blanks before
    token j for each insert index in ``slots [N, nb]``, then the copy token and the tokens as targets."""
    V, L, ntc = cfg.vocab_size, cfg.seq_len, cfg.num_tokens_to_copy
    N = tokens.shape[0]
    counts = np.zeros((N, ntc), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(N), slots.shape[1]), slots.reshape(-1)), 1)
    pos = np.arange(ntc)[None, :] + np.cumsum(counts, axis=1)  # np.insert puts the blanks before token j
    c = L - ntc - 1
    X = np.full((N, L), V - 2, dtype=np.int64)
    X[np.arange(N)[:, None], pos] = tokens
    X[:, c] = V - 1
    Y = np.full((N, L), IGNORE_INDEX, dtype=np.int64)
    Y[:, c + 1:] = tokens
    return X, Y
