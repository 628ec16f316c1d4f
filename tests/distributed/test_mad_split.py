"""The MAD runner splits its jobs across processes (``split_between_processes``): 2 processes give the table of 1."""

from __future__ import annotations

import json

import pytest

from .launch import launch

pytestmark = [pytest.mark.multiprocess, pytest.mark.xdist_group("multiprocess")]

ARGS = ["--arch", "mA Sg", "--tasks", "CR", "C", "M", "--lrs", "5e-4", "1e-3", "--hidden-size", "16", "--num-heads",
        "2", "--epochs", "1", "--max-steps", "2", "--batch-size", "8", "--set", "num_train_examples=16",
        "num_test_examples=8", "--no-progress"]


def test_two_processes_give_the_table_of_one(tmp_path):
    import pandas as pd

    from hf_ext.cli import main
    from hf_ext.mad.report import load_rows, mad_scores

    launch(["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "hf_ext.cli", "mad", "run", *ARGS, "--out", "two"],
           tmp_path)
    assert main(["mad", "run", *ARGS, "--out", str(tmp_path / "one")]) == 0
    per_rank = {p.name: [json.loads(x) for x in p.read_text().splitlines()] for p in (tmp_path / "two").glob("rows-*")}
    assert sorted(per_rank) == ["rows-0.jsonl", "rows-1.jsonl"] and all(len(r) == 3 for r in per_rank.values())
    assert not {r["job_id"] for r in per_rank["rows-0.jsonl"]} & {r["job_id"] for r in per_rank["rows-1.jsonl"]}
    one, two = load_rows(tmp_path / "one"), load_rows(tmp_path / "two")
    assert len(one) == len(two) == 6
    cols = ["test_acc", "test_loss", "train_loss", "steps"]
    pd.testing.assert_frame_equal(one.set_index("job_id").sort_index()[cols], two.set_index("job_id").sort_index()[cols],
                                  check_exact=False, rtol=1e-6)
    pd.testing.assert_frame_equal(mad_scores(one), mad_scores(two), check_exact=False, rtol=1e-6)
    assert json.loads((tmp_path / "two" / "results.json").read_text())  # the main process merged both ranks' rows
