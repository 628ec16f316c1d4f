"""The component registry: what the components declare exists, the canonical order is the README's, and a new
component made from the CONTRIBUTING.md template registers its Auto class, CLI group and tour step."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hf_ext.registry import AutoClasses, components, register_component, unregister_component

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = components()


def test_all_components_are_registered_in_the_readme_order():
    names = [c.name for c in COMPONENTS]
    assert names == ["core", "scar", "tfree", "umup", "mad", "dtm", "atman", "sld", "multifusion", "mvader", "moral"]
    # The README's component table links each component's page under docs/components/ (its H1 is the title).
    rows = re.findall(r"^\| \[(.+?)\]\((docs/components/[\w.]+\.md)\)", (ROOT / "README.md").read_text(encoding="utf-8"),
                      re.M)
    positions = []
    for c in COMPONENTS:
        matches = [i for i, (label, _) in enumerate(rows)
                   if c.title.lower() in [t.strip().lower() for t in label.split(",")]]
        assert matches, f"README.md's component table has no row for {c.title!r} (component {c.name!r})"
        page = ROOT / rows[matches[0]][1]
        assert page.is_file(), f"{page} (the docs page of {c.name!r}) is missing"
        assert c.title in page.read_text(encoding="utf-8").splitlines()[0], f"{page}'s heading does not name {c.title!r}"
        positions.append(matches[0])
    assert positions == sorted(positions), f"README rows {[rows[i][0] for i in positions]} are not in `order`"


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_declared_pieces_exist(component):
    if component.cli:
        assert callable(importlib.import_module(component.cli).add_commands)
    if component.tour:
        assert importlib.util.find_spec(component.tour) is not None
    for card in component.cards:
        assert (ROOT / "model_cards" / f"{card}.md.j2").is_file(), card
    if component.notebook:
        assert (ROOT / "notebooks" / component.notebook).is_file(), component.notebook
    assert set(component.extras) <= set(_extras()) - {"dev", "all"}, component.extras


@pytest.mark.parametrize("entry", [a for c in COMPONENTS for a in c.auto], ids=lambda a: a.model_type)
def test_auto_declarations_name_the_right_classes(entry):
    import transformers

    from hf_ext.auto import _load

    config_cls = _load(entry.config)
    assert config_cls.model_type == entry.model_type
    assert transformers.AutoConfig.for_model(entry.model_type).__class__ is config_cls
    for auto_name, path in entry.models.items():
        mapping = getattr(transformers, auto_name)._model_mapping
        assert mapping[config_cls] is _load(path), (auto_name, path)


def _extras() -> list[str]:
    """The extras of pyproject.toml's [project.optional-dependencies] (no tomllib: Python 3.10 is supported)."""
    section = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return re.findall(r"^([A-Za-z0-9_-]+)\s*=", section, re.M)


def test_every_card_template_belongs_to_one_component():
    declared = [card for c in COMPONENTS for card in c.cards]
    shipped = sorted(p.name[: -len(".md.j2")] for p in (ROOT / "model_cards").glob("*.md.j2"))
    assert sorted(declared) == sorted(set(declared)) == [t for t in shipped if t != "base"]


def test_register_component_validates():
    with pytest.raises(ValueError, match="component name 'Bad-Name'"):
        register_component(name="Bad-Name", title="x", order=901, package="x")
    with pytest.raises(ValueError, match="its name is already registered by component 'scar'"):
        register_component(name="scar", title="x", order=902, package="elsewhere")
    with pytest.raises(ValueError, match="its order is already registered by component 'scar'"):
        register_component(name="probe_order", title="x", order=10, package="elsewhere")
    with pytest.raises(ValueError, match="its model type is already registered by component 'umup'"):
        register_component(name="probe_mt", title="x", order=903, package="elsewhere",
                           auto=[AutoClasses("umup_llama", config="x:Y")])
    with pytest.raises(ValueError, match="'module:Class' path"):
        AutoClasses("probe", config="no_colon")
    with pytest.raises(ValueError, match="not a transformers Auto class name"):
        AutoClasses("probe", config="x:Y", models={"ModelForCausalLM": "x:Z"})
    with pytest.raises(TypeError, match="must be AutoClasses"):
        register_component(name="probe_type", title="x", order=904, package="x", auto=[("probe", "x:Y")])
    with pytest.raises(ValueError, match="is not a module path"):
        register_component(name="probe_cli", title="x", order=905, package="x", cli="not a module")
    assert {c.name for c in components()} == {c.name for c in COMPONENTS}  # nothing half-registered


