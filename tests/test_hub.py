"""hf_ext.hub: model cards from the shipped templates, the wheel's package data, and self-contained exports."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors.torch import load_file, save_file

import hf_ext
from hf_ext.hub import _environment, available_model_cards, export_for_hub, render_model_card
from hf_ext.testing import time_factor

REPO = Path(__file__).resolve().parents[1]
TOY_IDS = torch.tensor([[1, 40, 41, 42, 43, 44], [0, 0, 1, 50, 51, 52]])  # second row left-padded
TOY_MASK = (TOY_IDS != 0).long()
EVAL = {"task_type": "text-generation", "dataset_type": "wikitext", "dataset_name": "WikiText-2",
        "metric_type": "perplexity", "metric_value": 12.5}


def _subprocess_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(HF_HOME=str(tmp / "hf_home"), HF_MODULES_CACHE=str(tmp / "hf_modules"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", **extra)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout * time_factor())
    assert proc.returncode == 0, f"{cmd[:3]} failed:\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
    return proc


# ---------------------------------------------------------------------------------------------------------------
# Model cards
# ---------------------------------------------------------------------------------------------------------------


def test_available_model_cards_lists_base():
    assert "base" in available_model_cards()
    assert all(not name.endswith(".j2") for name in available_model_cards())


def test_render_base_card_round_trips(tmp_path):
    card = render_model_card(
        "base",
        card_data={"license": "apache-2.0", "base_model": "openai-community/gpt2", "tags": ["hf_ext", "scar"],
                   "model_name": "tiny-scar", "eval_results": [EVAL, EvalResult(**{**EVAL, "metric_type": "accuracy",
                                                                                     "metric_value": 0.75})]},
        description="A tiny SCAR checkpoint for tests.",
        repo_id="hf-ext/tiny-scar",
        auto_class="AutoModelForCausalLM",
        remote_code=True,
        intended_use="Unit tests only.",
        limitations="Random weights.",
        training_details="Two steps on toy data.",
        citation="@article{scar2024,\n  title={SCAR}\n}",
    )
    assert isinstance(card, ModelCard)
    path = tmp_path / "README.md"
    card.save(path)
    for loaded in (ModelCard.load(path), ModelCard(path.read_text(encoding="utf-8"))):
        assert loaded.data.license == "apache-2.0"
        assert loaded.data.base_model == "openai-community/gpt2"
        assert loaded.data.tags == ["hf_ext", "scar"]
        assert loaded.data.library_name == "transformers" and loaded.data.pipeline_tag == "text-generation"
        assert loaded.data.model_name == "tiny-scar"
        assert [r.metric_value for r in loaded.data.eval_results] == [12.5, 0.75]
        assert loaded.data.eval_results[0].dataset_name == "WikiText-2"
    body = card.text
    assert body.lstrip().startswith("# tiny-scar")
    for value in ("A tiny SCAR checkpoint for tests.", "Unit tests only.", "Random weights.", "Two steps on toy data.",
                  'AutoModelForCausalLM.from_pretrained("hf-ext/tiny-scar")', "import hf_ext",
                  "trust_remote_code=True", "@article{scar2024,", "| text-generation | WikiText-2 | perplexity | 12.5 |",
                  f"Generated with hf_ext {hf_ext.__version__}"):
        assert value in body, value
    assert "model-index" in card.content  # eval results became the model-index block


def test_render_accepts_model_card_data_and_full_file_name():
    data = ModelCardData(license="mit", library_name="transformers")
    card = render_model_card("base.md.j2", card_data=data, model_name="given-title")
    assert card.data.library_name == "transformers"  # an explicit library_name is kept
    assert data.model_name is None  # the caller's object is not modified
    assert "# given-title" in card.text
    assert "[More Information Needed]" not in card.text  # sections without content are left out
    assert "## Intended use" not in card.text and "## How to load" in card.text


def test_base_template_is_extendable():
    child = _environment().from_string('{% extends "base.md.j2" %}{% block method %}METHOD-SECTION{% endblock %}')
    text = child.render(card_data="license: mit", data=ModelCardData(), hf_ext_version="x", model_name="child")
    assert text.startswith("---\nlicense: mit\n---")
    assert "METHOD-SECTION" in text and "## How to load" in text


def test_render_bad_inputs():
    with pytest.raises(ValueError, match=r"unknown model-card template 'nope'.*'base'"):
        render_model_card("nope", card_data={})
    assert render_model_card("base", card_data={"eval_results": [EVAL]}).data.model_name == "hf_ext model"
    with pytest.raises(ValueError, match="dataset card template"):
        render_model_card("mad_dataset")
    with pytest.raises(ValueError, match="not a valid EvalResult"):
        render_model_card("base", card_data={"model_name": "m", "eval_results": [{"metric_value": 1}]})
    with pytest.raises(TypeError, match="card_data must be"):
        render_model_card("base", card_data=["license", "mit"])
    with pytest.raises(ValueError, match="card_data"):
        render_model_card("base", card_data={}, card_data_yaml=None, data=1)


@pytest.mark.slow
def test_templates_ship_in_the_wheel(tmp_path):
    """A non-editable wheel carries hf_ext.model_cards; render from it with the checkout out of reach."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".ci-venv", "build", "dist", "runs", "*.egg-info", "__pycache__", ".pytest_cache",
        ".ruff_cache", ".whl", ".site", "tests", "notebooks", "benchmarks"))
    env = _subprocess_env(tmp_path)
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w",
          str(tmp_path / "dist")], cwd=src, env=env)
    (wheel,) = (tmp_path / "dist").glob("hf_ext-*.whl")
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
         cwd=tmp_path, env=env)
    script = textwrap.dedent("""
        import json, os, sys
        site, repo = sys.argv[1], sys.argv[2]
        # The venv's editable install of the checkout must not win: drop its finder and any checkout path.
        sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
        sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != os.path.realpath(repo)]
        assert "hf_ext" not in sys.modules
        import hf_ext, hf_ext.hub, hf_ext.model_cards
        card = hf_ext.hub.render_model_card("base", card_data={"license": "mit", "tags": ["wheel"]},
                                            description="rendered from the wheel")
        print(json.dumps({"files": [hf_ext.__file__, hf_ext.hub.__file__, hf_ext.model_cards.__file__],
                          "available": hf_ext.hub.available_model_cards(), "license": card.data.license,
                          "text": card.text}))
    """)
    proc = _run([sys.executable, "-c", script, str(site), str(REPO)], cwd=tmp_path, env={**env, "PYTHONPATH": str(site)})
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for file in out["files"]:
        assert os.path.realpath(file).startswith(os.path.realpath(site)), out["files"]
    assert out["available"] == available_model_cards()
    assert out["license"] == "mit"
    assert "rendered from the wheel" in out["text"] and "Generated with hf_ext" in out["text"]


