"""Catalogue cases: hf_ext.mad, hf_ext.dtm, hf_ext.atman, hf_ext.moral, hf_ext.diffusion (SLD, MultiFusion)."""

from __future__ import annotations

import functools
import json

import numpy as np
import torch

from hf_ext.atman import AtManControl, AtManExplainer, controls_to_weights, tile_units
from hf_ext.dtm import (
    fake_quantize_absmax,
    load_compressed,
    magnitude_prune,
    quantize_absmax,
    save_compressed,
)
from hf_ext.dtm.plan import CompressionPlan
from hf_ext.mad import MADStackConfig, MADTaskConfig, load_mad
from hf_ext.moral import MoralDirection
from hf_ext.tiny import tiny_tokenizer

from .cases_core import lm
from .catalogue import case, choice_cases, float_cases, int_cases
from .files import damaged_copies, scratch, without_key

# ----------------------------------------------------------------------------------------------------------- MAD
for name in ("vocab_size", "seq_len", "num_train_examples", "num_test_examples"):
    int_cases("mad.MADTaskConfig", lambda v, n=name: MADTaskConfig(**{n: v}), f"MADTaskConfig.{name}", min=1)
float_cases("mad.MADTaskConfig", lambda v: MADTaskConfig(frac_noise=v, noise_vocab_size=2), "frac_noise", min=0,
            max=1)
choice_cases("mad.MADTaskConfig", lambda v: MADTaskConfig(mode=v), "mode", bad=("slow", "", None))
for task in ("in-context-recall", "noisy-in-context-recall", "fuzzy-in-context-recall", "memorization",
             "compression", "selective-copying"):
    for vocab in (2, 3) if task != "compression" else (2,):  # compression: 2 content tokens suffice
        kw = {"num_tokens_to_copy": 2, "seq_len": 16} if task == "selective-copying" else {}
        case(f"mad.load_mad:{task}:vocab_size={vocab}",
             lambda t=task, v=vocab, k=kw: load_mad(t, vocab_size=v, num_train_examples=4, num_test_examples=2, **k),
             "vocab_size", str(vocab))
for name in ("hidden_size", "vocab_size", "max_position_embeddings", "num_attention_heads", "hyena_order"):
    int_cases("mad.MADStackConfig", lambda v, n=name: MADStackConfig(**{n: v}), f"MADStackConfig.{name}", min=1,
              size=True)
float_cases("mad.MADStackConfig", lambda v: MADStackConfig(rope_theta=v), "MADStackConfig.rope_theta", min=0,
            min_open=True)
case("mad.MADStackConfig:vocab*hidden absurd", lambda: MADStackConfig(vocab_size=2**20, hidden_size=2**16),
     "vocab_size", "1048576")
case("mad.load_mad:unknown task", lambda: load_mad("in-context-recal"), "in-context-recal")
case("mad.load_mad:unknown override", lambda: load_mad("in-context-recall", vocab=8), "vocab")

# ----------------------------------------------------------------------------------------------------------- DTM


def _enter(cm):
    with cm:
        pass


W = torch.randn(4, 8)
int_cases("dtm.quantize_absmax", lambda v: quantize_absmax(W, bits=v), "bits", min=2, max=8)
int_cases("dtm.fake_quantize_absmax", lambda v: fake_quantize_absmax(W, bits=v), "bits", min=2, max=8)
float_cases("dtm.magnitude_prune", lambda v: _enter(magnitude_prune(lm("gpt2"), "transformer.h.0.mlp.c_fc", v)),
            "sparsity", min=0, max=1)


@functools.cache
def compressed():
    return save_compressed(lm("gpt2"), CompressionPlan(), scratch() / "dtm")


def _dtm_damaged(kind):
    folder = damaged_copies(compressed(), f"dtm-{kind}")
    if kind == "no-plan":
        (folder / "dtm_plan.json").unlink()
    elif kind == "no-weights":
        (folder / "model.safetensors").unlink()
    else:
        path = folder / "model.safetensors"
        path.write_bytes(path.read_bytes()[:64])
    return folder


for kind, needle in (("no-plan", "dtm_plan.json"), ("no-weights", "model.safetensors"),
                     ("truncated", "model.safetensors")):
    case(f"dtm.load_compressed:{kind}", lambda k=kind: load_compressed(lm("gpt2"), _dtm_damaged(k)), needle,
         f"dtm-{kind}")

