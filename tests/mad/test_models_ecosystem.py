"""MADStackForCausalLM in the transformers ecosystem: ``generate()`` (greedy = a manual argmax loop), a plain
``Trainer`` with default arguments on a MAD dataset (``targets`` kept), and a self-contained Hub export that reloads
with ``trust_remote_code`` in a subprocess where hf_ext cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from hf_ext.mad.config import baseline
from hf_ext.mad.generators import generate
from hf_ext.mad.models import MADStackConfig, MADStackForCausalLM, aligned_cross_entropy
from hf_ext.testing import time_factor

LAYERS = ["mh-attention,swiglu,hyena,mamba", "mh-hyena sliding-attention mlp", "(mamba swiglu)x2"]


def _model(layers: str, vocab: int = 16, seed: int = 0) -> MADStackForCausalLM:
    cfg = MADStackConfig(layers=layers, hidden_size=32, vocab_size=vocab, num_attention_heads=4,
                         max_position_embeddings=64, sliding_window=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MADStackForCausalLM(cfg).eval()


@pytest.mark.parametrize("layers", LAYERS)
def test_greedy_generate_equals_manual_argmax_loop(layers):
    model = _model(layers)
    prompt = torch.randint(0, 16, (3, 7), generator=torch.Generator().manual_seed(1))
    out = model.generate(prompt, max_new_tokens=9, do_sample=False)
    ids = prompt.clone()
    with torch.no_grad():
        for _ in range(9):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ids)


def test_trainer_with_default_arguments_trains_on_targets(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    cfg = baseline("CR", vocab_size=16, seq_len=32, num_train_examples=48, num_test_examples=8)
    x, y = generate(cfg, "train")
    ds = Dataset.from_dict({"input_ids": x.tolist(), "targets": y.tolist()})
    model = _model("mh-attention,swiglu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path)), train_dataset=ds)
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "targets"}  # remove_unused_columns=True keeps targets
    with torch.no_grad():
        expected = aligned_cross_entropy(model(batch["input_ids"]).logits, batch["targets"])
        assert torch.allclose(trainer.compute_loss(model, batch), expected)
    result = trainer.train()
    assert np.isfinite(result.training_loss)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the documented evaluate recipe
    xt, yt = generate(cfg, "test")
    eval_args = TrainingArguments(output_dir=str(tmp_path / "eval"), label_names=["targets"])
    metrics = Trainer(model=model, args=eval_args).evaluate(
        Dataset.from_dict({"input_ids": xt.tolist(), "targets": yt.tolist()}))
    with torch.no_grad():
        direct = aligned_cross_entropy(model(torch.tensor(xt)).logits, torch.tensor(yt)).item()
    assert metrics["eval_loss"] == pytest.approx(direct, rel=1e-5)


LOADER = textwrap.dedent("""
    import importlib.abc, json, sys
    paths, out = json.loads(sys.argv[1]), sys.argv[2]

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("hf_ext", "tests"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    import torch
    from transformers import AutoModelForCausalLM

    ids = torch.tensor(json.loads(sys.argv[3]))
    results = {}
    for key, path in paths.items():
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        with torch.no_grad():
            logits = model(ids).logits
        generated = model.generate(ids, max_new_tokens=4, do_sample=False, use_cache=False)
        results[key] = {"logits": logits.tolist(), "generated": generated.tolist()}
    results["leaked"] = sorted(m for m in sys.modules if m.split(".")[0] == "hf_ext")
    json.dump(results, open(out, "w"))
""")


@pytest.mark.slow
def test_export_for_hub_reloads_without_hf_ext(tmp_path):
    """A MADStack and the u-μP model of ``hf-ext mad run --arch umup`` both reload where hf_ext is absent."""
    import os

    from hf_ext.hub import export_for_hub
    from hf_ext.mad.bench import make_model

    models = {"madstack": _model("mh-attention,swiglu,hyena,mamba,mh-hyena,sliding-attention"),
              "umup": make_model("umup", baseline("CR", vocab_size=16, seq_len=32), hidden_size=32, num_layers=2).eval()}
    folders = {}
    for key, model in models.items():
        folders[key] = str(export_for_hub(model, tmp_path / key))
        assert (tmp_path / key / "generation_config.json").exists()
        assert json.loads((tmp_path / key / "config.json").read_text())["auto_map"]
        # the export leaves no global state behind: a plain save afterwards copies no code and has no auto_map
        assert type(model)._auto_class is None and getattr(model.config, "auto_map", None) is None
        model.save_pretrained(tmp_path / f"{key}-plain")
        assert not list((tmp_path / f"{key}-plain").glob("*.py"))
        assert "auto_map" not in json.loads((tmp_path / f"{key}-plain" / "config.json").read_text())
    ids = [[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1")
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-c", LOADER, json.dumps(folders), str(out), json.dumps(ids)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300 * time_factor())
    assert proc.returncode == 0, proc.stderr[-4000:]
    remote = json.loads(out.read_text())
    assert remote["leaked"] == []
    for key, model in models.items():
        with torch.no_grad():
            logits = model(torch.tensor(ids)).logits
        torch.testing.assert_close(torch.tensor(remote[key]["logits"]), logits, rtol=1e-5, atol=1e-5)
        expected = model.generate(torch.tensor(ids), max_new_tokens=4, do_sample=False, use_cache=False)
        assert remote[key]["generated"] == expected.tolist(), key
