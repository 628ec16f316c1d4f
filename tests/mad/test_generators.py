"""MAD generators: golden parity hashes, agreement with the transcribed reference, the spec's oracles, determinism,
fast-mode properties and bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest

from hf_ext.mad.config import MAD_TASKS, MADTaskConfig, baseline, benchmark_grid, config_from_name
from hf_ext.mad.generators import arrays_sha256, generate, generate_kv_map, generate_splits, vocab_layout

from .madlab_reference import reference_generate

GOLDEN = {
    "in-context-recall": "a0442f227f9102e3d25bc3a8f5f1581ffbc3197b1799dbe901001367f38521e5",
    "noisy-in-context-recall": "e5fea4c7b7b898137316f36eb14c81875296ba7500dda033ebe65aac40966a46",
    "fuzzy-in-context-recall": "f5d127afdfda7996dfb3e5ba1286b6c7a2070f6414cb550a9651c8592049de34",
    "memorization": "dd6d9d5bb28597890853a06ae91c38c521ff53c41d12a868111fa1d1bef98254",
    "compression": "6e113300c2dd136c1f2eb0bd5c84a86031f7d82e26bc36914e1abaa6bc89dea3",
    "selective-copying": "44e235ce079a7cfa13fcb74e6397c80f6e31feecc2da7aee5a61e16ce0db5d71",
}
SPOT = {
    "in-context-recall": [1, 14, 2, 9, 6, 13, 5, 15, 3, 14, 2, 9],
    "noisy-in-context-recall": [1, 9, 6, 15, 3, 12, 25, 19, 5, 13, 1, 9],
    "fuzzy-in-context-recall": [15, 15, 15, 15, 15, 15, 15, 2, 4, 8, 1, 3],
    "memorization": [115, 255, 4, 255, 77, 255, 19, 255, 37, 255, 82, 255],
    "compression": [10, 3, 11, 4, 3, 11, 9, 10, 14, 5, 12, 4],
}
needs_numpy_246 = pytest.mark.skipif(np.__version__ != "2.4.6", reason=f"golden hashes were computed with numpy 2.4.6 "
                                     f"(numpy only guarantees stream reproducibility per version); found {np.__version__}")


def _small(task, **kw):
    return baseline(task, num_train_examples=64, num_test_examples=16).replace(**kw)


@needs_numpy_246
@pytest.mark.parametrize("task", MAD_TASKS)
def test_golden_hashes_and_spot_checks(task):
    s = generate_splits(_small(task))
    assert arrays_sha256(*s["train"], *s["test"]) == GOLDEN[task]
    if task in SPOT:
        assert s["train"][0][0, :12].tolist() == SPOT[task]
    if task == "in-context-recall":
        y = s["test"][1][0]
        assert y[y != -100][:8].tolist() == [14, 14, 14, 13, 9, 13, 9, 14]


REF_CASES = [
    ("in-context-recall", dict(vocab_size=32, seq_len=64, multi_query=False)),
    ("noisy-in-context-recall", dict(vocab_size=48, seq_len=64, frac_noise=0.8)),
    ("fuzzy-in-context-recall", dict(vocab_size=32, seq_len=64, multi_query=False)),
    ("fuzzy-in-context-recall", dict(vocab_size=40, seq_len=96, k_motif_size=2, noise_vocab_size=8, frac_noise=0.3)),
    ("memorization", dict(vocab_size=64, seq_len=16, noise_vocab_size=8, frac_noise=0.3)),
    ("compression", dict(vocab_size=20, seq_len=16, noise_vocab_size=4, frac_noise=0.3)),
    ("selective-copying", dict(vocab_size=32, seq_len=128, num_tokens_to_copy=32)),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("task,kw", REF_CASES)
def test_madlab_mode_equals_transcribed_reference(task, kw, seed):
    """Independent reference: mad-lab's own per-example loop (list-of-tuples shuffles, global RNG) transcribed."""
    cfg = baseline(task, num_train_examples=8, num_test_examples=4, seed=seed).replace(**kw)
    s = generate_splits(cfg)
    ref = reference_generate(task, seed=seed, **cfg.task_kwargs())
    for ours, theirs in zip((*s["train"], *s["test"]), ref):
        np.testing.assert_array_equal(ours, theirs)


