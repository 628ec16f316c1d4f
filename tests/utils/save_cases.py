"""Every artifact hf_ext writes, as (build, save, load) for the interrupted-save tests.

``build(seed)`` makes a tiny object (two seeds give different contents), ``save(obj, path)`` writes it the way a user
does, ``load(path)`` reads it back the way a user does and returns a *fingerprint*: a dict of plain values (tensor
bytes as sha256, config fields) that equals ``fingerprint(build(seed))`` saved and loaded. Run as a script, the module
is the child process: ``python save_cases.py CASE PATH LIMIT [LIMIT ...]`` builds seed 1 and saves it over ``PATH``
once per file-size limit (``RLIMIT_FSIZE``; ``SIGXFSZ`` ignored so a write past the limit raises ``OSError``), and
prints how many attempts were cut short.
"""

from __future__ import annotations

import hashlib
import json
import resource
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _digest(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().contiguous()
        return hashlib.sha256(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"").hexdigest()
    return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()


def _state(module: torch.nn.Module) -> dict[str, str]:
    return {k: _digest(v) for k, v in sorted(module.state_dict().items())}


def _files(path: Path) -> dict[str, str]:
    """The artifact's files (those its manifest lists, checked against it) → sha256 of their bytes."""
    from hf_ext.utils.saving import verify_manifest

    manifest = verify_manifest(path)
    assert manifest is not None, f"{path} has no manifest"
    return {rel: hashlib.sha256((path / rel).read_bytes()).hexdigest() for rel in sorted(manifest["files"])}


# ------------------------------------------------------------------------------------------------------------- SCAR
def _scar_build(seed):
    from hf_ext.scar import ScarAdapter
    from hf_ext.tiny import tiny_causal_lm

    torch.manual_seed(seed)
    return ScarAdapter.for_model(tiny_causal_lm("gpt2", seed=0), layer=seed % 2, concepts=[f"concept{seed}"])


def _scar_load(path):
    from hf_ext.scar import ScarAdapter

    adapter = ScarAdapter.from_pretrained(path)
    return {"layer": adapter.config.layer, "concepts": list(adapter.config.concepts), **_state(adapter)}


# ------------------------------------------------------------------------------------------------------------- T-FREE
_WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ate", "a", "bone"]


def _tfree_model_build(seed):
    from hf_ext.tfree.training import tiny_tfree

    return tiny_tfree("llama", hidden_size=32, words=_WORDS, hash_vocab_size=1024, num_activations=4, seed=seed)[0]


def _tfree_model_load(path):
    from hf_ext.tfree import TFreeForCausalLM

    return _state(TFreeForCausalLM.from_pretrained(path))


def _tfree_tokenizer_build(seed):
    from hf_ext.tfree import TFreeTokenizer

    return TFreeTokenizer(words=_WORDS[seed:] + [f"extra{seed}"], hash_vocab_size=512 + seed, num_activations=4)


def _tfree_tokenizer_load(path):
    from hf_ext.tfree import TFreeTokenizer

    tok = TFreeTokenizer.from_pretrained(path)
    return {"words": list(tok.words), "hash": tok.hash_config()}


# ------------------------------------------------------------------------------------------------------------- u-μP
def _umup_build(seed):
    from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM

    torch.manual_seed(seed)
    return UMupLlamaForCausalLM(UMupConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=2, umup_attn_seq_len=12))


def _umup_load(path):
    from hf_ext.umup import UMupLlamaForCausalLM

    return _state(UMupLlamaForCausalLM.from_pretrained(path))


# ------------------------------------------------------------------------------------------------------------- moral
def _moral_build(seed):
    from hf_ext.moral import MoralDirection

    rng = np.random.default_rng(seed)
    return MoralDirection(rng.normal(size=4096), rng.normal(size=4096), 1.0 + seed, language="en",
                          encoder_name=f"enc{seed}")


def _moral_load(path):
    from hf_ext.moral import MoralDirection

    md = MoralDirection.load(path)
    return {"direction": _digest(md.direction), "mean": _digest(md.mean), "norm": md.norm, "enc": md.encoder_name}


# ------------------------------------------------------------------------------------------------------------- DTM
def _dtm_build(seed):
    from hf_ext.dtm import CompressionPlan, apply_plan
    from hf_ext.tiny import tiny_causal_lm

    model = tiny_causal_lm("llama", seed=seed)
    plan = CompressionPlan(int8=[f"model.layers.{seed % 2}.mlp.down_proj"], base_model=f"seed{seed}")
    apply_plan(model, plan)
    return model, plan


def _dtm_save(obj, path):
    from hf_ext.dtm import save_compressed

    save_compressed(obj[0], obj[1], path)


def _dtm_load(path):
    from hf_ext.dtm import load_compressed
    from hf_ext.dtm.plan import CompressionPlan
    from hf_ext.tiny import tiny_causal_lm

    plan = CompressionPlan.from_json((Path(path) / "dtm_plan.json").read_text())
    model, plan = load_compressed(tiny_causal_lm("llama", seed=7), path)
    return {"plan": plan.to_json(), **_state(model)}


def _plan_build(seed):
    from hf_ext.dtm.plan import CompressionPlan

    return CompressionPlan(int8=[f"layer.{i}" for i in range(200 * (seed + 1))], base_model=f"seed{seed}")


def _plan_load(path):
    from hf_ext.dtm.plan import CompressionPlan

    return {"plan": CompressionPlan.load(Path(path) / "plan.json").to_json()}


def _logits_build(seed):
    from hf_ext.dtm.logit_cache import ReferenceLogits

    torch.manual_seed(seed)
    return ReferenceLogits.from_logits(torch.randn(64, 97), 8)


