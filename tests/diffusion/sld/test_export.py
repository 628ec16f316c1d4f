"""A saved SLD pipeline loads with plain ``DiffusionPipeline.from_pretrained(dir, trust_remote_code=True)`` in a
Python where hf_ext cannot be imported, and generates the same images as the in-process pipeline."""

from __future__ import annotations

import ast
import json
import os
import site
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from hf_ext.diffusion.sld import SafeLatentDiffusionPipeline, SafeLatentDiffusionXLPipeline, SLDConcept

from .conftest import gen

CONCEPTS = ["violence", SLDConcept("nudity", guidance_scale=3000.0, warmup_steps=0, momentum_scale=0.5)]
CALL = dict(num_inference_steps=3, sld_warmup_steps=1)

# Runs with ``python -I -S``: no user site, no PYTHONPATH, no cwd on sys.path and no ``.pth`` processing, so the
# editable install's finder for hf_ext is absent; only the plain site-packages folders are put on sys.path.
CHILD = textwrap.dedent("""
    import sys
    sys.path[:0] = {site_dirs!r}
    try:
        import hf_ext
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit(f"hf_ext is importable here ({{hf_ext.__file__}}): the check would be vacuous")
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline
    from safetensors.torch import save_file

    torch.set_num_threads({threads})
    pipe = DiffusionPipeline.from_pretrained({folder!r}, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    assert not any(m.startswith("hf_ext") for m in sys.modules), sorted(m for m in sys.modules if "hf_ext" in m)
    out = {{}}
    for kind in ("latent", "np"):
        images = pipe("a photo of a cat", generator=torch.Generator().manual_seed(0), output_type=kind,
                      **{call!r}).images
        out[kind] = torch.as_tensor(np.asarray(images)).contiguous()
    # the loaded copy saves a folder that loads again the same way (vendoring the vendored code)
    pipe.save_pretrained({folder!r} + "_again")
    again = DiffusionPipeline.from_pretrained({folder!r} + "_again", trust_remote_code=True)
    again.set_progress_bar_config(disable=True)
    out["again"] = again("a photo of a cat", generator=torch.Generator().manual_seed(0), output_type="latent",
                         **{call!r}).images.contiguous()
    save_file(out, {result!r})
    print(type(pipe).__module__, type(pipe).__name__, pipe.safety_concept)
""")


def _imported_modules(source: str) -> list[str]:
    nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return [a.name for n in nodes if isinstance(n, ast.Import) for a in n.names] + [
        n.module for n in nodes if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module]


def _site_dirs() -> list[str]:
    """This interpreter's site-packages folders (the venv's: it lives inside the repository, but its
    site-packages holds no hf_ext, only the editable finder that ``-S`` leaves unloaded; the child checks it)."""
    return [d for d in [*site.getsitepackages(), site.getusersitepackages()] if os.path.isdir(d)]


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_saved_pipeline_loads_without_hf_ext(kind, sd_components, sdxl_components, tmp_path):
    cls, comps = ((SafeLatentDiffusionPipeline, sd_components) if kind == "sd"
                  else (SafeLatentDiffusionXLPipeline, sdxl_components))
    pipe = cls(**comps, safety_concept=CONCEPTS)
    pipe.set_progress_bar_config(disable=True)
    folder = tmp_path / "saved"
    pipe.save_pretrained(folder)
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == ["pipeline", cls.__name__]
    for path in folder.glob("*.py"):  # every hf_ext import was rewritten to a same-folder one
        assert not [m for m in _imported_modules(path.read_text()) if m.split(".")[0] == "hf_ext"], path.name

    result = tmp_path / "out.safetensors"
    script = CHILD.format(site_dirs=_site_dirs(), threads=torch.get_num_threads(), folder=str(folder),
                          call=CALL, result=str(result))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    module, name, concept = proc.stdout.strip().splitlines()[-1].split(" ", 2)
    assert module.startswith("diffusers_modules.") and name == cls.__name__, proc.stdout
    assert "nudity" in concept and "3000.0" in concept

    child = load_file(str(result))
    assert torch.equal(child["again"], child["latent"])
    for out_kind in ("latent", "np"):
        ours = pipe("a photo of a cat", generator=gen(0), output_type=out_kind, **CALL).images
        ours = torch.as_tensor(ours)
        assert torch.equal(ours, child[out_kind]), f"{out_kind}: max diff {(ours - child[out_kind]).abs().max()}"


def test_own_class_still_loads_its_own_code(sd_components, tmp_path):
    """``SafeLatentDiffusionPipeline.from_pretrained`` on a vendored folder gives hf_ext's class, no remote code."""
    SafeLatentDiffusionPipeline(**sd_components, safety_concept=CONCEPTS).save_pretrained(tmp_path / "p")
    loaded = SafeLatentDiffusionPipeline.from_pretrained(tmp_path / "p")
    assert type(loaded) is SafeLatentDiffusionPipeline and loaded.safety_concept == CONCEPTS
    from diffusers import DiffusionPipeline

    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(tmp_path / "p")