# ---------------------------------------------------------------------------------------------------------------
# Export: the toy component in tests/hub_toy (absolute hf_ext.core imports, custom tokenizer)
# ---------------------------------------------------------------------------------------------------------------

# Runs in a fresh interpreter where hf_ext (and the test packages) cannot be imported at all.
LOADER = textwrap.dedent("""
    import importlib.abc, json, sys
    jobs, out_path, blocked = json.loads(sys.argv[1]), sys.argv[2], set(sys.argv[3].split(","))

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    results = {}
    for key, job in jobs.items():
        inputs = load_file(job["inputs"])
        model = AutoModelForCausalLM.from_pretrained(job["path"], trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        with torch.no_grad():
            results[key + ".logits"] = model(inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            results[key + ".generated"] = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                                         max_new_tokens=5, do_sample=False, use_cache=False)
        if job.get("tokenizer"):
            tok = AutoTokenizer.from_pretrained(job["path"], trust_remote_code=True)
            results[key + ".tokenizer_class"] = torch.tensor([type(tok).__name__ == job["tokenizer"]])
            results[key + ".encoded"] = torch.tensor(tok("hello hub").input_ids)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in blocked)
    assert not leaked, leaked
    save_file({k: v.contiguous() for k, v in results.items()}, out_path)
""")


def _load_remotely(tmp_path: Path, jobs: dict[str, dict], blocked: tuple[str, ...]) -> dict[str, torch.Tensor]:
    out = tmp_path / "remote_outputs.safetensors"
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    _run([sys.executable, "-c", LOADER, json.dumps(jobs), str(out), ",".join(blocked)], cwd=work,
         env=_subprocess_env(tmp_path), timeout=180)
    return load_file(out)


