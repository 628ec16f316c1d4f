"""The six MAD task generators in pure numpy, in two modes.

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

import functools
import hashlib
from itertools import permutations
from typing import Any

import numpy as np

from .config import IGNORE_INDEX, TASK_IDS, MADTaskConfig

SPLITS: tuple[str, ...] = ("train", "test")
SPLIT_IDS = {"train": 1, "test": 2}

__all__ = ["SPLITS", "arrays_sha256", "generate", "generate_kv_map", "generate_splits", "vocab_layout"]


def _progress(total: int, desc: str, enabled: bool):
    from hf_ext.utils.progress import progress_bar

    return progress_bar(total=total, desc=desc, enabled=enabled, leave=False)


# ----------------------------------------------------------------------------------------------------- helpers
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


def arrays_sha256(*arrays: np.ndarray) -> str:
    """sha256 over the int64 C-order bytes of ``arrays`` concatenated (the golden-hash rule of the spec).

    Example:
        >>> arrays_sha256(np.zeros(2, dtype=np.int64))[:8]
        'af5570f5'
    """
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return h.hexdigest()


# ========================================================================================= madlab (parity) mode
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


def _copy_layout(tokens: np.ndarray, slots: np.ndarray, cfg: MADTaskConfig) -> tuple:
    """Place ``tokens [N, ntc]`` after inserting blanks before token j, ``slots [N, nb]`` the insert indices."""
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


def _selective_copying_madlab(cfg: MADTaskConfig, rng: np.random.Generator, legacy: np.random.RandomState,
                              n: int, bar) -> tuple:
    ntc = cfg.num_tokens_to_copy
    nb = cfg.seq_len - 2 * ntc - 1
    tokens = rng.integers(0, cfg.vocab_size - 2, size=(n, ntc))
    slots = legacy.randint(0, ntc, size=(n, nb))  # mad-lab: np.random.randint (global RNG), bound ntc (quirk)
    bar.update(n)
    return _copy_layout(tokens, slots, cfg)


class _MadlabStream:
    """The reference's RNG state across splits: train first, then test from the same generators."""

    def __init__(self, cfg: MADTaskConfig):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.legacy = np.random.RandomState(cfg.seed)  # train.py: np.random.seed(seed)
        self.kv = generate_kv_map(cfg.vocab_size - 1, cfg.seed) if cfg.task == "memorization" else None

    def draw(self, n: int, is_training: bool, progress: bool = False, desc: str = "") -> tuple:
        cfg, t = self.cfg, self.cfg.task
        with _progress(n, desc or f"{cfg.name} ({'train' if is_training else 'test'})", progress) as bar:
            if t in ("in-context-recall", "noisy-in-context-recall"):
                return _recall_madlab(cfg, self.rng, n, is_training, bar)
            if t == "fuzzy-in-context-recall":
                return _fuzzy_madlab(cfg, self.rng, n, is_training, bar)
            if t == "memorization":
                return _memorization_madlab(cfg, self.rng, n, self.kv, bar)
            if t == "compression":
                return _compression_madlab(cfg, self.rng, n, bar)
            return _selective_copying_madlab(cfg, self.rng, self.legacy, n, bar)


