"""The README's result tables equal the committed reports (docs/results/*.json) rendered again."""

import json

from hf_ext.reproduce import readme


def test_readme_tables_are_regenerated_from_the_committed_json():
    found = readme.blocks((readme.ROOT / "README.md").read_text(encoding="utf-8"))
    shown = {(k[0], k[1]) for k, _ in found}
    for path in sorted(readme.RESULTS_DIR.glob("reproduce-*.json")):
        data = json.loads(path.read_text())
        assert (data["component"], data["model"]) in shown, f"{path.name} has no table in the README"
    assert readme.check() == [], "README result tables differ from docs/results: python -m hf_ext.reproduce.readme --write"


def test_commit_results_drops_per_item_figures(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(json.dumps({"component": "atman", "model": "org/m", "tables": [],
                                                 "figures": {"per_item": [1], "settings": {"a": 1}}}))
    path = readme.commit_results(run, tmp_path / "results")
    assert path.name == "reproduce-atman-org--m.json"
    assert json.loads(path.read_text())["figures"] == {"settings": {"a": 1}}


def test_stale_tables_are_found(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    table = {"key": "t", "title": "T", "columns": ["a"], "rows": [[1.5]], "formats": [".1f"], "notes": ""}
    (results / "reproduce-dtm-m.json").write_text(json.dumps({"component": "dtm", "model": "m", "tables": [table]}))
    md = tmp_path / "README.md"
    md.write_text("x\n<!-- results: dtm m t -->\n| old |\n<!-- /results -->\n")
    assert readme.check(md, results) == ["dtm m t"]
    assert readme.write(md, results) == 1 and readme.check(md, results) == []
    assert "| 1.5 |" in md.read_text()
