"""MQAR: byte parity with zoology's own generator (golden hashes), the task's invariants checked by a naive
per-example loop, the overwrite counter (zoology #29), and the MAD plumbing (config, splits, load_mad)."""

from __future__ import annotations

import numpy as np
import pytest

from hf_ext.mad.config import MQAR, MADTaskConfig, baseline, benchmark_grid, config_from_name
from hf_ext.mad.generators import arrays_sha256, generate, generate_splits, vocab_layout
from hf_ext.mad.generators_mqar import mqar_arrays, mqar_filler_collisions, mqar_segment_seeds

# sha256 of (inputs, labels) as int64 C order, produced by running zoology's own ``multiquery_ar``
# (HazyResearch/zoology@d88d6f5474f36998d82d5c3bd58a190248d0a669, zoology/data/multiquery_ar.py, unmodified; only its
# zoology.config / DataSegment imports stubbed) with numpy 2.4.6 / torch 2.13.0+cpu, calling
# ``torch.manual_seed(seed)`` right before ``multiquery_ar(**setting)`` (zoology leaves torch's RNG to the caller).
ZOOLOGY_COMMIT = "d88d6f5474f36998d82d5c3bd58a190248d0a669"
GOLDEN = [
    (dict(vocab_size=8192, num_examples=64, seq_len=64, seed=0, power_a=0.01, num_kv_pairs=4,
          random_non_queries=True),
     "b3cdb8048e1afb364c1bdef843f8f8c83d2f01e0d94c599a9ab94ca7f5eb47d1",
     "b84101635b8dc6fef84a448ade687da451bcdd7610fba9f7dd12a892f9a31781"),
    (dict(vocab_size=256, num_examples=50, seq_len=128, seed=12345, power_a=0.01, num_kv_pairs=16,
          random_non_queries=True),
     "82fb161cee5c8422e97ef4f11953e16b1ddb5b0bc322366c9fd0e4dd2fe47edc",
     "21b3ed88903c3d952404535de4e3830492c1e5a3bb012d76386bcd67f0caa0da"),
    (dict(vocab_size=1000, num_examples=33, seq_len=256, seed=7, power_a=1.0, num_kv_pairs=32,
          random_non_queries=True),
     "24022bd0239bf168801c2a5dfd7d244688550c5459d56885d71460010d4724c4",
     "c9dda0a5e2cf4d52159f05265b44f045f3d390200de36f1d6567df919187f28e"),
    (dict(vocab_size=130, num_examples=20, seq_len=96, seed=3, power_a=0.5, num_kv_pairs=8,
          random_non_queries=False),
     "1e5b126cf0c633a154da5c9badaf860853d95a5fab3b553cb9b3698c449ea0c6",
     "b962fa171ef77886ecc50a58f7fedf0b1cc63fd4934d6fb9e2c27aacef6c18ac"),
    (dict(vocab_size=8192, num_examples=10, seq_len=512, seed=2**31 + 5, power_a=0.01, num_kv_pairs=64,
          random_non_queries=True),
     "359c7b68b6f635a2bb546e8bbc94f989c1474a357a42e712220ff49be09bfa70",
     "2f447ef2ce573f26b47605a1565802db73d55088820b2c9dfa69ae399f68af0e"),
]
needs_pinned_rngs = pytest.mark.skipif(np.__version__ != "2.4.6", reason="golden hashes computed with numpy 2.4.6")


@needs_pinned_rngs
@pytest.mark.parametrize("setting,x_hash,y_hash", GOLDEN, ids=[f"V{g[0]['vocab_size']}-L{g[0]['seq_len']}" for g in GOLDEN])
def test_byte_parity_with_zoology(setting, x_hash, y_hash):
    s = dict(setting)
    x, y = mqar_arrays(s.pop("vocab_size"), s.pop("num_examples"), s.pop("seq_len"), s.pop("seed"), **s)
    assert x.dtype == y.dtype == np.int64
    assert arrays_sha256(x) == x_hash and arrays_sha256(y) == y_hash