# ----------------------------------------------------------------------------------------------------- oracles
def check_recall(cfg, x, y, train):
    lay = vocab_layout(cfg)
    klo, khi = lay["keys"]
    vlo, vhi = lay["values"]
    V = cfg.vocab_size
    assert x.shape[1] == cfg.output_length and y.shape == x.shape
    assert x.min() >= 0 and x.max() < V
    if train:
        np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
        return
    off = 0 if cfg.multi_query else 1
    for row_x, row_y in zip(x, y):
        assert row_y[-1] != -100
        if not cfg.multi_query:
            assert (row_y[:-1] == -100).all()
            continue
        assert (row_y[1::2] == -100).all()  # values / odd positions never scored
        seen: dict[int, int] = {}
        for i in range(0, len(row_x) - off, 2):
            tok = int(row_x[i])
            nxt = int(row_x[i + 1]) if i + 1 < len(row_x) else None
            is_key = klo <= tok < khi
            if is_key and tok in seen:
                assert row_y[i] == seen[tok]
                assert vlo <= row_y[i] < vhi
            else:
                assert row_y[i] == -100 or i == len(row_x) - 1
            if is_key and nxt is not None:
                assert seen.setdefault(tok, nxt) == nxt  # map consistent within a sequence
        assert vlo <= row_y[-1] < vhi


@pytest.mark.parametrize("mode", ["madlab", "fast"])
def test_recall_oracles_and_counts(mode):
    cfg = baseline("CR", num_train_examples=16, num_test_examples=16, mode=mode)
    s = generate_splits(cfg)
    check_recall(cfg, *s["train"], True)
    check_recall(cfg, *s["test"], False)
    assert ((s["test"][1] != -100).sum(1) == 56).all()  # exactly 56 scored positions at V=16, L=128
    cfg = baseline("CR", seq_len=1024, num_train_examples=2, num_test_examples=4, mode=mode)
    assert ((generate_splits(cfg)["test"][1] != -100).sum(1) == 504).all()
    sq = baseline("CR", multi_query=False, vocab_size=17, seq_len=32, num_train_examples=4, num_test_examples=8, mode=mode)
    s = generate_splits(sq)
    assert s["test"][0].shape == (8, 32)
    check_recall(sq, *s["test"], False)


@pytest.mark.parametrize("mode", ["madlab", "fast"])
def test_noisy_recall_oracles(mode):
    cfg = baseline("NR", num_train_examples=8, num_test_examples=200, mode=mode)
    x, y = generate_splits(cfg)["test"]
    check_recall(cfg, x, y, False)
    noise = x >= cfg.vocab_size - cfg.noise_vocab_size
    assert (y[noise] == -100).all() and noise.any()
    assert abs((y != -100).sum(1).mean() - 43.5) < 2.0
    hi = baseline("NR", frac_noise=0.8, num_train_examples=8, num_test_examples=200, mode=mode)
    assert abs((generate_splits(hi)["test"][1] != -100).sum(1).mean() - 7.8) < 1.5


@pytest.mark.parametrize("mode", ["madlab", "fast"])
def test_fuzzy_recall_oracles(mode):
    cfg = baseline("FR", num_train_examples=16, num_test_examples=100, mode=mode)
    s = generate_splits(cfg)
    V = cfg.vocab_size
    x, y = s["train"]
    assert x.shape == (16, 128)
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    x, y = s["test"]
    assert x.shape == (100, 128) and x.max() < V
    vlo, vhi = vocab_layout(cfg)["values"]
    for row_x, row_y in zip(x, y):
        assert row_x[0] == V - 1  # left padding
        scored = np.flatnonzero(row_y != -100)
        assert row_y[-1] != -100
        assert ((row_y[scored] >= vlo) & (row_y[scored] < vhi)).all()
        inner = scored[scored < len(row_y) - 1]
        np.testing.assert_array_equal(row_y[inner], row_x[inner + 1])
    assert 3.0 < (y != -100).sum(1).mean() < 6.5  # about 4.5 per sequence


