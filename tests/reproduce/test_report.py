"""Reports: markdown from raw values, JSON of every figure, contention flag; the CLI's list of reproductions."""

import json

import pytest

from hf_ext.reproduce import reproductions
from hf_ext.reproduce.report import LoadMonitor, Report, Table, render_table


def test_table_renders_its_raw_values():
    t = Table("k", "T", ["name", "rate", "n"], [["a|b", 0.125, 3], ["c", None, 4]], formats=["s", ".1%", "d"])
    assert t.to_markdown().splitlines() == ["| name | rate | n |", "|:--|--:|--:|", "| a\\|b | 12.5% | 3 |",
                                            "| c | – | 4 |"]
    with pytest.raises(ValueError, match="cells"):
        Table("k", "T", ["a"], [[1, 2]])


def test_report_writes_markdown_json_and_plots(tmp_path):
    report = Report("demo", "tiny/model", True, "Demo")
    report.tables.append(Table("demo.t", "A table", ["x", "y"], [["a", 1.5]], formats=["s", ".2f"], notes="why"))
    report.figures["curve"] = [1.0, 0.5]
    report.plots.append(("p.png", lambda path: path.write_bytes(b"png")))
    out = report.write(tmp_path / "run")
    data = json.loads((out / "report.json").read_text())
    assert data["figures"]["curve"] == [1.0, 0.5] and data["tables"][0]["rows"] == [["a", 1.5]]
    md = (out / "report.md").read_text()
    assert render_table(data["tables"][0]) in md and "why" in md and "![p.png](p.png)" in md
    assert (out / "p.png").read_bytes() == b"png"
    default = Report("demo", "org/name", False, "D").write(root=tmp_path)
    assert default.name.startswith("reproduce-demo-org--name-")


def test_contention_is_flagged():
    mon = LoadMonitor()
    mon.samples = [0.5, mon.cores + 0.5]
    assert mon.contended and mon.to_dict()["loadavg_max"] == mon.cores + 0.5
    mon.samples = [0.1]
    assert not mon.contended


def test_cli_lists_every_reproduction():
    from hf_ext.cli import build_parser
    parser = build_parser()
    choices = next(a for a in parser._subparsers._group_actions[0].choices["reproduce"]._actions if a.dest == "component").choices
    assert set(choices) == set(reproductions()) >= {"atman", "dtm"}
    args = parser.parse_args(["reproduce", "dtm", "--model", "gemma3-270m", "--quick", "--set", "topk=8"])
    assert (args.component, args.model, args.quick, args.set) == ("dtm", "gemma3-270m", True, ["topk=8"])
    with pytest.raises(ValueError, match="unknown component"):
        __import__("hf_ext.reproduce", fromlist=["reproduce"]).reproduce("nope")
