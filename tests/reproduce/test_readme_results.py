"""The README's result tables equal the committed reports (docs/results/*.json) rendered again."""

from hf_ext.reproduce import readme


def test_readme_tables_are_regenerated_from_the_committed_json():
    found = readme.blocks((readme.ROOT / "README.md").read_text(encoding="utf-8"))
    assert {k[0] for k, _ in found} >= {"atman", "dtm"}
    assert {k[1] for k, _ in found} >= {"smollm2-135m-instruct", "gemma3-270m"}
    assert readme.check() == [], "README result tables differ from docs/results: python -m hf_ext.reproduce.readme --write"


def test_commit_results_drops_per_item_figures(tmp_path):
    import json

    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(json.dumps({"component": "atman", "model": "org/m", "tables": [],
                                                 "figures": {"per_item": [1], "settings": {"a": 1}}}))
    path = readme.commit_results(run, tmp_path / "results")
    assert path.name == "reproduce-atman-org--m.json"
    assert json.loads(path.read_text())["figures"] == {"settings": {"a": 1}}
