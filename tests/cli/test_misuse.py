"""Issue 19 item 4: bad ``hf-ext`` invocations across every command group give one line on stderr naming the bad
option or value, exit code 2, no traceback, and write nothing (``--debug`` shows the traceback)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from hf_ext.cli import main
from hf_ext.testing import time_factor
from hf_ext.utils.cli import run_command

pytestmark = pytest.mark.cli

# (argv, a fragment the one-line message must contain: the option or the bad value)
MISUSE = [
    # scar
    ("scar train --layer 99 --out o", "got 99"),
    ("scar train --layer x", "--layer"),
    ("scar train --k 0 --out o", "--k"),
    ("scar train --epochs nan --out o", "--epochs"),
    ("scar train --lr inf --out o", "--lr"),
    ("scar train --batch-size 0 --out o", "--batch-size"),
    ("scar train --site attn --out o", "'attn'"),
    ("scar train --model /missing/model --out o", "/missing/model"),
    ("scar train --data /missing.jsonl --out o", "/missing.jsonl"),
    ("scar train --out /dev/null/x", "/dev/null"),
    ("scar train-activations --synthetic 0 --out o", "--synthetic"),
    ("scar train-activations --activations /missing --out o", "/missing"),
    ("scar detect --adapter /missing --text hi", "/missing"),
    ("scar detect", "--adapter"),
    ("scar generate --adapter /missing --prompt hi", "/missing"),
    ("scar generate --adapter x --prompt hi --strength nan", "--strength"),
    ("scar generate --adapter x --prompt hi --max-new-tokens 0", "--max-new-tokens"),
    ("scar generate --adapter x --prompt hi --op foo", "'foo'"),
    # tfree
    ("tfree train --steps 0 --out o", "--steps"),
    ("tfree train --hash-vocab-size 0 --out o", "--hash-vocab-size"),
    ("tfree train --num-activations 0 --out o", "--num-activations"),
    ("tfree train --text-file /missing.txt --out o", "/missing.txt"),
    ("tfree train --hash-scheme foo", "'foo'"),
    ("tfree train --lr nan --out o", "--lr"),
    ("tfree generate --model /missing", "/missing"),
    ("tfree stats --text-file /missing", "/missing"),
    ("tfree stats --text hi --num-activations x", "--num-activations"),
    # umup
    ("umup sweep --widths 0 --out o", "--widths"),
    ("umup sweep --steps 0 --out o", "--steps"),
    ("umup sweep --widths abc", "'abc'"),
    ("umup coord-check --steps -1 --out o", "--steps"),
    ("umup train --lr nan --out o", "--lr"),
    ("umup train --seq-len 0 --out o", "--seq-len"),
    # mad
    ("mad report /nonexistent", "/nonexistent"),
    ("mad report /nonexistent --out o", "/nonexistent"),
    ("mad generate memorization --set vocab_size=abc --out o", "vocab_size=abc"),
    ("mad generate memorization --set nosuchkey=1 --out o", "nosuchkey"),
    ("mad generate nosuchtask --out o", "nosuchtask"),
    ("mad generate --mode foo", "'foo'"),
    ("mad run --arch nosucharch --out o", "nosucharch"),
    ("mad run --epochs 0 --out o", "--epochs"),
    ("mad export --tasks nosuchtask --out o", "nosuchtask"),
    ("mad grid --bogus", "--bogus"),
    # dtm
    ("dtm score --prompts /missing.txt", "/missing.txt"),
    ("dtm score -N 0", "--max-new-tokens"),
    ("dtm score --base /missing", "/missing"),
    ("dtm plan --prune 1.5", "--prune"),
    ("dtm score --candidate /missing", "/missing"),
    # atman
    ("atman explain --prompt '' --target x", "prompt"),
    ("atman explain --prompt a --target ''", "target"),
    ("atman explain --prompt a --target b --factor nan", "--factor"),
    ("atman explain --model /missing --prompt a --target b", "/missing"),
    ("atman explain --prompt a --target b --max-batch-size 0", "--max-batch-size"),
    ("atman explain --prompt a --target b --mode foo", "'foo'"),
    ("atman explain --prompt a --target b --threshold nan", "--threshold"),
    # sld
    ("sld generate --steps 0 --out o", "--steps"),
    ("sld generate --model /missing --out o", "/missing"),
    ("sld generate --prompt x --height 33 --out o", "33"),
    ("sld generate --num-images 0 --out o", "--num-images"),
    ("sld generate --sld-guidance-scale nan --out o", "--sld-guidance-scale"),
    ("sld generate --prompt x --guidance-scale nan", "--guidance-scale"),
    ("sld generate --prompt x --dtype float8", "'float8'"),
    ("sld generate --preset foo", "'foo'"),
    ("sld eval-i2p --table /missing.csv --out o", "/missing.csv"),
    ("sld eval-i2p --limit 0", "--limit"),
    # multifusion
    ("multifusion generate --steps 0 --out o", "--steps"),
    ("multifusion generate --pipeline /missing --out o", "/missing"),
    ("multifusion train --steps 0 --out o", "--steps"),
    ("multifusion train --resume-from /missing --out o", "/missing"),
    ("multifusion train --stage foo", "'foo'"),
    ("multifusion eval --n 0 --out o", "--n"),
    ("multifusion eval --clip /missing", "/missing"),
    # moral
    ("moral score --direction /missing hi", "/missing"),
    ("moral score --batch-size 0", "--batch-size"),
    ("moral eval --mfq-file /missing", "/missing"),
    ("moral score --language xx hi", "'xx'"),
    ("moral fit --batch-size 0", "--batch-size"),
    # tour, reproduce, top level
    ("tour --steps nosuch --out o", "nosuch"),
    ("tour --budget nan --out o", "--budget"),
    ("reproduce nosuchpaper", "nosuchpaper"),
    ("reproduce scar --set", "--set"),
    ("env --bogus", "--bogus"),
    ("nosuchcommand", "nosuchcommand"),
    ("scar", "ACTION"),
    ("scar nosuch", "'nosuch'"),
    # an 'org/name'-shaped value that is neither a local folder nor reachable on the Hub: both said
    ("scar generate --adapter runs/missing --prompt hi", "--adapter='runs/missing': no local folder or file"),
    ("atman explain --model runs/missing --prompt a --target b", "--model='runs/missing': no local folder or file"),
]


def _split(line: str) -> list[str]:
    import shlex

    return shlex.split(line)


class _CurrentStderr:
    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_CURRENT_STDERR = _CurrentStderr()


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path, capsys):
    import logging

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    # the libraries' stderr handlers keep the stream of the moment they were made: an earlier test's (closed)
    # capture when the commands run in-process one after another; make them write to whatever sys.stderr is now
    from transformers import logging as transformers_logging

    transformers_logging.get_logger("transformers")  # makes transformers' handler now, so that it is found below
    loggers = [logging.getLogger(), *(v for v in logging.root.manager.loggerDict.values() if isinstance(v, logging.Logger))]
    for handler in (h for lg in loggers for h in lg.handlers):
        if type(handler) is logging.StreamHandler and handler.stream is not sys.__stderr__:  # not pytest's handlers
            handler.stream = _CURRENT_STDERR
            handler.flush = _CURRENT_STDERR.flush  # transformers binds the stderr of that moment's flush too


def test_the_catalogue_covers_every_command_group():
    from hf_ext.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    groups = set(sub.choices) - {"env"}
    covered = {argv.split()[0] for argv, _ in MISUSE}
    assert groups <= covered, f"no misuse case for {sorted(groups - covered)}"
    assert len(MISUSE) >= 60


@pytest.mark.parametrize("line, fragment", MISUSE, ids=[m[0] for m in MISUSE])
def test_misuse_is_one_line_exit_2_no_traceback_nothing_written(line, fragment, capsys, tmp_path):
    code = main(_split(line))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and lines[0].startswith("hf-ext"), err
    assert fragment in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == [], "a rejected command wrote files"


def test_debug_shows_the_traceback_and_keeps_exit_2(capsys):
    assert main(["mad", "generate", "nosuchtask", "--out", "o", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "nosuchtask" in err.splitlines()[-1]


def test_an_unexpected_error_is_exit_1_with_a_short_message(capsys):
    def broken(args):
        return 1 // 0

    assert run_command(argparse.Namespace(func=broken)) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "hf-ext: internal error: ZeroDivisionError: integer division or modulo by zero (run with --debug for the "
        "traceback)"]
    assert run_command(argparse.Namespace(func=broken, debug=True)) == 1
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("line", ["sld generate --steps 0 --out o", "scar generate --adapter x --prompt hi --strength nan",
                                  "mad report /nonexistent --out o", "scar detect --adapter ./missing --text hi",
                                  "mad generate memorization --set vocab_size=abc --out o"])
def test_misuse_as_a_real_process(line, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "hf_ext", *_split(line)], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=300 * time_factor())
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if "error:" in ln]) == 1
    assert list(tmp_path.iterdir()) == []
