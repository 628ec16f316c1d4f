"""export_for_hub: a T-FREE model + tokenizer load with trust_remote_code where hf_ext cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from hf_ext.testing import time_factor

from .conftest import tfree_model

LOADER = textwrap.dedent("""
    import importlib.abc, json, sys
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"hf_ext", "tests"}:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None
    sys.meta_path.insert(0, Blocker())
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(1)
    path = sys.argv[1]
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    ids = tok(["the cat sat"], return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=1, eos_token_id=None)
    print(json.dumps({"ids": ids.tolist(), "generated": out.tolist(), "tokenizer": type(tok).__name__,
                      "leaked": sorted(m for m in sys.modules if m.split(".")[0] == "hf_ext")}))
""")


@pytest.mark.slow
def test_export_loads_without_hf_ext(tmp_path):
    from hf_ext.hub import export_for_hub

    model, tok = tfree_model("llama")
    classes = (type(model), type(model.config), type(tok))
    saved = [c.__dict__.get("_auto_class") for c in classes]
    path = export_for_hub(model, tmp_path / "export", tokenizer=tok)
    # the auto_map is in the files only: no class registered, the live config untouched
    assert [c.__dict__.get("_auto_class") for c in classes] == saved
    assert getattr(model.config, "auto_map", None) is None
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "mods")}
    proc = subprocess.run([sys.executable, "-c", LOADER, str(path)], capture_output=True, text=True, timeout=300 * time_factor(),
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["tokenizer"] == "TFreeTokenizer" and res["leaked"] == []
    ids = torch.tensor(res["ids"])
    assert ids.tolist() == tok(["the cat sat"], return_tensors="pt").input_ids.tolist()
    local = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=1, eos_token_id=None)
    assert res["generated"] == local.tolist()