@pytest.mark.parametrize("mode", ["madlab", "fast"])
def test_selective_copying_oracles(mode):
    cfg = baseline("SC", vocab_size=32, seq_len=128, num_tokens_to_copy=24, num_train_examples=32,
                   num_test_examples=8, mode=mode)
    V, ntc = cfg.vocab_size, cfg.num_tokens_to_copy
    c = cfg.seq_len - ntc - 1
    for x, y in generate_splits(cfg).values():
        assert x.shape[1] == cfg.seq_len
        for row_x, row_y in zip(x, y):
            assert row_x[c] == V - 1 and (row_x[c + 1:] == V - 2).all() and (row_y[:c + 1] == -100).all()
            content = row_x[:c][row_x[:c] != V - 2]
            assert len(content) == ntc
            np.testing.assert_array_equal(row_y[c + 1:], content)
            assert row_x[c - 1] == row_y[-1]  # the reference quirk: last content token next to the copy token


@pytest.mark.parametrize("mode", ["madlab", "fast"])
def test_compression_oracles(mode):
    cfg = baseline("C", num_train_examples=16, num_test_examples=8, mode=mode)
    for x, y in generate_splits(cfg).values():
        V = cfg.vocab_size
        assert (x[:, -1] == V - 1).all() and (x[:, :-1] < V - 1).all()
        np.testing.assert_array_equal(x, y)


def test_compression_noise_fix_in_fast_mode_only():
    kw = dict(noise_vocab_size=4, frac_noise=0.3, vocab_size=20, num_train_examples=16, num_test_examples=4)
    x, y = generate_splits(baseline("C", **kw))["train"]
    np.testing.assert_array_equal(x, y)  # mad-lab returns inputs, inputs (dead-code bug kept)
    x, y = generate_splits(baseline("C", mode="fast", **kw))["train"]
    noise = (x >= 15) & (x < 19)
    assert noise.any() and (y[noise] == -100).all() and (y[~noise] == x[~noise]).all()


@pytest.mark.parametrize("mode", ["madlab", "fast"])
def test_memorization_oracles_and_coverage(mode):
    cfg = baseline("M", num_train_examples=32, num_test_examples=16, mode=mode)
    kv = generate_kv_map(cfg.vocab_size - 1, cfg.seed)
    assert len(kv) == 127 and len(set(kv[:, 0])) == 127 and len(set(kv[:, 1])) == 127  # bijection
    lut = dict(kv.tolist())
    for x, y in generate_splits(cfg).values():
        assert (x[:, 1::2] == 255).all() and (y[:, 0::2] == -100).all()
        assert all(lut[int(k)] == int(v) for k, v in zip(x[:, 0::2].ravel(), y[:, 1::2].ravel()))


def test_memorization_key_coverage_matches_spec():
    for V, cov in ((2048, 0.988), (4096, 0.871), (8192, 0.640)):
        s = generate_splits(baseline("M", vocab_size=V))
        seen = np.unique(s["train"][0][:, 0::2])
        assert abs(np.isin(s["test"][0][:, 0::2], seen).mean() - cov) < 0.002


# ------------------------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("task", MAD_TASKS)
def test_fast_mode_determinism_random_access_and_train_size_independence(task):
    cfg = baseline(task, num_train_examples=40, num_test_examples=12, mode="fast")
    if task == "fuzzy-in-context-recall":
        cfg = cfg.replace(seq_len=64)
    a, b = generate_splits(cfg), generate_splits(cfg)
    for s in ("train", "test"):
        np.testing.assert_array_equal(a[s][0], b[s][0])
    other = generate_splits(cfg.replace(num_train_examples=7))
    np.testing.assert_array_equal(other["test"][0], a["test"][0])  # test split independent of the train size
    np.testing.assert_array_equal(other["train"][0], a["train"][0][:7])  # train prefix
    x, _ = generate(cfg, "train", 30, 33)
    np.testing.assert_array_equal(x, a["train"][0][30:33])
    assert not np.array_equal(generate_splits(cfg.replace(seed=1))["train"][0], a["train"][0])


def test_madlab_mode_test_split_depends_on_train_size_and_seed():
    cfg = baseline("CR", num_train_examples=8, num_test_examples=4)
    a = generate_splits(cfg)
    np.testing.assert_array_equal(generate(cfg, "test")[0], a["test"][0])
    assert not np.array_equal(generate_splits(cfg.replace(num_train_examples=9))["test"][0], a["test"][0])
    assert not np.array_equal(generate_splits(cfg.replace(seed=0))["train"][0], a["train"][0])
    np.testing.assert_array_equal(generate(cfg, "train", 2, 5)[0], a["train"][0][2:5])


