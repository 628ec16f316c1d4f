"""hf_ext.core.sharding on 3 CPU processes (uneven shards): tiny causal LMs of five families, tied weights, u-μP's
optimizer groups and checkpoints of a sharded run (sharding_worker.py does the work, this test asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .launch import launch

pytestmark = [pytest.mark.multiprocess, pytest.mark.xdist_group("multiprocess")]

WORKER = Path(__file__).with_name("sharding_worker.py")


def test_sharded_training_matches_the_unsharded_reference_on_three_processes(tmp_path):
    launch(["torchrun", "--standalone", "--nproc_per_node", "3", str(WORKER), str(tmp_path / "r.json"),
            str(tmp_path)], tmp_path)
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["world_size"] == 3
    for name, r in result["families"].items():
        rep = r["report"]
        assert r["all_dtensor"] and rep["dtensor_parameters"] == rep["parameters"], name
        assert rep["global_numel"] / 3 <= rep["local_numel"] < 0.36 * rep["global_numel"], name
        assert r["losses"] == pytest.approx(r["ref_losses"], rel=1e-5), name
        assert r["max_weight_diff"] < 1e-4, name  # 2 AdamW steps at lr 1e-3 vs the unsharded full batch
        assert r["copy_class"] == r["ref_class"] and r["same_keys"] and r["same_shapes_dtypes"], name
        assert r["copy_max_diff"] == r["max_weight_diff"] and r["copy_logits_diff"] < 1e-4, name
        assert r["tied_after"] == r["tied_before"], name
    assert result["families"]["gpt2_tied"]["tied_before"]
    assert "already sharded" in result["errors"]["twice"]
    assert "lm_head.weight" in result["errors"]["tied_units"] and "tied" in result["errors"]["tied_units"]
    umup = result["umup"]
    assert umup["same_groups"] and umup["all_dtensor"]
    assert len({g[1] for g in umup["groups"]}) >= 3  # per-role LRs
    assert all(g[2] == pytest.approx(0.1 / g[1]) for g in umup["groups"])  # independent weight decay wd / lr_group
    ckpt = result["checkpoint"]
    assert ckpt["step"] == 1 and ckpt["same_params"] and ckpt["same_moments"] and ckpt["shard_like_plain"]
    assert "(4, 3)" in ckpt["shape_error"]