# ----------------------------------------------------------------------------------------------------------- AtMan
int_cases("atman.AtManControl", lambda v: AtManControl(v, 2, 0.5), "start", min=0)
int_cases("atman.AtManControl", lambda v: AtManControl(0, v, 0.5), "length", min=1)
float_cases("atman.AtManControl", lambda v: AtManControl(0, 2, v), "factor", min=0)
choice_cases("atman.AtManControl", lambda v: AtManControl(0, 2, 0.5, unit=v), "unit", bad=("word", "", None))
OFFSETS = torch.tensor([[0, 0], [0, 5], [5, 11]])  # an 11-character prompt
for start, length in ((11, 1), (10, 5), (100, 2)):
    case(f"atman.controls_to_weights:char control [{start}, {start + length}) beyond an 11-char prompt",
         lambda s=start, n=length: controls_to_weights(OFFSETS, [AtManControl(s, n, 0.0)]), "controls", str(start))
    case(f"atman.controls_to_weights:token control [{start}, {start + length}) beyond a 3-token prompt",
         lambda s=start, n=length: controls_to_weights(OFFSETS, [AtManControl(s, n, 0.0, unit="token")]),
         "controls", str(start))


@functools.cache
def explainer():
    return AtManExplainer(lm(), tiny_tokenizer(), progress=False)


int_cases("atman.AtManExplainer", lambda v: AtManExplainer(lm(), max_batch_size=v), "max_batch_size", min=1)
float_cases("atman.AtManExplainer", lambda v: AtManExplainer(lm(), suppression_factor=v), "suppression_factor",
            min=0, max=1)
int_cases("atman.AtManExplainer", lambda v: AtManExplainer(lm(), max_neighbours=v), "max_neighbours", min=0,
          allow_none=True)
vocab = lm().get_input_embeddings().num_embeddings
for bad in (vocab, vocab + 1, 10**6):
    case(f"atman.AtManExplainer.explain_ids:prompt id {bad}", lambda b=bad: explainer().explain_ids([1, b], [5]),
         "prompt_ids", str(bad))
    case(f"atman.AtManExplainer.explain_ids:target id {bad}", lambda b=bad: explainer().explain_ids([1, 2], [b]),
         "target_ids", str(bad))
int_cases("atman.tile_units", lambda v: tile_units([0, 1, 2, 3], (2, 2), tile=v), "tile", min=1)

# ----------------------------------------------------------------------------------------------------------- moral


@functools.cache
def moral_file():
    md = MoralDirection(np.ones(4, dtype=np.float32) / 2, np.zeros(4, dtype=np.float32), 1.0)
    md.save(scratch() / "moral")
    return scratch() / "moral"


def _moral_without(key):
    return without_key(moral_file(), f"moral-no-{key}", "moral_direction.json", key)


for key in ("norm", "dim", "format"):
    case(f"moral.MoralDirection.load:json without {key!r}", lambda k=key: MoralDirection.load(_moral_without(k)),
         repr(key), "moral-no-")


def _moral_truncated():
    folder = damaged_copies(moral_file(), "moral-trunc")
    path = next(folder.glob("*.safetensors"))
    path.write_bytes(path.read_bytes()[:10])
    return folder


def _moral_edited_with_manifest():
    folder = damaged_copies(moral_file(), "moral-edited-manifest", keep_manifest=True)
    data = json.loads((folder / "moral_direction.json").read_text())
    del data["norm"]
    (folder / "moral_direction.json").write_text(json.dumps(data))
    return folder


case("moral.MoralDirection.load:json changed after saving (manifest kept)",
     lambda: MoralDirection.load(_moral_edited_with_manifest()), "moral_direction.json", "moral-edited-manifest")
case("moral.MoralDirection.load:truncated safetensors", lambda: MoralDirection.load(_moral_truncated()),
     "moral-trunc", ".safetensors")
case("moral.MoralDirection.load:missing", lambda: MoralDirection.load(scratch() / "nothing-here"), "nothing-here",
     types=(FileNotFoundError,))
float_cases("moral.MoralDirection", lambda v: MoralDirection(np.ones(4) / 2, np.zeros(4), v), "norm", min=0,
            min_open=True)