def _logits_load(path):
    from hf_ext.dtm.logit_cache import ReferenceLogits

    ref = ReferenceLogits.load(path)
    return {"logprobs": _digest(ref.logprobs), "indices": _digest(ref.indices), "tail": _digest(ref.tail_logmass)}


# ------------------------------------------------------------------------------------------------------------- diffusion
def _pipe_state(pipe) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            out.update({f"{name}.{k}": v for k, v in _state(component).items()})
    return out


def _sld_build(seed):
    from hf_ext.diffusion.sld import SafeLatentDiffusionPipeline
    from hf_ext.tiny import tiny_sd_components

    return SafeLatentDiffusionPipeline(**tiny_sd_components(seed=seed), safety_concept=f"concept {seed}")


def _sld_load(path):
    from hf_ext.diffusion.sld import SafeLatentDiffusionPipeline

    pipe = SafeLatentDiffusionPipeline.from_pretrained(path)
    return {"concept": pipe.safety_concept, **_pipe_state(pipe)}


def _multifusion_build(seed):
    from hf_ext.diffusion.multifusion import MultiFusionPipeline, tiny_multifusion_components

    return MultiFusionPipeline(**tiny_multifusion_components(seed=seed))


def _multifusion_load(path):
    from hf_ext.diffusion.multifusion import MultiFusionPipeline

    return _pipe_state(MultiFusionPipeline.from_pretrained(path))


def _mvader_build(seed):
    from hf_ext.diffusion.multifusion import MultiFusionPipeline, tiny_multifusion_components
    from hf_ext.diffusion.mvader import MVaderPipeline

    return MVaderPipeline.from_multifusion(MultiFusionPipeline(**tiny_multifusion_components(
        seed=seed, encoder="magma", family="qwen2")))


def _mvader_load(path):
    from hf_ext.diffusion.mvader import MVaderPipeline

    return _pipe_state(MVaderPipeline.from_pretrained(path))


# ------------------------------------------------------------------------------------------------------------- MAD, hub
def _mad_build(seed):
    from hf_ext.mad.config import baseline

    return [baseline("memorization", num_train_examples=64, num_test_examples=16, seed=seed, mode="fast")]


def _mad_save(configs, path):
    from hf_ext.mad import export_parquet

    export_parquet(path, configs, progress=False)


def _export_build(seed):
    from hf_ext.tfree.training import tiny_tfree

    return tiny_tfree("llama", hidden_size=32, words=_WORDS, hash_vocab_size=1024, num_activations=4, seed=seed)


def _export_save(obj, path):
    from hf_ext.hub import export_for_hub

    export_for_hub(obj[0], path, tokenizer=obj[1], overwrite=True)


def _export_load(path):
    from transformers import AutoModelForCausalLM

    import hf_ext.tfree  # noqa: F401 - registers T-FREE with the Auto classes

    _files(Path(path))  # the manifest covers the vendored code too
    return _state(AutoModelForCausalLM.from_pretrained(path))


def _checkpoint_build(seed):
    torch.manual_seed(seed)
    return {"w": torch.randn(64, 64), "b": torch.randn(64)}


def _checkpoint_save(params, path):
    from hf_ext.diffusion.multifusion.checkpoint import save_checkpoint

    save_checkpoint(path, params, state={"step": int(params["b"][0] * 1000)})


def _checkpoint_load(path):
    from hf_ext.diffusion.multifusion.checkpoint import load_checkpoint

    params = {"w": torch.zeros(64, 64), "b": torch.zeros(64)}
    state = load_checkpoint(path, params)
    return {"state": state, **{k: _digest(v) for k, v in params.items()}}


def _save_pretrained(obj, path):
    obj.save_pretrained(path)


CASES: dict[str, tuple[Any, Any, Any]] = {
    "scar_adapter": (_scar_build, _save_pretrained, _scar_load),
    "tfree_model": (_tfree_model_build, _save_pretrained, _tfree_model_load),
    "tfree_tokenizer": (_tfree_tokenizer_build, _save_pretrained, _tfree_tokenizer_load),
    "umup_model": (_umup_build, _save_pretrained, _umup_load),
    "moral_direction": (_moral_build, lambda md, path: md.save(path), _moral_load),
    "dtm_compressed": (_dtm_build, _dtm_save, _dtm_load),
    "dtm_plan": (_plan_build, lambda plan, path: plan.save(Path(path) / "plan.json"), _plan_load),
    "dtm_reference_logits": (_logits_build, lambda ref, path: ref.save(path), _logits_load),
    "sld_pipeline": (_sld_build, _save_pretrained, _sld_load),
    "multifusion_pipeline": (_multifusion_build, _save_pretrained, _multifusion_load),
    "mvader_pipeline": (_mvader_build, _save_pretrained, _mvader_load),
    "multifusion_checkpoint": (_checkpoint_build, _checkpoint_save, _checkpoint_load),
    "mad_parquet": (_mad_build, _mad_save, lambda path: _files(Path(path))),
    "export_for_hub": (_export_build, _export_save, _export_load),
}


def child(case: str, path: str, limits: list[int]) -> int:
    """Save seed 1 over ``path`` once per file-size limit; returns how many attempts were cut short."""
    build, save, _ = CASES[case]
    obj = build(1)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of a kill
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    failed = 0
    for limit in limits:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            save(obj, path)
        except Exception as err:  # noqa: BLE001 - EFBIG surfaces as OSError, or wrapped (SafetensorError, ...)
            failed += 1
            print(f"attempt at limit {limit}: {type(err).__name__}: {str(err)[:200]}", file=sys.stderr)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    return failed


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps({"failed": child(sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3:]])}))
