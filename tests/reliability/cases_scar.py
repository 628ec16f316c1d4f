"""Catalogue cases: hf_ext.scar (config, adapter, persistence, detection, steering)."""

from __future__ import annotations

import functools
import json

import torch

from hf_ext.scar import ScarAdapter, ScarConfig, ScarModel, auroc

from .cases_core import lm
from .catalogue import bool_cases, case, choice_cases, float_cases, int_cases
from .files import damaged_copies, scratch, without_key


def cfg(**kw):
    return ScarConfig(**{"n_inputs": 64, "layer": 0, "concepts": ["toxicity"], **kw})


for name in ("n_inputs", "n_latents", "k"):
    int_cases("scar.ScarConfig", lambda v, n=name: cfg(**{n: v}), f"ScarConfig.{name}", min=1, size=True,
              allow_none=name != "n_inputs")
int_cases("scar.ScarConfig", lambda v: cfg(layer=v), "ScarConfig.layer")
choice_cases("scar.ScarConfig", lambda v: cfg(site=v), "ScarConfig.site")
choice_cases("scar.ScarConfig", lambda v: cfg(steering_output=v), "ScarConfig.steering_output")
for bad in (None, "", 3):
    case(f"scar.ScarConfig:site='module', site_module={bad!r}", lambda b=bad: cfg(site="module", site_module=b),
         "site_module", repr(bad))
case("scar.ScarConfig:site_module without site='module'", lambda: cfg(site="mlp", site_module="model.layers.0"),
     "site_module", "'model.layers.0'")
for name in ("eps", "bce_weight", "pos_grad_scale"):
    float_cases("scar.ScarConfig", lambda v, n=name: cfg(**{n: v}), f"ScarConfig.{name}", min=0)
for name in ("normalize", "tied_init"):
    bool_cases("scar.ScarConfig", lambda v, n=name: cfg(**{n: v}), f"ScarConfig.{name}")
for bad in ("abc", [], ["a", "a"], ["a", 3], ["", "b"], {"a": 1}, 7):
    case(f"scar.ScarConfig:concepts={bad!r}", lambda b=bad: cfg(concepts=b), "concepts", repr(bad))
case("scar.ScarConfig:k > n_latents", lambda: cfg(n_latents=8, k=9), "k=9", "n_latents=8")
case("scar.ScarConfig:n_latents*n_inputs absurd", lambda: cfg(n_inputs=2**20, n_latents=2**20), "n_latents",
     "1048576")


@functools.cache
def adapter():
    return ScarAdapter.for_model(lm(), layer=0, concepts=["toxicity", "formality"])


@functools.cache
def attached():
    return ScarAdapter.for_model(lm("gpt2"), layer=0, concepts=["toxicity"]).attach(lm("gpt2"))


def _enter(cm):
    with cm:
        pass


for bad in ("all", 2, -3, 1.5, "1", True):
    case(f"scar.ScarAdapter.for_model:layer={bad!r}",
         lambda b=bad: ScarAdapter.for_model(lm(), layer=b, concepts=["t"]), "layer", repr(bad))
case("scar.ScarAdapter.for_model:concepts='abc'",
     lambda: ScarAdapter.for_model(lm(), layer=0, concepts="abc"), "concepts", "'abc'")
case("scar.ScarAdapter.steer:never attached", lambda: _enter(adapter().steer({"toxicity": -10.0})),
     "not attached", "attach(model)")
case("scar.ScarAdapter.reconstruct:never attached", lambda: _enter(adapter().reconstruct()), "not attached")
case("scar.ScarAdapter.detect:never attached", lambda: adapter().detect(torch.tensor([[1, 2]])), "not attached")
case("scar.ScarAdapter.attach:other family", lambda: ScarAdapter(adapter().config).attach(lm("gpt2")),
     "mismatch", "llama")
