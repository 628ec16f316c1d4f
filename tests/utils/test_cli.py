"""The command-line helpers: common options, deprecated aliases, --out folders, JSON output."""

from __future__ import annotations

import argparse
import json

import pytest

from hf_ext.utils.cli import (
    REQUIRED,
    add_command,
    add_common_options,
    add_deprecated_alias,
    add_group,
    out_file,
    print_result,
    run_command,
)


def _parser(**common):
    parser = argparse.ArgumentParser(prog="hf-ext")
    actions = add_group(parser.add_subparsers(dest="command"), "toy", help="a toy group")
    command = add_command(actions, "run", lambda args: 7, help="run it")
    add_common_options(command, **common)
    return parser, command


def test_common_options_and_run_command():
    parser, _ = _parser(model="a model", device="cpu", seed=3, out="toy_out", json=True, progress=True)
    args = parser.parse_args(["toy", "run"])
    assert (args.model, args.device, args.seed, args.out, args.json, args.no_progress) == (None, "cpu", 3, "toy_out",
                                                                                            False, False)
    assert run_command(args) == 7
    parser, _ = _parser(seed=0)
    assert not hasattr(parser.parse_args(["toy", "run"]), "out")  # only the options that apply
    parser, _ = _parser(out=REQUIRED)
    with pytest.raises(SystemExit):
        parser.parse_args(["toy", "run"])
    parser, _ = _parser(out_when_absent="print only")
    assert parser.parse_args(["toy", "run"]).out is None


def test_deprecated_alias_warns_and_sets_the_new_option():
    parser, command = _parser(model="a model", out=REQUIRED)
    add_deprecated_alias(command, "--base", "--model")
    add_deprecated_alias(command, "--output-dir", "--out")
    with pytest.warns(FutureWarning, match="--base is deprecated and will be removed in hf-ext 0.3; use --model"):
        args = parser.parse_args(["toy", "run", "--base", "gpt2", "--output-dir", "d"])
    assert args.model == "gpt2" and args.out == "d"
    assert parser.parse_args(["toy", "run", "--out", "d"]).out == "d"  # either name satisfies a required option
    with pytest.raises(SystemExit):
        parser.parse_args(["toy", "run"])
    with pytest.raises(ValueError, match="no option '--nope'"):
        add_deprecated_alias(command, "--old", "--nope")


def test_out_file_is_inside_the_folder_or_a_legacy_file(tmp_path):
    assert out_file(tmp_path / "a", "r.json") == tmp_path / "a" / "r.json" and (tmp_path / "a").is_dir()
    with pytest.warns(FutureWarning, match=r"\(a file\) is deprecated"):
        assert out_file(tmp_path / "b" / "x.json", "r.json", legacy_suffixes=(".json",)) == tmp_path / "b" / "x.json"


def test_print_result(capsys):
    print_result({"a": 1}, "a is 1", as_json=True)
    assert json.loads(capsys.readouterr().out) == {"a": 1}
    print_result({"a": 1}, "a is 1", as_json=False)
    assert capsys.readouterr().out == "a is 1\n"