# ------------------------------------------------------------------------------------------------------- grid
def test_benchmark_grid():
    grid = benchmark_grid()
    assert len(grid) == 66 and len({c.name for c in grid}) == 66
    counts = {t: sum(c.task == t for c in grid) for t in MAD_TASKS}
    assert counts == {"in-context-recall": 11, "noisy-in-context-recall": 14, "fuzzy-in-context-recall": 11,
                      "memorization": 6, "compression": 11, "selective-copying": 13}
    names = {c.name for c in grid}
    assert {"CR_vs-16_sl-128_ntr-12800", "CR_vs-64_sl-128_ntr-12800", "NR_vs-144_sl-128_ntr-12800_fn-0.2",
            "SC_vs-16_sl-256_ntr-12800_ntc-96", "M_vs-8192_sl-32_ntr-256", "FR_vs-16_sl-1024_ntr-12800"} <= names
    assert all(c.num_test_examples == 1280 and c.seed == 12345 for c in grid)
    assert baseline("CR").madlab_path == "t-CR_vs-16_sl-128_ntr-12800_nte-1280_km-1_vm-1_mq-1_fn-0#0_nvs-0_ntc-0_s-12345"
    assert baseline("NR").madlab_path == "t-NR_vs-32_sl-128_ntr-12800_nte-1280_km-1_vm-1_mq-1_fn-0#2_nvs-16_ntc-0_s-12345"
    assert config_from_name("SC_vs-16_sl-256_ntr-12800_ntc-64").num_tokens_to_copy == 64
    assert config_from_name("CR", seed=0).name == "CR_vs-16_sl-128_ntr-12800_s-0"
    cfg = baseline("FR", mode="fast")
    assert MADTaskConfig.from_dict(cfg.to_dict()) == cfg and cfg.name.endswith("_fast")


# -------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,match", [
    (dict(task="nope"), "unknown MAD task"),
    (dict(task="in-context-recall", seq_len=127), "must be even"),
    (dict(task="in-context-recall", vocab_size=1), "too small"),
    (dict(task="noisy-in-context-recall", vocab_size=16, noise_vocab_size=16, frac_noise=0.2), "too small"),
    (dict(task="noisy-in-context-recall", vocab_size=32, frac_noise=0.2), "noise_vocab_size > 0"),
    (dict(task="in-context-recall", frac_noise=1.0, noise_vocab_size=4), "frac_noise"),
    (dict(task="fuzzy-in-context-recall", vocab_size=6, k_motif_size=3, v_motif_size=3), "too small"),
    (dict(task="fuzzy-in-context-recall", seq_len=12, k_motif_size=3, v_motif_size=3), "2 \\* \\(k_motif_size"),
    (dict(task="selective-copying", seq_len=32, num_tokens_to_copy=16), "2 \\* num_tokens_to_copy \\+ 1"),
    (dict(task="selective-copying", vocab_size=2, num_tokens_to_copy=4), "copy and blank"),
    (dict(task="memorization", vocab_size=2), "too small"),
    (dict(task="compression", vocab_size=1), "too small"),
    (dict(task="compression", mode="slow"), "unknown generator mode"),
])
def test_bad_settings_raise_naming_the_constraint(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MADTaskConfig(**kwargs)


def test_bad_calls():
    with pytest.raises(ValueError, match="unknown MAD setting"):
        baseline("CR").replace(vocab=3)
    with pytest.raises(ValueError, match="unknown split"):
        generate(baseline("CR", num_train_examples=2), "validation")
    with pytest.raises(ValueError, match="outside"):
        generate(baseline("CR", num_train_examples=2), "train", 0, 3)
    with pytest.raises(ValueError, match="unknown MAD task or config name"):
        config_from_name("CR_vs-17")
    with pytest.raises(TypeError):
        generate_splits({"task": "CR"})
    with pytest.raises(TypeError, match="vocab_size"):
        MADTaskConfig(vocab_size=16.5)
