"""MAD generators in ``mode="fast"``: the same distributions from counter-based random numbers, so example *i* is a
pure function of ``(seed, task, split, i)`` (random access, sharding, resumable streaming; see
:mod:`hf_ext.mad.generators`).

Example:
    >>> from hf_ext.mad.config import baseline
    >>> cfg = baseline("memorization", mode="fast", num_train_examples=8)
    >>> bool((generate_fast(cfg, "train", 2, 4)[0] == generate_fast(cfg, "train", 0, 8)[0][2:4]).all())
    True
"""

from __future__ import annotations

import numpy as np

from .config import IGNORE_INDEX, TASK_IDS, MADTaskConfig
from .layout import copy_layout, generate_kv_map, progress_bar

__all__ = ["SPLIT_IDS", "generate_fast"]

SPLIT_IDS = {"train": 1, "test": 2}

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
    return copy_layout(tokens, slots, cfg)


def generate_fast(cfg: MADTaskConfig, split: str, start: int, stop: int, block: int = 2048,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Examples ``[start, stop)`` of ``split`` (``"train"``/``"test"``): ``(inputs, targets)`` ``int64 [n, L]``,
    generated ``block`` examples at a time."""
    r = _CounterRNG(cfg.seed, TASK_IDS[cfg.task], SPLIT_IDS[split])
    is_training = split == "train"
    xs, ys = [], []
    with progress_bar(stop - start, f"{cfg.name} ({split}, fast)", progress) as bar:
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