vocab_gpt2 = lm("gpt2").get_input_embeddings().num_embeddings
for bad in (vocab_gpt2, 10**5, -2):
    case(f"scar.ScarAdapter.detect:input_ids={bad}", lambda b=bad: attached().detect(torch.tensor([[1, b]])),
         "input_ids", str(bad))
for bad in ("nope", 5, -1, True, 1.5):
    case(f"scar.ScarConfig.concept_index:concept={bad!r}", lambda b=bad: adapter().config.concept_index(b),
         "concept", repr(bad))
    case(f"scar.ScarAdapter.steer:strengths={{{bad!r}: -1}}",
         lambda b=bad: _enter(attached().steer({b: -1.0})), repr(bad))
for bad in (float("nan"), float("inf"), "strong"):
    case(f"scar.ScarAdapter.steer:strength={bad!r}", lambda b=bad: _enter(attached().steer({"toxicity": b})),
         repr(bad))
case("scar.ScarModel:no base model", lambda: ScarModel(cfg()), "base model")
case("scar.auroc:one class only", lambda: auroc([0.1, 0.2], [1, 1]), "labels")


# --------------------------------------------------------------------------------------------------------------------
# strict loading
# --------------------------------------------------------------------------------------------------------------------


@functools.cache
def saved():
    return adapter().save_pretrained(scratch() / "scar", card=False)


def _without(key):
    return without_key(saved(), f"scar-no-{key}", "config.json", key)


for key in ("k", "layer", "site", "concepts", "n_inputs", "n_latents", "base_model_type", "base_hidden_size",
            "base_num_layers", "model_type"):
    case(f"scar.ScarAdapter.from_pretrained:config.json without {key!r}",
         lambda k=key: ScarAdapter.from_pretrained(_without(k)), repr(key), "config.json")


def _missing(name):
    folder = damaged_copies(saved(), f"scar-missing-{name}")
    (folder / name).unlink()
    return folder


for name in ("config.json", "adapter_model.safetensors"):
    case(f"scar.ScarAdapter.from_pretrained:no {name}", lambda n=name: ScarAdapter.from_pretrained(_missing(n)),
         name, "scar-missing", types=(FileNotFoundError,))


def _truncated(nbytes):
    folder = damaged_copies(saved(), f"scar-trunc-{nbytes}")
    path = folder / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:nbytes])
    return folder


for nbytes in (0, 4, 9, 100, 2000):
    case(f"scar.ScarAdapter.from_pretrained:weights truncated to {nbytes} B",
         lambda n=nbytes: ScarAdapter.from_pretrained(_truncated(n)), "adapter_model.safetensors")


def _garbled_config():
    folder = damaged_copies(saved(), "scar-garbled")
    (folder / "config.json").write_text('{"k": 3, ')
    return folder


case("scar.ScarAdapter.from_pretrained:config.json not JSON", lambda: ScarAdapter.from_pretrained(_garbled_config()),
     "config.json", "JSON")
case("scar.ScarAdapter.from_pretrained:no such folder",
     lambda: ScarAdapter.from_pretrained(scratch() / "no-such-adapter", local_files_only=True), "no-such-adapter")
case("scar.ScarAdapter.from_pretrained:bad option", lambda: ScarAdapter.from_pretrained(saved(), proxies={}),
     "proxies")


def _other_base():
    folder = damaged_copies(saved(), "scar-other-base")
    data = json.loads((folder / "config.json").read_text())
    data["base_model_type"] = "gpt2"
    (folder / "config.json").write_text(json.dumps(data))
    return folder


def _edited_with_manifest():
    folder = damaged_copies(saved(), "scar-edited-manifest", keep_manifest=True)
    path = folder / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-8])
    return folder


case("scar.ScarAdapter.from_pretrained:file changed after saving (manifest kept)",
     lambda: ScarAdapter.from_pretrained(_edited_with_manifest()), "adapter_model.safetensors", "scar-edited-manifest")
case("scar.ScarAdapter.from_pretrained:base mismatch", lambda: ScarAdapter.from_pretrained(_other_base(), lm()),
     "mismatch", "gpt2")