def _absolute_imports(source: str) -> set[str]:
    """Top-level packages that ``source`` imports absolutely (anywhere, including inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _reference(model, ids=TOY_IDS, mask=TOY_MASK) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
        generated = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, use_cache=False)
    return logits, generated


@pytest.fixture(scope="module")
def toy():
    from transformers import AutoConfig, AutoModelForCausalLM

    from hf_ext.testing import tiny_tokenizer
    from tests.hub_toy.configuration_toy import HubToyConfig
    from tests.hub_toy.modeling_toy import HubToyForCausalLM
    from tests.hub_toy.tokenization_toy import HubToyTokenizer

    AutoConfig.register(HubToyConfig.model_type, HubToyConfig, exist_ok=True)
    AutoModelForCausalLM.register(HubToyConfig, HubToyForCausalLM, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = HubToyForCausalLM(HubToyConfig()).eval()
    base = tiny_tokenizer()
    tokenizer = HubToyTokenizer(tokenizer_object=base.backend_tokenizer, bos_token="<s>", eos_token="</s>",
                                unk_token="<unk>", pad_token="<pad>", padding_side="left")
    return model, tokenizer


def test_export_toy_writes_self_contained_code(exported):
    path = exported["toy"]
    names = {p.name for p in path.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "README.md", "tokenizer.json",
            "tokenizer_config.json", "modeling_toy.py", "configuration_toy.py", "tokenization_toy.py",
            "inputs.py", "anatomy.py"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    config = json.loads((path / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_toy.HubToyConfig",
                                  "AutoModelForCausalLM": "modeling_toy.HubToyForCausalLM"}
    tok_config = json.loads((path / "tokenizer_config.json").read_text())
    assert tok_config["auto_map"]["AutoTokenizer"] == ["tokenization_toy.HubToyTokenizer", None]
    modeling = (path / "modeling_toy.py").read_text()
    assert "from .inputs import position_ids_from_mask" in modeling
    assert "from . import anatomy as anatomy_lib" in modeling
    assert "from .configuration_toy import HubToyConfig" in modeling
    for file in path.glob("*.py"):
        assert "hf_ext" not in _absolute_imports(file.read_text()), file.name
    # Everything but the rewritten import lines is the original source.
    original = (REPO / "tests" / "hub_toy" / "modeling_toy.py").read_text().splitlines()
    exported = modeling.splitlines()
    assert len(original) == len(exported)
    assert [a for a, b in zip(original, exported) if a != b] == [
        "import hf_ext.core.anatomy as anatomy_lib", "from hf_ext.core.inputs import position_ids_from_mask"]
    assert ModelCard.load(path / "README.md").data.license == "apache-2.0"


@pytest.mark.slow
def test_export_toy_loads_without_hf_ext(remote, toy):
    model, tokenizer = toy
    out = remote
    logits, generated = _reference(model)
    assert torch.equal(out["toy.logits"], logits)
    assert torch.equal(out["toy.generated"], generated)
    assert generated.shape[1] > TOY_IDS.shape[1]
    assert out["toy.tokenizer_class"].item()
    assert out["toy.encoded"].tolist() == tokenizer("hello hub").input_ids


# ---------------------------------------------------------------------------------------------------------------
# Export: a synthetic package that uses every import form (relative, parent-relative, module bindings, transitive)
# ---------------------------------------------------------------------------------------------------------------

FAKE_PACKAGE = {
    "__init__.py": 'VERSION = "0"\n',
    "core/__init__.py": "",
    "core/consts.py": "BASE = 0.25\n",
    "core/scale.py": "from hubfakeext.core.consts import BASE  # absolute, reached only transitively\n\nSCALE = 2.0 + BASE\n",
    "core/ops.py": textwrap.dedent("""
        import torch

        from . import scale as scale_mod


        def shift(x: torch.Tensor) -> torch.Tensor:
            from .consts import BASE  # a function-level relative import

            return x * scale_mod.SCALE + BASE
    """),
    "models/__init__.py": "",
    "models/consts.py": "OTHER = 1\n",
    "models/configuration_fake.py": textwrap.dedent("""
        from transformers import PreTrainedConfig


        class FakeConfig(PreTrainedConfig):
            model_type = "hf_ext_hub_fake"

            def __init__(self, vocab_size=128, hidden_size=16, num_hidden_layers=1, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2, tie_word_embeddings=False, **kwargs):
                self.vocab_size, self.hidden_size, self.num_hidden_layers = vocab_size, hidden_size, num_hidden_layers
                super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                                 tie_word_embeddings=tie_word_embeddings, **kwargs)
    """),
    "models/modeling_fake.py": textwrap.dedent("""
        import torch
        from torch import nn
        from transformers import GenerationMixin, PreTrainedModel
        from transformers.modeling_outputs import CausalLMOutputWithPast
        import hubfakeext.core.scale as scale, math as _math
        from hf_ext.core.inputs import (
            position_ids_from_mask,  # a multi-line import
        )
        from hubfakeext.core import consts
        from ..core.ops import shift
        from .configuration_fake import FakeConfig


        class FakeForCausalLM(PreTrainedModel, GenerationMixin):
            config_class = FakeConfig

            def __init__(self, config):
                super().__init__(config)
                self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
                self.pos = nn.Embedding(64, config.hidden_size)
                self.head = nn.Linear(config.hidden_size, config.vocab_size)
                self.post_init()

            def forward(self, input_ids, attention_mask=None, **kwargs):
                if attention_mask is None:
                    attention_mask = torch.ones_like(input_ids)
                h = self.embed(input_ids) + self.pos(position_ids_from_mask(attention_mask))
                h = shift(torch.tanh(h)) * scale.SCALE - consts.BASE * _math.pi
                h = (h * attention_mask[..., None]).cumsum(1)
                return CausalLMOutputWithPast(logits=self.head(h))


        class FakeEncoder(PreTrainedModel):
            config_class = FakeConfig

            def __init__(self, config):
                super().__init__(config)
                self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
                self.post_init()
    """),
    "models/modeling_bad_hf_ext.py": "from hf_ext import register\nfrom .modeling_fake import FakeForCausalLM\n\n\n"
                                     "class Bad(FakeForCausalLM):\n    pass\n",
    "models/modeling_bad_init.py": "from hubfakeext import VERSION\nfrom .modeling_fake import FakeForCausalLM\n\n\n"
                                   "class Bad(FakeForCausalLM):\n    pass\n",
    "models/modeling_bad_lazy.py": "from hf_ext.core import position_ids_from_mask\nfrom .modeling_fake import FakeForCausalLM\n\n\n"
                                   "class Bad(FakeForCausalLM):\n    pass\n",
    "models/modeling_bad_plain.py": "import hubfakeext.core.ops\nfrom .modeling_fake import FakeForCausalLM\n\n\n"
                                    "class Bad(FakeForCausalLM):\n    pass\n",
    "models/modeling_bad_string.py": "import importlib\nfrom .modeling_fake import FakeForCausalLM\n\n\n"
                                     "class Bad(FakeForCausalLM):\n    def ops(self):\n"
                                     "        return importlib.import_module('hf_ext.umup.fp8')\n",
    "models/modeling_bad_registry.py": "from .modeling_fake import FakeForCausalLM\n\nTARGET = dict(path='x')\n"
                                       "TARGET.update(model=str('hubfakeext.core.ops:scale'))\n\n\n"
                                       "class Bad(FakeForCausalLM):\n    pass\n",
    "models/modeling_bad_collide.py": "from hubfakeext.core.consts import BASE\nfrom hubfakeext.models.consts import OTHER\n"
                                      "from .modeling_fake import FakeForCausalLM\n\n\nclass Bad(FakeForCausalLM):\n    pass\n",
}


@pytest.fixture(scope="module")
def fakeext(tmp_path_factory):
    import importlib

    root = tmp_path_factory.mktemp("fakepkgs")
    for rel, text in FAKE_PACKAGE.items():
        file = root / "hubfakeext" / rel
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield importlib.import_module("hubfakeext.models.modeling_fake")
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m.split(".")[0] == "hubfakeext"]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def exported(toy, fakeext, tmp_path_factory):
    """The toy (with a card and its custom tokenizer) and the synthetic model, exported once per module."""
    tmp = tmp_path_factory.mktemp("exported")
    model, tokenizer = toy
    card = render_model_card("base", card_data={"license": "apache-2.0", "tags": ["test"]}, model_name="hub-toy",
                             remote_code=True, auto_class="AutoModelForCausalLM")
    toy_path = export_for_hub(model, tmp / "toy", card=card, tokenizer=tokenizer)
    assert toy_path == tmp / "toy"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        fake_model = fakeext.FakeForCausalLM(fakeext.FakeConfig()).eval()
    return {"toy": toy_path, "fake": export_for_hub(fake_model, tmp / "fake"), "fake_model": fake_model, "tmp": tmp}


@pytest.fixture(scope="module")
def remote(exported):
    """Both exports loaded with ``trust_remote_code=True`` in ONE fresh interpreter where hf_ext, tests and
    hubfakeext cannot be imported (one subprocess: importing transformers and the first from_pretrained take
    most of its ~15 s on 2 cores)."""
    tmp = exported["tmp"]
    inputs = tmp / "inputs.safetensors"
    save_file({"input_ids": TOY_IDS, "attention_mask": TOY_MASK}, inputs)
    jobs = {"toy": {"path": str(exported["toy"]), "inputs": str(inputs), "tokenizer": "HubToyTokenizer"},
            "fake": {"path": str(exported["fake"]), "inputs": str(inputs)}}
    return _load_remotely(tmp, jobs, blocked=("hf_ext", "tests", "hubfakeext"))


def test_export_vendors_every_import_form_transitively(exported):
    path = exported["fake"]
    code = {p.name: p.read_text() for p in path.glob("*.py")}
    # configuration + modeling, hf_ext.core.inputs, and core/{ops,scale,consts} reached through ops and scale
    assert set(code) == {"configuration_fake.py", "modeling_fake.py", "inputs.py", "ops.py", "scale.py", "consts.py"}
    assert "from .ops import shift" in code["modeling_fake.py"]
    assert "from . import scale as scale; import math as _math" in code["modeling_fake.py"]
    assert "from . import consts as consts" in code["modeling_fake.py"]
    assert "from .consts import BASE  # absolute" in code["scale.py"]
    assert "    from .consts import BASE  # a function-level" in code["ops.py"]
    for name, text in code.items():
        assert not {"hubfakeext", "hf_ext"} & _absolute_imports(text), name
        assert "hubfakeext" not in text, name
    config = json.loads((path / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_fake.FakeConfig",  # not registered: GenerationMixin
                                  "AutoModelForCausalLM": "modeling_fake.FakeForCausalLM"}


@pytest.mark.slow
def test_export_with_every_import_form_loads_without_the_packages(exported, remote):
    logits, generated = _reference(exported["fake_model"])
    assert torch.equal(remote["fake.logits"], logits)
    assert torch.equal(remote["fake.generated"], generated)


def test_export_uses_the_registered_auto_class(fakeext, tmp_path):
    from transformers import AutoModelForTokenClassification

    from hf_ext.hub import _model_auto_class

    assert _model_auto_class(fakeext.FakeEncoder, fakeext.FakeConfig) == "AutoModel"  # not registered, no generate
    AutoModelForTokenClassification.register(fakeext.FakeConfig, fakeext.FakeEncoder, exist_ok=True)
    path = export_for_hub(fakeext.FakeEncoder(fakeext.FakeConfig()), tmp_path / "enc")
    auto_map = json.loads((path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForTokenClassification"] == "modeling_fake.FakeEncoder"


@pytest.mark.parametrize("module, match", [
    ("modeling_bad_hf_ext", r"imports 'register' from the package 'hf_ext'.*from hf_ext\.auto import register"),
    ("modeling_bad_init", r"imports 'VERSION' from the package 'hubfakeext'"),
    ("modeling_bad_lazy", r"from hf_ext\.core\.inputs import position_ids_from_mask"),
    ("modeling_bad_plain", r"`import hubfakeext\.core\.ops` binds the package name"),
    ("modeling_bad_collide", r"would both become consts\.py"),
    ("modeling_bad_string", r"modeling_bad_string\.py:7: .* imports 'hf_ext\.umup\.fp8' by a string.*"
                            r"No module named 'hf_ext\.umup\.fp8'"),
    ("modeling_bad_registry", r"imports 'hubfakeext\.core\.ops:scale' by a string"),
])
def test_export_rejects_code_that_cannot_be_vendored(fakeext, tmp_path, module, match):
    import importlib

    bad = importlib.import_module(f"hubfakeext.models.{module}")
    with pytest.raises(ValueError, match=match):
        export_for_hub(bad.Bad(fakeext.FakeConfig()), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing is written when the code cannot be made self-contained


def test_export_bad_arguments(toy, tmp_path):
    model, _ = toy
    with pytest.raises(TypeError, match=r"PreTrainedModel, got torch\.nn\.modules\.linear\.Linear"):
        export_for_hub(torch.nn.Linear(2, 2), tmp_path / "x")
    with pytest.raises(TypeError, match="tokenizer must be"):
        export_for_hub(model, tmp_path / "x", tokenizer="gpt2")
    with pytest.raises(TypeError, match="card must be"):
        export_for_hub(model, tmp_path / "x", card="# README")
    with pytest.raises(ValueError, match="safetensors"):
        export_for_hub(model, tmp_path / "x", safe_serialization=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        export_for_hub(model, tmp_path / "file")


def test_export_builtin_model_needs_no_code(tmp_path):
    from transformers import AutoModelForCausalLM

    from hf_ext.testing import tiny_causal_lm

    model = tiny_causal_lm("gpt2", seed=0)
    path = export_for_hub(model, tmp_path / "gpt2")
    assert not list(path.glob("*.py"))
    assert "auto_map" not in json.loads((path / "config.json").read_text())
    reloaded = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(TOY_IDS).logits, model(TOY_IDS).logits)
