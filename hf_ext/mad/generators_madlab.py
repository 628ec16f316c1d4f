"""MAD generators in ``mode="madlab"``: byte-identical to ``athms/mad-lab:mad/data/instances.py@0f49a45`` as its
``train.py`` drives them (one ``default_rng(seed)`` stream for train then test; see :mod:`hf_ext.mad.generators`).

Example:
    >>> from hf_ext.mad.config import baseline
    >>> x, y = MadlabStream(baseline("compression", num_train_examples=2)).draw(2, True)
    >>> x.shape
    (2, 32)
"""

from __future__ import annotations

import functools
from itertools import permutations

import numpy as np

from .config import IGNORE_INDEX, MADTaskConfig
from .layout import copy_layout, generate_kv_map, progress_bar

__all__ = ["MadlabStream"]


@functools.lru_cache(maxsize=32)
def _perm_table(lo: int, hi: int, m: int) -> np.ndarray:
    """``np.array(list(permutations(range(lo, hi), m)))`` (cached, read-only) ``[n, m]``."""
    n_tok = hi - lo
    count = 1
    for i in range(m):
        count *= n_tok - i
    table = np.fromiter((t for p in permutations(range(lo, hi), m) for t in p), dtype=np.int64, count=count * m)
    table = table.reshape(count, m)
    table.flags.writeable = False
    return table


def _recall_madlab(cfg: MADTaskConfig, rng: np.random.Generator, n: int, is_training: bool, bar) -> tuple:
    V, L, mq, fn, nvs = cfg.vocab_size, cfg.seq_len, cfg.multi_query, cfg.frac_noise, cfg.noise_vocab_size
    nsv = (V if mq else V - 1) - nvs
    nk, v0 = nsv // 2, nsv // 2
    nvv = nsv - nk
    P = L // 2
    out_len = cfg.output_length
    X = np.empty((n, out_len), dtype=np.int64)
    Y = np.empty((n, out_len), dtype=np.int64)
    integers, random = rng.integers, rng.random
    ign = IGNORE_INDEX
    for e in range(n):
        not_noise = int(integers(0, P))
        seq: list[int] = []
        tgt: list[int] = []
        kv: dict[int, int] = {}
        for i in range(P - 1):
            if fn > 0 and i != not_noise and random() < fn:
                a, b = integers(0, nvs, size=2).tolist()
                seq += (nsv + a, nsv + b)
                tgt += (ign, ign)
                continue
            k = int(integers(0, nk))
            v = kv.get(k)
            if v is None:
                v = v0 + int(integers(0, nvv))
                kv[k] = v
                tgt += (ign, ign)
            else:
                tgt += (ign, v if mq else ign)
            seq += (k, v)
        keys = list(kv)
        if not keys:  # all slots were noise: the reference's rng.choice([]) fails the same way
            raise ValueError("a cannot be empty unless no samples are taken")
        kp = keys[int(integers(0, len(keys)))]
        vp = kv[kp]
        if not mq:
            seq.append(V - 1)
            tgt.append(ign)
        seq += (kp, vp)
        tgt += (ign, vp)
        X[e] = seq[:-1]
        Y[e] = seq[1:] if is_training else tgt[1:]
        bar.update(1)
    return X, Y