@pytest.mark.parametrize("V,L,k,a,seed", [(8192, 64, 4, 0.01, 0), (300, 200, 25, 1.0, 5), (70, 68, 17, 0.3, 9)])
def test_task_invariants_by_naive_loop(V, L, k, a, seed):
    x, y = mqar_arrays(V, 40, L, seed, num_kv_pairs=k, power_a=a, random_non_queries=False)
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        keys, values = row_x[0:2 * k:2], row_x[1:2 * k:2]
        assert len(set(keys)) == k and all(1 <= t < V // 2 for t in keys)
        assert len(set(values)) == k and all(V // 2 <= t < V for t in values)
        table = dict(zip(keys, values))
        labelled = [(t, tok, lab) for t, (tok, lab) in enumerate(zip(row_x, row_y)) if lab != -100]
        assert sorted(tok for _, tok, _ in labelled) == sorted(keys)  # each key queried exactly once
        for t, tok, lab in labelled:
            assert t >= 2 * k and (t - 2 * k) % 2 == 0 and lab == table[tok]
        assert all(tok == 0 for t, tok in enumerate(row_x) if t >= 2 * k and row_y[t] == -100)


def test_power_law_gaps_closer_for_small_a():
    def mean_gap(a):
        _, y = mqar_arrays(8192, 400, 256, 1, num_kv_pairs=8, power_a=a, random_non_queries=False)
        return float(np.nonzero(y != -100)[1].mean())

    assert mean_gap(0.01) < mean_gap(1.0) - 20  # uniform gaps average the middle of the query region


def test_random_fillers_and_overwrite_counter():
    x0, y0 = mqar_arrays(64, 300, 32, 2, num_kv_pairs=4, random_non_queries=False)
    x1, y1 = mqar_arrays(64, 300, 32, 2, num_kv_pairs=4)
    np.testing.assert_array_equal(y0, y1)  # fillers never move a key, value or query
    keep = x0 != 0
    np.testing.assert_array_equal(x1[keep], x0[keep])
    assert len(np.unique(x1[~keep])) > 40  # uniform ids over [0, 64)
    counts = mqar_filler_collisions(x1, y1, 4)
    naive = [sum(any(x1[i, t] == key and y1[i, t] == -100 for t in range(8, 32)) for key in x1[i, 0:8:2])
             for i in range(len(x1))]
    assert counts.tolist() == naive and counts.sum() > 0
    assert mqar_filler_collisions(x0, y0, 4).sum() == 0


def test_config_splits_and_seeds():
    cfg = baseline("MQAR", num_train_examples=30, num_test_examples=10, seq_len=128, num_kv_pairs=8)
    assert cfg.task == MQAR and cfg.output_length == 128 and cfg.name == "MQAR_vs-8192_sl-128_ntr-30_nkv-8_nte-10"
    s = generate_splits(cfg)
    seeds = mqar_segment_seeds(cfg.seed)
    np.testing.assert_array_equal(s["train"][0], mqar_arrays(8192, 30, 128, seeds["train"], 8)[0])
    np.testing.assert_array_equal(s["test"][1], mqar_arrays(8192, 10, 128, seeds["test"], 8)[1])
    np.testing.assert_array_equal(generate(cfg, "train", 3, 7)[0], s["train"][0][3:7])
    np.testing.assert_array_equal(generate_splits(cfg.replace(num_train_examples=5))["test"][0], s["test"][0])
    np.testing.assert_array_equal(generate_splits(cfg.replace(mode="fast"))["train"][0], s["train"][0])
    assert MADTaskConfig.from_dict(cfg.to_dict()) == cfg
    assert config_from_name(benchmark_grid(["MQAR"])[-1].name).num_kv_pairs == 16
    assert vocab_layout(cfg)["keys"] == (1, 4096)
    assert len(benchmark_grid()) == 66  # the MAD grid is mad-lab's; MQAR's is asked for by name


@pytest.mark.parametrize("kw,match", [
    (dict(vocab_size=64), r"vocab_size=64 must be > seq_len=64"),
    (dict(seq_len=63, vocab_size=100), r"seq_len=63 must be even"),
    (dict(num_kv_pairs=17), r"seq_len=64 must be >= 4 \* num_kv_pairs = 68"),
    (dict(power_a=0.0), r"power_a=0.0 must be > 0"),
    (dict(frac_noise=0.2), r"do not apply to MQAR"),
])
def test_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        baseline("MQAR", **kw)


def test_mqar_fields_rejected_on_other_tasks():
    with pytest.raises(ValueError, match=r"num_kv_pairs.*apply to 'multi-query-associative-recall' only"):
        baseline("CR", num_kv_pairs=4)
    assert "num_kv_pairs" not in baseline("CR").to_dict()  # fingerprints of the MAD tasks predate MQAR


def test_load_mad_mqar(tmp_path):
    from hf_ext.mad.api import load_mad

    ds = load_mad("MQAR", split="test", cache_dir=str(tmp_path), num_train_examples=8, num_test_examples=6,
                  vocab_size=512, seq_len=32)
    assert ds.num_rows == 6
    x, y = generate(baseline("MQAR", num_train_examples=8, num_test_examples=6, vocab_size=512, seq_len=32), "test")
    assert ds["input_ids"] == x.tolist() and ds["targets"] == y.tolist()
