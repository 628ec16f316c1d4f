"""MAD as Hugging Face datasets: builder, load_mad (map-style and streaming), fingerprints, parquet export + dataset
card, Zenodo import, and the collator against transformers' own loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_ext.mad import (
    MADBuilder,
    MADCollator,
    baseline,
    export_parquet,
    from_madlab_npy,
    generate_splits,
    load_mad,
)
from hf_ext.mad.generators import arrays_sha256


def _np(ds, col):
    return ds.with_format("numpy")[:][col]


def test_load_mad_matches_generator_and_is_cached(tmp_path):
    dd = load_mad("in-context-recall", cache_dir=str(tmp_path), num_train_examples=24, num_test_examples=8, seq_len=64)
    ref = generate_splits(baseline("CR", num_train_examples=24, num_test_examples=8, seq_len=64))
    for split in ("train", "test"):
        np.testing.assert_array_equal(_np(dd[split], "input_ids"), ref[split][0])
        np.testing.assert_array_equal(_np(dd[split], "targets"), ref[split][1])
    assert dd["train"].features["input_ids"].length == 63
    again = load_mad("CR", cache_dir=str(tmp_path), split="train", num_train_examples=24, num_test_examples=8, seq_len=64)
    assert again._fingerprint == dd["train"]._fingerprint  # same config -> same fingerprint (cache hit)
    other = load_mad("CR", cache_dir=str(tmp_path), split="train", num_train_examples=24, num_test_examples=8,
                     seq_len=64, seed=1)
    assert other._fingerprint != dd["train"]._fingerprint
    assert not np.array_equal(_np(other, "input_ids"), _np(dd["train"], "input_ids"))
    assert '"numpy_version"' in dd["train"].info.description and '"mode": "madlab"' in dd["train"].info.description


def test_grid_name_and_builder_config_id(tmp_path):
    b = MADBuilder(cache_dir=str(tmp_path), config_name="in-context-recall", seq_len=64)
    assert b.config_id.startswith("in-context-recall-") and b.config_id != "in-context-recall"
    assert "CR_vs-64_sl-128_ntr-12800" in MADBuilder.builder_configs
    assert len(MADBuilder.BUILDER_CONFIGS) == 7 + 66 + 6  # task baselines, the MAD grid, the MQAR settings
    ds = load_mad("M_vs-512_sl-32_ntr-256", split="test", cache_dir=str(tmp_path), num_test_examples=8)
    assert _np(ds, "input_ids").shape == (8, 32) and _np(ds, "input_ids").max() == 511


@pytest.mark.parametrize("mode", ["madlab", "fast"])
def test_streaming_first_rows_equal_materialised(tmp_path, mode):
    kw = dict(num_train_examples=20, num_test_examples=6, mode=mode, cache_dir=str(tmp_path))
    ds = load_mad("selective-copying", split="test", **kw)
    it = load_mad("selective-copying", split="test", streaming=True, **kw)
    rows = [r for _, r in zip(range(4), it)]
    np.testing.assert_array_equal(np.array([r["input_ids"] for r in rows]), _np(ds, "input_ids")[:4])
    np.testing.assert_array_equal(np.array([r["targets"] for r in rows]), _np(ds, "targets")[:4])


def test_fast_mode_sharded_generation(tmp_path):
    import hf_ext.mad.builder as builder_mod

    old = builder_mod.SHARD_ROWS
    builder_mod.SHARD_ROWS = 16
    try:
        b = MADBuilder(cache_dir=str(tmp_path), config_name="compression", mode="fast", num_train_examples=50,
                       num_test_examples=8)
        assert len(b._split_generators(None)[0].gen_kwargs["shards"]) == 4
        b.download_and_prepare()
        x = _np(b.as_dataset(split="train"), "input_ids")
    finally:
        builder_mod.SHARD_ROWS = old
    np.testing.assert_array_equal(x, generate_splits(baseline("C", mode="fast", num_train_examples=50,
                                                              num_test_examples=8))["train"][0])


def test_export_parquet_card_and_hub_style_loading(tmp_path):
    import datasets
    import yaml

    cfgs = [baseline("M", num_train_examples=8, num_test_examples=4), baseline("CR", seq_len=32, num_train_examples=6,
                                                                               num_test_examples=3)]
    out = export_parquet(tmp_path / "export", cfgs, repo_id="me/mad", progress=False)
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert [c["config_name"] for c in front["configs"]] == [c.name for c in cfgs]
    s = generate_splits(cfgs[1])
    assert arrays_sha256(*s["train"], *s["test"]) in card and np.__version__ in card
    assert cfgs[1].madlab_path in card
    ds = datasets.load_dataset(str(out), cfgs[1].name, split="train")  # plain datasets, no hf_ext code
    np.testing.assert_array_equal(_np(ds, "input_ids"), s["train"][0])


def test_from_madlab_npy_roundtrip(tmp_path):
    cfg = baseline("C", num_train_examples=6, num_test_examples=3)
    s = generate_splits(cfg)
    for split, (x, y) in s.items():
        (tmp_path / split).mkdir()
        np.save(tmp_path / split / "inputs.npy", x)
        np.save(tmp_path / split / "targets.npy", y)
    dd = from_madlab_npy(tmp_path)
    np.testing.assert_array_equal(_np(dd["test"], "targets"), s["test"][1])
    with pytest.raises(FileNotFoundError, match="inputs.npy"):
        from_madlab_npy(tmp_path / "missing")


def test_collator_feeds_hf_causal_lm_without_double_shift():
    """transformers' own loss with the collator's shift_labels == CE of logits[t] vs targets[t] (independent formula)."""
    from hf_ext.testing import tiny_causal_lm

    x, y = generate_splits(baseline("CR", seq_len=32, num_train_examples=4, num_test_examples=4))["test"]
    batch = MADCollator()([{"input_ids": a, "targets": b} for a, b in zip(x, y)])
    assert set(batch) == {"input_ids", "labels", "shift_labels"}
    for family in ("llama", "qwen2", "gpt2"):
        model = tiny_causal_lm(family)
        with torch.no_grad():
            out = model(**batch)
            logits = model(input_ids=batch["input_ids"]).logits
        expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["shift_labels"].reshape(-1),
                                                     ignore_index=-100)
        torch.testing.assert_close(out.loss, expected)
        with torch.no_grad():
            wrong = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss  # the silent double shift
        assert not torch.isclose(wrong, expected)


def test_collator_bad_input():
    with pytest.raises(ValueError, match="targets"):
        MADCollator()([{"input_ids": [1, 2]}])
    with pytest.raises(ValueError, match="empty"):
        MADCollator()([])


def test_load_mad_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown MAD task or config name"):
        load_mad("copying", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown MAD setting"):
        load_mad("CR", cache_dir=str(tmp_path), vocab=4)
    with pytest.raises(ValueError, match="unknown split"):
        load_mad("CR", cache_dir=str(tmp_path), split="validation")
    with pytest.raises(ValueError, match="2 \\* num_tokens_to_copy"):
        load_mad("SC", cache_dir=str(tmp_path), seq_len=16)
