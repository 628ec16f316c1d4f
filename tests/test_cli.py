"""The `hf-ext` command line and the tour runner."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hf_ext
from hf_ext.cli import command_modules, main
from hf_ext.testing import time_factor
from hf_ext.tour import StepResult, registered_steps, tour_step, unregister_step
from hf_ext.utils import cli as cli_utils


def test_version(capsys):
    assert main(["--version"]) == 0
    assert hf_ext.__version__ in capsys.readouterr().out


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s+env\b", out, re.M) and re.search(r"^\s+tour\b", out, re.M)


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: hf-ext" in capsys.readouterr().out


def test_env_json(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["versions"]["hf_ext"] == hf_ext.__version__
    assert info["versions"]["torch"].split("+")[0] == __import__("torch").__version__.split("+")[0]
    for name in ("python", "transformers", "diffusers", "datasets", "accelerate", "evaluate"):
        assert info["versions"][name]  # a version or "not installed"
    assert info["device"] in ("cpu", "cuda", "mps")


def test_env_reports_components_and_their_missing_extras(monkeypatch, capsys):
    from hf_ext.registry import components
    from hf_ext.utils import imports

    monkeypatch.setattr(imports, "_extras_of_distributions", lambda: {"surely-not-installed-dist": "scar",
                                                                       "pip": "scar"})
    assert main(["env", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)["components"]
    assert list(status) == [c.name for c in components()]
    assert status["scar"] == {"extras": ["scar", "plots"], "missing": ["surely-not-installed-dist"]}
    assert status["core"]["missing"] == []
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^scar\s+missing surely-not-installed-dist: pip install 'hf-ext\[scar,plots\]'$", out, re.M)
    assert re.search(r"^tfree\s+ready$", out, re.M)


def test_env_reports_missing_package(monkeypatch, capsys):
    from hf_ext import cli

    monkeypatch.setitem(cli.REPORTED_PACKAGES, "surely-not-a-real-dist-hf-ext", "ghost")
    assert main(["env"]) == 0
    assert re.search(r"ghost\s+not installed", capsys.readouterr().out)


def test_tour_list(capsys):
    assert main(["tour", "--list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^environment\s+core\s", out, re.M)


def test_tour_environment_step(tmp_path, capsys):
    rc = main(["tour", "--steps", "environment", "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    table = out.split("\n\nreport:")[0].splitlines()
    assert table[0].split() == ["step", "component", "status", "seconds", "key", "metrics"]
    assert re.match(r"environment\s+core\s+ok\s+[\d.]+!?\s+llama_tokens_per_s=", table[2])
    (run_dir,) = tmp_path.glob("tour-*")
    assert re.fullmatch(r"tour-\d{8}-\d{6}", run_dir.name)
    report = (run_dir / "report.md").read_text()
    assert "## environment (core)" in report and "| llama_tokens_per_s |" in report
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
    assert pngs == ["environment/forward_times.png"]
    png = run_dir / pngs[0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"][0]["status"] == "ok" and results["steps"][0]["metrics"]["llama_tokens_per_s"] > 0


def test_failing_step_is_reported_and_tour_continues(tmp_path, capsys):
    ran = []

    @tour_step("zz-test-boom", component="test", order=10_000)
    def boom(ctx):
        ran.append("boom")
        raise RuntimeError("kaboom 42")

    @tour_step("zz-test-after", component="test", order=10_001)
    def after(ctx):
        ran.append("after")
        (ctx.out_dir / "page.html").write_text("<p>hi</p>")
        return StepResult(metrics={"answer": 42}, summary="still ran", artifacts=[ctx.out_dir / "page.html"])

    try:
        rc = main(["tour", "--steps", "zz-test-after", "zz-test-boom", "--out", str(tmp_path), "--no-progress"])
    finally:
        unregister_step("zz-test-boom")
        unregister_step("zz-test-after")
    out = capsys.readouterr().out
    assert rc == 1
    assert ran == ["boom", "after"]  # registry order, and the failure did not stop the tour
    assert re.search(r"zz-test-boom\s+test\s+failed\s+[\d.]+\s+RuntimeError: kaboom 42", out)
    assert re.search(r"zz-test-after\s+test\s+ok\s+[\d.]+\s+answer=42", out)
    report = next(tmp_path.glob("tour-*/report.md")).read_text()
    assert "RuntimeError: kaboom 42" in report and "Traceback" in report
    assert "[page.html](zz-test-after/page.html)" in report
    assert "zz-test-boom" not in registered_steps()


def test_slow_step_warns_but_is_not_killed(tmp_path, capsys, caplog):
    @tour_step("zz-test-slow", component="test", order=10_000)
    def slow(ctx):
        import time

        time.sleep(0.05)
        return StepResult(summary="slow but fine")

    try:
        rc = main(["tour", "--steps", "zz-test-slow", "--out", str(tmp_path), "--budget", "0.01", "--no-progress"])
    finally:
        unregister_step("zz-test-slow")
    assert rc == 0
    assert re.search(r"zz-test-slow\s+test\s+ok\s+[\d.]+!", capsys.readouterr().out)
    assert "tour step zz-test-slow took" in caplog.text and "over its 0.01 s budget" in caplog.text


def test_unknown_step_exits_2_naming_valid_steps(tmp_path, capsys):
    rc = main(["tour", "--steps", "no-such-step", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no-such-step" in err and "environment" in err
    assert not list(tmp_path.iterdir())  # nothing ran, no run folder


def test_duplicate_step_name_is_rejected():
    with pytest.raises(ValueError, match="already registered"):

        @tour_step("environment", component="other")
        def clash(ctx):  # pragma: no cover
            return StepResult()


def test_step_result_validates_status():
    with pytest.raises(ValueError, match="status='done'"):
        StepResult(status="done")


def test_command_modules_add_their_commands():
    for name in command_modules():  # the tour's add_parser(subparsers); the components' add_commands(actions)
        module = importlib.import_module(name)
        assert callable(getattr(module, "add_commands", None) or getattr(module, "add_parser", None)), name


def test_cli_import_and_help_do_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "import hf_ext.cli as cli\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'import'\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert cli.main(['--help']) == 0 and cli.main(['--version']) == 0 and cli.main(['tour', '--list']) == 0\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60 * time_factor(),
                          cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stderr


def _commands(parser=None, path=("hf-ext",)):
    """(command path, parser) of every command parser of hf-ext, the groups included."""
    import argparse

    from hf_ext.cli import build_parser

    parser = parser or build_parser()
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_every_option_has_help():
    import argparse

    missing = [(" ".join(path), a.option_strings or a.dest) for path, p in _commands() for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert not missing, f"options without help text: {missing}"
    assert len(list(_commands())) >= 30  # the walk reaches every group's commands


def test_common_options_mean_the_same_everywhere():
    """--out names a folder, --json and --no-progress are flags, --seed an int, wherever a command has them."""
    import argparse

    seen = {"--out": 0, "--json": 0, "--no-progress": 0, "--seed": 0, "--model": 0, "--device": 0}
    for path, parser in _commands():
        for a in parser._actions:
            for option in set(a.option_strings) & set(seen):
                seen[option] += 1
                where = f"{' '.join(path)} {option}"
                if option == "--out":
                    assert a.metavar == "DIR" and "folder" in a.help, where
                elif option == "--no-progress":
                    assert isinstance(a, argparse._StoreTrueAction) and a.dest == "no_progress", where
                elif option == "--json" and path[-1] != "explain":  # atman explain: also the pre-0.2 --json PATH
                    assert isinstance(a, argparse._StoreTrueAction), where
                elif option == "--seed":
                    assert a.type is cli_utils.non_negative_int, where
                elif option in ("--model", "--device"):
                    assert a.dest == option[2:], where
    assert min(seen.values()) >= 8, seen  # each option is shared by many commands


def test_python_m_hf_ext_is_the_same_cli():
    proc = subprocess.run([sys.executable, "-m", "hf_ext", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"hf-ext {hf_ext.__version__}"


def test_command_modules_deprecated_alias(recwarn):
    from hf_ext import cli

    with pytest.warns(DeprecationWarning, match="COMMAND_MODULES is deprecated"):
        legacy = cli.COMMAND_MODULES
    assert list(legacy) == cli.command_modules()