# ============================================================================================ fast (counter) mode
_U = np.uint64


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 arrays wrap silently)."""
    x = (x ^ (x >> _U(30))) * _U(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U(27))) * _U(0x94D049BB133111EB)
    return x ^ (x >> _U(31))


class _CounterRNG:
    """Counter-based random numbers: every value is a hash of (key, example index, stream, position)."""

    def __init__(self, seed: int, task_id: int, split_id: int):
        k = np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)
        k = _mix(k ^ _U(0x9E3779B97F4A7C15))
        k = _mix(k ^ _U(task_id * 0x632BE59BD9B4E019 & 0xFFFFFFFFFFFFFFFF))
        self.key = _mix(k ^ _U(split_id * 0x85157AF5 + 0x165667B1))

    def bits(self, idx: np.ndarray, stream: int, width: int) -> np.ndarray:
        base = _mix(self.key ^ (idx.astype(np.uint64) * _U(0xD6E8FEB86659FD93)) ^ _U(stream * 0xA0761D6478BD642F
                                                                                      & 0xFFFFFFFFFFFFFFFF))
        return _mix(base[:, None] + (np.arange(width, dtype=np.uint64) + _U(1)) * _U(0x9E3779B97F4A7C15))

    def integers(self, idx: np.ndarray, stream: int, width: int, high) -> np.ndarray:
        """Uniform ints in ``[0, high)`` ``[N, width]`` (``high`` scalar or ``[N, 1]``), multiply-shift, bias < 2**-32."""
        hi32 = self.bits(idx, stream, width) >> _U(32)
        return ((hi32 * np.asarray(high, dtype=np.uint64)) >> _U(32)).astype(np.int64)

    def random(self, idx: np.ndarray, stream: int, width: int) -> np.ndarray:
        return (self.bits(idx, stream, width) >> _U(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _recall_fast(cfg: MADTaskConfig, r: _CounterRNG, idx: np.ndarray, is_training: bool) -> tuple:
    V, L, mq, fn, nvs = cfg.vocab_size, cfg.seq_len, cfg.multi_query, cfg.frac_noise, cfg.noise_vocab_size
    nsv = (V if mq else V - 1) - nvs
    nk, nvv = nsv // 2, nsv - nsv // 2
    N, S = len(idx), L // 2 - 1
    rows = np.arange(N)[:, None]
    slot = np.arange(S)[None, :]
    keys = r.integers(idx, 1, S, nk)
    table = nk + r.integers(idx, 2, nk, nvv)  # each key's value, drawn once per sequence
    vals = table[rows, keys]
    noise = np.zeros((N, S), dtype=bool)
    if fn > 0:
        guaranteed = r.integers(idx, 3, 1, S)  # fast-mode fix: always one of the S real slots
        noise = (r.random(idx, 4, S) < fn) & (slot != guaranteed)
    first = np.full((N, nk), S, dtype=np.int64)
    ok = ~noise
    np.minimum.at(first, (np.broadcast_to(rows, (N, S))[ok], keys[ok]), np.broadcast_to(slot, (N, S))[ok])
    seen_before = ok & (first[rows, keys] < slot)
    presented = first < S
    count = presented.sum(1)
    pick = (r.random(idx, 5, 1)[:, 0] * count).astype(np.int64)  # uniform over distinct presented keys
    kp = np.argmax(np.cumsum(presented, axis=1) > pick[:, None], axis=1)
    vp = table[np.arange(N), kp]
    tok = np.empty((N, S, 2), dtype=np.int64)
    tok[..., 0], tok[..., 1] = keys, vals
    tg = np.full((N, S, 2), IGNORE_INDEX, dtype=np.int64)
    if mq:
        tg[..., 1] = np.where(seen_before, vals, IGNORE_INDEX)
    if fn > 0:
        nz = nsv + r.integers(idx, 6, 2 * S, nvs).reshape(N, S, 2)
        tok = np.where(noise[..., None], nz, tok)
        tg[noise] = IGNORE_INDEX
    tail = [np.full((N, 1), V - 1)] if not mq else []
    seq = np.concatenate([tok.reshape(N, 2 * S)] + tail + [kp[:, None], vp[:, None]], axis=1)
    tail_t = [np.full((N, 1), IGNORE_INDEX)] if not mq else []
    tgt = np.concatenate([tg.reshape(N, 2 * S)] + tail_t + [np.full((N, 1), IGNORE_INDEX), vp[:, None]], axis=1)
    return seq[:, :-1].copy(), (seq[:, 1:] if is_training else tgt[:, 1:]).copy()


def _fuzzy_fast(cfg: MADTaskConfig, idx: np.ndarray, split_id: int, is_training: bool) -> tuple:
    V, L, mq, fn, nvs = cfg.vocab_size, cfg.seq_len, cfg.multi_query, cfg.frac_noise, cfg.noise_vocab_size
    km, vm = cfg.k_motif_size, cfg.v_motif_size
    pad = V - 1 if mq else V - 2
    nsv = (V - 1 if mq else V - 2) - nvs
    nk, nv = nsv // 2, nsv - nsv // 2
    ign = IGNORE_INDEX
    k_sizes = list(range(1, km + 1)) if is_training else [km]
    X = np.empty((len(idx), L), dtype=np.int64)
    Y = np.empty((len(idx), L), dtype=np.int64)
    tid = TASK_IDS[cfg.task]
    for row, i in enumerate(idx.tolist()):
        # one per-example counter-seeded stream of uniforms, consumed from a Python list (cheap draws)
        rng = np.random.default_rng([cfg.seed, tid, split_id, i])
        pool: list[float] = []
        cur = [0]

        def unif(rng=rng, pool=pool, cur=cur) -> float:
            if cur[0] >= len(pool):
                pool.extend(rng.random(4 * L + 64).tolist())
            cur[0] += 1
            return pool[cur[0] - 1]

        def randint(n, unif=unif) -> int:
            return int(unif() * n)

        def motif(lo, size, m, randint=randint):  # uniform over ordered m-tuples of distinct tokens
            while True:
                t = tuple(lo + randint(size) for _ in range(m))
                if len(set(t)) == m:
                    return t

        k_probe_size = k_sizes[randint(len(k_sizes))]
        v_probe_size = 1 + randint(vm)
        k_probe, v_probe = motif(0, nk, k_probe_size), motif(nk, nv, v_probe_size)
        kvp = k_probe_size + v_probe_size
        probe_idx = randint(L - 2 * kvp)
        probe_added = False
        kv_map: dict = {}
        seq: list[int] = []
        tgt: list[int] = []
        presented: dict = {}
        while len(seq) < L - kvp - (km + vm):
            k_size = k_sizes[randint(len(k_sizes))]
            v_size = 1 + randint(vm)
            if len(seq) >= probe_idx and not probe_added:
                seq += k_probe + v_probe
                tgt += [ign] * kvp
                kv_map[k_probe] = v_probe
                presented[k_probe] = v_probe
                probe_added = True
                continue
            if fn > 0 and unif() < fn:
                seq += [nsv + randint(nvs) for _ in range(k_size + v_size)]
                tgt += [ign] * (k_size + v_size)
                continue
            k = motif(0, nk, k_size)
            if k == k_probe:
                v = v_probe
                probe_added = True
            elif k not in kv_map:
                v = kv_map[k] = motif(nk, nv, v_size)
            else:
                v = kv_map[k]
            seq += k + v
            tgt += [ign] * k_size + (list(v) if (k in presented and mq) else [ign] * len(v))
            presented[k] = v
        if not mq:
            seq.append(V - 1)
            tgt.append(ign)
        seq += k_probe + v_probe
        tgt += [ign] * k_probe_size + list(v_probe)
        n_pad = L + 1 - len(seq)
        seq = [pad] * n_pad + seq
        tgt = [ign] * n_pad + tgt
        X[row] = seq[:-1]
        Y[row] = seq[1:] if is_training else tgt[1:]
    return X, Y


def _memorization_fast(cfg: MADTaskConfig, r: _CounterRNG, idx: np.ndarray) -> tuple:
    V, L, fn, nvs = cfg.vocab_size, cfg.seq_len, cfg.frac_noise, cfg.noise_vocab_size
    kv = generate_kv_map(V - 1, cfg.seed)
    lut = np.full(V, IGNORE_INDEX, dtype=np.int64)
    lut[kv[:, 0]] = kv[:, 1]
    N, P = len(idx), L // 2
    k = kv[:, 0][r.integers(idx, 1, P, len(kv))]
    X = np.empty((N, L), dtype=np.int64)
    Y = np.full((N, L), IGNORE_INDEX, dtype=np.int64)
    X[:, 0::2], X[:, 1::2], Y[:, 1::2] = k, V - 1, lut[k]
    if fn > 0:
        noise = (r.random(idx, 2, P) < fn) & (np.arange(P)[None] != r.integers(idx, 3, 1, P))
        nz = (V - 1 - nvs) + r.integers(idx, 4, 2 * P, nvs).reshape(N, P, 2)
        X3, Y3 = X.reshape(N, P, 2), Y.reshape(N, P, 2)
        X3[noise] = nz[noise]
        Y3[noise] = IGNORE_INDEX
    return X, Y


def _compression_fast(cfg: MADTaskConfig, r: _CounterRNG, idx: np.ndarray) -> tuple:
    V, L, fn, nvs = cfg.vocab_size, cfg.seq_len, cfg.frac_noise, cfg.noise_vocab_size
    nsv = V - 1 - nvs
    X = np.empty((len(idx), L), dtype=np.int64)
    X[:, :-1] = r.integers(idx, 1, L - 1, nsv)
    X[:, -1] = V - 1
    Y = X.copy()
    if fn > 0:  # fast-mode fix of mad-lab's dead code: noise positions are not scored
        noise = r.random(idx, 2, L - 1) < fn
        X[:, :-1] = np.where(noise, nsv + r.integers(idx, 3, L - 1, nvs), X[:, :-1])
        Y[:, :-1] = np.where(noise, IGNORE_INDEX, X[:, :-1])
    return X, Y


def _selective_copying_fast(cfg: MADTaskConfig, r: _CounterRNG, idx: np.ndarray) -> tuple:
    ntc = cfg.num_tokens_to_copy
    nb = cfg.seq_len - 2 * ntc - 1
    tokens = r.integers(idx, 1, ntc, cfg.vocab_size - 2)
    slots = r.integers(idx, 2, nb, ntc)  # same insert distribution as mad-lab (and its last-token leak)
    return _copy_layout(tokens, slots, cfg)


def _fast(cfg: MADTaskConfig, split: str, start: int, stop: int, block: int = 2048, progress: bool = False):
    r = _CounterRNG(cfg.seed, TASK_IDS[cfg.task], SPLIT_IDS[split])
    is_training = split == "train"
    xs, ys = [], []
    with _progress(stop - start, f"{cfg.name} ({split}, fast)", progress) as bar:
        for b0 in range(start, stop, block):
            idx = np.arange(b0, min(b0 + block, stop), dtype=np.int64)
            t = cfg.task
            if t in ("in-context-recall", "noisy-in-context-recall"):
                x, y = _recall_fast(cfg, r, idx, is_training)
            elif t == "fuzzy-in-context-recall":
                x, y = _fuzzy_fast(cfg, idx, SPLIT_IDS[split], is_training)
            elif t == "memorization":
                x, y = _memorization_fast(cfg, r, idx)
            elif t == "compression":
                x, y = _compression_fast(cfg, r, idx)
            else:
                x, y = _selective_copying_fast(cfg, r, idx)
            xs.append(x)
            ys.append(y)
            bar.update(len(idx))
    if not xs:
        empty = np.empty((0, cfg.output_length), dtype=np.int64)
        return empty, empty.copy()
    return np.concatenate(xs), np.concatenate(ys)


# ====================================================================================================== public
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
    if cfg.mode == "madlab":
        stream = _MadlabStream(cfg)
        train = stream.draw(cfg.num_train_examples, True, progress)
        test = stream.draw(cfg.num_test_examples, False, progress)
        return {"train": train, "test": test}
    return {s: _fast(cfg, s, 0, _split_size(cfg, s), progress=progress) for s in SPLITS}


def generate(cfg: MADTaskConfig, split: str = "train", start: int = 0, stop: int | None = None,
             progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Examples ``[start, stop)`` of one split of ``cfg``: ``(inputs, targets)``, each ``int64 [n, output_length]``.

    Args:
        cfg: the setting (its ``mode`` picks the generator).
        split: ``"train"`` or ``"test"``.
        start, stop: example range (default the whole split). In ``fast`` mode any range is generated directly
            (random access); in ``madlab`` mode the reference stream is replayed from the start (and the test
            split needs the whole train split drawn first).
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
    if cfg.mode == "fast":
        return _fast(cfg, split, start, stop, progress=progress)
    stream = _MadlabStream(cfg)
    if split == "test":
        stream.draw(cfg.num_train_examples, True, progress, desc=f"{cfg.name} (replaying train)")
        x, y = stream.draw(stop, False, progress)
    else:
        x, y = stream.draw(stop, True, progress)
    return x[start:stop], y[start:stop]