def test_register_component_resolves_relative_paths_and_notifies():
    seen = []
    from hf_ext import registry

    registry.on_register(seen.append)
    try:
        comp = register_component(name="probe_rel", title="Probe", order=906, package="pkg.probe", cli=".cli",
                                  tour="pkg.other.tour")
    finally:
        registry._LISTENERS.remove(seen.append)
        unregister_component("probe_rel")
    assert comp.cli == "pkg.probe.cli" and comp.tour == "pkg.other.tour" and seen == [comp]
    entry = AutoClasses("probe_rel", config=".cfg:C", models={"AutoModel": "other:M"})._absolute("pkg.probe")
    assert entry.config == "pkg.probe.cfg:C" and entry.models["AutoModel"] == "other:M"
    assert entry.modules() == ["other", "pkg.probe.cfg"]


def _template_files() -> dict[str, str]:
    """The template's files from CONTRIBUTING.md: python blocks whose first line is ``# <path>``."""
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    files = {}
    for block in re.findall(r"^```python\n(.*?)^```$", text, re.S | re.M):
        first, _, body = block.partition("\n")
        if first.startswith("# ") and first.endswith(".py"):
            files[first[2:]] = body
    return files


def test_template_component_registers_auto_class_cli_group_and_tour_step(tmp_path):
    """The template, copied as a new folder of hf_ext (hf_ext.__path__ extended in a fresh interpreter), is found by
    discovery alone: its Auto class, its ``hf-ext mycomp`` group and its tour step work, and its own test passes."""
    files = _template_files()
    assert sorted(files) == ["hf_ext/mycomp/__init__.py", "hf_ext/mycomp/cli.py",
                             "hf_ext/mycomp/configuration_mycomp.py", "hf_ext/mycomp/modeling_mycomp.py",
                             "hf_ext/mycomp/tour.py", "tests/mycomp/test_mycomp.py"]
    checkout = tmp_path / "checkout"
    for name, body in files.items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text(body)
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        import hf_ext
        hf_ext.__path__.append({str(checkout / "hf_ext")!r})  # as if hf_ext/mycomp/ were added to the checkout
        from hf_ext.cli import main
        from hf_ext.registry import components
        assert [c.name for c in components()][-1] == "mycomp"
        help_text = io.StringIO()
        with contextlib.redirect_stdout(help_text):
            assert main(["--help"]) == 0
        assert "mycomp" in help_text.getvalue() and "torch" not in sys.modules
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert main(["mycomp", "run", "--out", {str(tmp_path / "run")!r}, "--json"]) == 0
        assert json.loads(out.getvalue()) == {{"model_class": "MyCompModel", "shape": [1, 4, 8]}}
        import transformers
        assert type(transformers.AutoConfig.for_model("mycomp")).__name__ == "MyCompConfig"
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert main(["tour", "--list"]) == 0
        assert out.getvalue().splitlines()[-1].split()[:2] == ["mycomp", "mycomp"]
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert main(["tour", "--steps", "mycomp", "--out", {str(tmp_path / "tour")!r}, "--no-progress",
                         "--json"]) == 0
        step = json.loads(out.getvalue())["steps"][0]
        assert step["status"] == "ok" and step["metrics"] == {{"hidden_size": 8}}, step
        import pytest
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", {str(checkout / "tests" / "mycomp")!r}]))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "1 passed" in res.stdout


def test_component_of_another_distribution_is_found_through_its_entry_point(tmp_path):
    """The template as the package ``extcomp`` of an installed distribution (a .dist-info with an entry point in the
    group ``hf_ext.components``): ``python -m hf_ext`` finds its command group without importing it first."""
    for name, body in _template_files().items():
        if name.startswith("hf_ext/mycomp/"):
            path = tmp_path / "extcomp" / Path(name).name.replace("mycomp", "extcomp")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body.replace("mycomp", "extcomp").replace("MyComp", "ExtComp"))
    info = tmp_path / "extcomp-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: extcomp\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hf_ext.components]\nextcomp = extcomp\n")
    res = subprocess.run([sys.executable, "-m", "hf_ext", "extcomp", "run", "--out", str(tmp_path / "run"), "--json"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout) == {"model_class": "ExtCompModel", "shape": [1, 4, 8]}