def _fuzzy_madlab(cfg: MADTaskConfig, rng: np.random.Generator, n: int, is_training: bool, bar) -> tuple:
    V, L, mq, fn, nvs = cfg.vocab_size, cfg.seq_len, cfg.multi_query, cfg.frac_noise, cfg.noise_vocab_size
    km, vm = cfg.k_motif_size, cfg.v_motif_size
    pad = V - 1 if mq else V - 2
    nsv = (V - 1 if mq else V - 2) - nvs
    kv_lo, kv_hi, vv_lo, vv_hi = 0, nsv // 2, nsv // 2, nsv
    k_sizes = list(range(1, km + 1)) if is_training else [km]
    v_sizes = list(range(1, vm + 1))
    k_tables = {m: _perm_table(kv_lo, kv_hi, m) for m in k_sizes}
    v_tables = {m: _perm_table(vv_lo, vv_hi, m) for m in v_sizes}
    integers, random, shuffle = rng.integers, rng.random, rng.shuffle
    ign = IGNORE_INDEX
    X = np.empty((n, L), dtype=np.int64)
    Y = np.empty((n, L), dtype=np.int64)
    for e in range(n):
        # per-instance shuffles of the permutation lists: shuffle index arrays (identical draws)
        k_perm, v_perm = {}, {}
        for m in k_sizes:
            p = np.arange(len(k_tables[m]))
            shuffle(p)
            k_perm[m] = p
        for m in v_sizes:
            p = np.arange(len(v_tables[m]))
            shuffle(p)
            v_perm[m] = p

        def draw_k(m, k_perm=k_perm):
            return tuple(k_tables[m][k_perm[m][integers(0, len(k_perm[m]))]].tolist())

        def draw_v(m, v_perm=v_perm):
            return tuple(v_tables[m][v_perm[m][integers(0, len(v_perm[m]))]].tolist())

        k_probe_size = k_sizes[int(integers(0, len(k_sizes)))] if is_training else km
        v_probe_size = v_sizes[int(integers(0, len(v_sizes)))]
        k_probe = draw_k(k_probe_size)
        v_probe = draw_v(v_probe_size)
        kvp = k_probe_size + v_probe_size
        probe_idx = int(integers(0, L - kvp - kvp))
        probe_added = False
        kv_map: dict[int, dict] = {s: {} for s in range(1, km + 1)}
        seq: list[int] = []
        tgt: list[int] = []
        presented: dict[tuple, tuple] = {}
        limit = L - kvp - (km + vm)
        while len(seq) < limit:
            k_size = k_sizes[int(integers(0, len(k_sizes)))] if is_training else km
            v_size = v_sizes[int(integers(0, len(v_sizes)))]
            if len(seq) >= probe_idx and not probe_added:
                seq += k_probe
                seq += v_probe
                tgt += [ign] * (k_probe_size + len(v_probe))
                kv_map[k_probe_size][k_probe] = v_probe
                presented[k_probe] = v_probe
                probe_added = True
                continue
            if fn > 0 and random() < fn:
                ns = k_size + v_size
                seq += (nsv + integers(0, nvs, size=ns)).tolist()
                tgt += [ign] * ns
                continue
            k = draw_k(k_size)
            seq += k
            if k == k_probe:
                v = v_probe
                probe_added = True
            elif k not in kv_map[k_size]:
                v = draw_v(v_size)
                kv_map[k_size][k] = v
            else:
                v = kv_map[k_size][k]
            seq += v
            tgt += [ign] * k_size
            if k in presented and mq:
                tgt += v
            else:
                tgt += [ign] * len(v)
            presented[k] = v
        if not mq:
            seq.append(V - 1)
            tgt.append(ign)
        seq += k_probe
        seq += v_probe
        tgt += [ign] * k_probe_size
        tgt += v_probe
        n_pad = L + 1 - len(seq)
        if n_pad > 0:
            seq = [pad] * n_pad + seq
            tgt = [ign] * n_pad + tgt
        X[e] = seq[:-1]
        Y[e] = seq[1:] if is_training else tgt[1:]
        bar.update(1)
    return X, Y


