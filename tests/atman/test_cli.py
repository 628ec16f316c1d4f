"""``hf-ext atman explain`` on the built-in tiny model: the --out folder, --json, and the pre-0.2 file flags."""

from __future__ import annotations

import json

import pytest

from hf_ext.cli import main

ARGS = ["atman", "explain", "--prompt", "the cat sat", "--target", " on", "--no-progress"]


def test_explain_writes_html_and_json_into_out(tmp_path, capsys):
    assert main([*ARGS, "--out", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "explanation.json").read_text())
    assert len(printed["units"]) == len("the cat sat") + 1  # character tokens + <s>
    assert "<html" in (tmp_path / "explanation.html").read_text().lower()


def test_pre_0_2_file_flags_still_work(tmp_path):
    with pytest.warns(FutureWarning) as caught:
        assert main([*ARGS, "--out", str(tmp_path / "a.html"), "--json", str(tmp_path / "a.json")]) == 0
    assert (tmp_path / "a.html").is_file() and json.loads((tmp_path / "a.json").read_text())["units"]
    assert sum("is deprecated" in str(w.message) for w in caught) == 2


def test_dataset_writes_jsonl_pages_and_index(tmp_path, capsys):
    from hf_ext.atman import Explanation

    items = [{"prompt": "the cat sat", "target": " on"}, {"prompt": "a <b> dog. it ran", "target": " off", "id": "x",
                                                          "foil": " in", "granularity": "sentence"}]
    data = tmp_path / "items.jsonl"
    data.write_text("\n".join(json.dumps(i) for i in items) + "\n\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["atman", "explain", "--dataset", str(data), "--out", str(out), "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 2
    lines = [json.loads(x) for x in (out / "explanations.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == [1, "x"]
    second = Explanation.from_dict(lines[1])
    assert second.foil == " in" and [u.label for u in second.units] == ["a <b> dog.", "it ran"]
    index = (out / "index.html").read_text()
    assert index.count("<tr>") == 3 and "html/00001.html" in index and "&lt;b&gt;" in index
    assert "lang='en'" in (out / "html" / "00000.html").read_text()


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "a"}'], "target must be a non-empty string"),
    (["[1, 2]"], "must be a JSON object"),
    (['{"prompt": "a", "target": "b", "extra": 1}'], "unknown keys"),
    (["{oops"], "is not JSON"),
    (['{"prompt": "a", "target": "b", "id": 1}', '{"prompt": "a", "target": "b", "id": 1}'], "repeated"),
])
def test_dataset_bad_lines(tmp_path, lines, message):
    from hf_ext.atman import read_items

    data = tmp_path / "items.jsonl"
    data.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_items(data)
    with pytest.raises(FileNotFoundError, match="dataset="):
        read_items(tmp_path / "nope.jsonl")
    assert main(["atman", "explain", "--dataset", str(data), "--out", str(tmp_path / "o"), "--no-progress"]) == 2  # a bad dataset: a user error (issue 19)
    assert main(["atman", "explain", "--dataset", str(data), "--prompt", "x", "--no-progress"]) == 2
    assert main(["atman", "explain", "--prompt", "x", "--no-progress"]) == 2


def test_single_item_contrastive_flags(tmp_path):
    assert main([*ARGS, "--out", str(tmp_path), "--foil", " in", "--step", "probability"]) == 0
    data = json.loads((tmp_path / "explanation.json").read_text())
    assert data["foil"] == " in" and data["step"] == "probability" and data["n_foil_tokens"] == 3