def _memorization_madlab(cfg: MADTaskConfig, rng: np.random.Generator, n: int, kv: np.ndarray, bar) -> tuple:
    V, L, fn, nvs = cfg.vocab_size, cfg.seq_len, cfg.frac_noise, cfg.noise_vocab_size
    P = L // 2
    nsv = V - 1 - nvs
    keys, lut = kv[:, 0], np.full(V, IGNORE_INDEX, dtype=np.int64)
    lut[kv[:, 0]] = kv[:, 1]
    X = np.empty((n, L), dtype=np.int64)
    Y = np.empty((n, L), dtype=np.int64)
    integers, random = rng.integers, rng.random
    for e in range(n):
        not_noise = int(integers(0, P))
        if fn <= 0:
            k = keys[integers(0, len(keys), size=P)]
            X[e, 0::2], X[e, 1::2] = k, V - 1
            Y[e, 0::2], Y[e, 1::2] = IGNORE_INDEX, lut[k]
        else:
            row_x, row_y = [], []
            for i in range(P):
                if i != not_noise and random() < fn:
                    row_x += (nsv + integers(0, nvs, size=2)).tolist()
                    row_y += [IGNORE_INDEX, IGNORE_INDEX]
                else:
                    k = int(keys[integers(0, len(keys))])
                    row_x += [k, V - 1]
                    row_y += [IGNORE_INDEX, int(lut[k])]
            X[e], Y[e] = row_x, row_y
        bar.update(1)
    return X, Y


def _compression_madlab(cfg: MADTaskConfig, rng: np.random.Generator, n: int, bar) -> tuple:
    V, L, fn, nvs = cfg.vocab_size, cfg.seq_len, cfg.frac_noise, cfg.noise_vocab_size
    nsv = V - 1 - nvs
    X = np.empty((n, L), dtype=np.int64)
    X[:, -1] = V - 1
    if fn <= 0:  # consecutive equal-bound draws == one vectorised draw
        X[:, :-1] = rng.integers(0, nsv, size=(n, L - 1))
        bar.update(n)
    else:
        for e in range(n):
            X[e, :-1] = rng.integers(0, nsv, size=L - 1)
            for i in range(L - 1):  # mad-lab's noise branch; its masked targets are discarded (dead code)
                if rng.random() < fn:
                    X[e, i] = nsv + rng.integers(0, nvs)
            bar.update(1)
    return X, X.copy()


def _selective_copying_madlab(cfg: MADTaskConfig, rng: np.random.Generator, legacy: np.random.RandomState,
                              n: int, bar) -> tuple:
    ntc = cfg.num_tokens_to_copy
    nb = cfg.seq_len - 2 * ntc - 1
    tokens = rng.integers(0, cfg.vocab_size - 2, size=(n, ntc))
    slots = legacy.randint(0, ntc, size=(n, nb))  # mad-lab: np.random.randint (global RNG), bound ntc (quirk)
    bar.update(n)
    return copy_layout(tokens, slots, cfg)


class MadlabStream:
    """The reference's RNG state across splits: train first, then test from the same generators.

    Args:
        cfg: a ``madlab``-mode task config.
    """

    def __init__(self, cfg: MADTaskConfig):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.legacy = np.random.RandomState(cfg.seed)  # train.py: np.random.seed(seed)
        self.kv = generate_kv_map(cfg.vocab_size - 1, cfg.seed) if cfg.task == "memorization" else None

    def draw(self, n: int, is_training: bool, progress: bool = False, desc: str = "") -> tuple:
        """The next ``n`` examples ``(inputs, targets)`` of the train (``is_training``) or test split."""
        cfg, t = self.cfg, self.cfg.task
        with progress_bar(n, desc or f"{cfg.name} ({'train' if is_training else 'test'})", progress) as bar:
            if t in ("in-context-recall", "noisy-in-context-recall"):
                return _recall_madlab(cfg, self.rng, n, is_training, bar)
            if t == "fuzzy-in-context-recall":
                return _fuzzy_madlab(cfg, self.rng, n, is_training, bar)
            if t == "memorization":
                return _memorization_madlab(cfg, self.rng, n, self.kv, bar)
            if t == "compression":
                return _compression_madlab(cfg, self.rng, n, bar)
            return _selective_copying_madlab(cfg, self.rng, self.legacy, n, bar)
