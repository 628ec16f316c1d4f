"""Catalogue cases: hf_ext.tfree and hf_ext.umup."""

from __future__ import annotations

import functools

import torch

from hf_ext.tfree import TFreeConfig, TFreeTokenizer, TrigramHasher, tiny_tfree, train_tfree
from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM, umup_optimizer, umup_param_groups

from .catalogue import case, choice_cases, float_cases, int_cases
from .files import damaged_copies, scratch, without_key

# ----------------------------------------------------------------------------------------------------------- T-FREE
int_cases("tfree.TrigramHasher", lambda v: TrigramHasher(vocab_size=v, num_activations=1), "hash_vocab_size", min=1)
int_cases("tfree.TrigramHasher", lambda v: TrigramHasher(vocab_size=64, num_activations=v), "num_activations", min=1,
          max=64)
int_cases("tfree.TFreeTokenizer", lambda v: TFreeTokenizer(hash_vocab_size=64, num_activations=4,
                                                           num_lowercase_activations=v), "num_lowercase_activations",
          min=0, max=4)
choice_cases("tfree.TFreeTokenizer", lambda v: TFreeTokenizer(hash_scheme=v), "hash_scheme")
choice_cases("tfree.TFreeTokenizer", lambda v: TFreeTokenizer(trigram_unit=v), "trigram_unit")
for bad in ("abc", [1, 2], "", b"xy"):
    case(f"tfree.TFreeTokenizer:words={bad!r}", lambda b=bad: TFreeTokenizer(words=b), "words")
for name in ("pos_weight", "loss_scale", "dictionary_logit_scale"):
    float_cases("tfree.TFreeConfig", lambda v, n=name: TFreeConfig(**{n: v}), name, min=0, min_open=True)
case("tfree.TFreeConfig:hash_vocab_size=10**12", lambda: TFreeConfig(hash_vocab_size=10**12), "hash_vocab_size",
     "1000000000000")


@functools.cache
def tfree():
    return tiny_tfree()


int_cases("tfree.train_tfree", lambda v: train_tfree(*tfree(), ["a b c d e f"], steps=v, progress=False), "steps",
          min=1)
int_cases("tfree.train_tfree", lambda v: train_tfree(*tfree(), ["a b c d e f"], steps=1, max_words=v,
                                                     progress=False), "max_words", min=2)
int_cases("tfree.TFreeTokenizer.encode_activations",
          lambda v: tfree()[1].encode_activations(["hello world"], max_words=v), "max_words", min=1,
          allow_none=True)


@functools.cache
def saved_tokenizer():
    return tfree()[1].save_pretrained(scratch() / "tfree-tok") and scratch() / "tfree-tok"


def _tok_without(name):
    folder = damaged_copies(saved_tokenizer(), f"tfree-no-{name}")
    (folder / name).unlink()
    return folder


for name in ("words.json", "tokenizer_config.json"):
    case(f"tfree.TFreeTokenizer.from_pretrained:no {name}",
         lambda n=name: TFreeTokenizer.from_pretrained(_tok_without(n)), name, "tfree-no-",
         types=(FileNotFoundError,))


def _tok_config_without(key):
    return without_key(saved_tokenizer(), f"tfree-nokey-{key}", "tokenizer_config.json", key)


for key in ("hash_vocab_size", "num_activations", "hash_scheme", "trigram_unit"):
    case(f"tfree.TFreeTokenizer.from_pretrained:tokenizer_config.json without {key!r}",
         lambda k=key: TFreeTokenizer.from_pretrained(_tok_config_without(k)), repr(key), "tokenizer_config.json")


def _words_garbled():
    folder = damaged_copies(saved_tokenizer(), "tfree-garbled")
    (folder / "words.json").write_text('["a", ')
    return folder


case("tfree.TFreeTokenizer.from_pretrained:words.json not JSON",
     lambda: TFreeTokenizer.from_pretrained(_words_garbled()), "words.json")

# ----------------------------------------------------------------------------------------------------------- u-μP
UMUP = dict(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)
for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "max_position_embeddings"):
    int_cases("umup.UMupConfig", lambda v, n=name: UMupConfig(**{**UMUP, n: v}), f"UMupConfig.{name}", min=1,
              size=True)
for name in ("umup_alpha_ffn_act", "umup_alpha_attn_softmax", "umup_alpha_res", "umup_alpha_loss_softmax"):
    float_cases("umup.UMupConfig", lambda v, n=name: UMupConfig(**{**UMUP, n: v}), f"UMupConfig.{name}", min=0,
                min_open=True)
float_cases("umup.UMupConfig", lambda v: UMupConfig(**{**UMUP, "rope_theta": v}), "UMupConfig.rope_theta", min=0,
            min_open=True)
case("umup.UMupConfig:vocab*hidden absurd", lambda: UMupConfig(**{**UMUP, "vocab_size": 2**22, "hidden_size": 2**14,
                                                                  "num_attention_heads": 4}),
     "vocab_size", "4194304")


@functools.cache
def umup():
    torch.manual_seed(0)
    return UMupLlamaForCausalLM(UMupConfig(**UMUP))


float_cases("umup.umup_param_groups", lambda v: umup_param_groups(umup(), lr=v), "lr", min=0, min_open=True)
float_cases("umup.umup_param_groups", lambda v: umup_param_groups(umup(), lr=1e-3, weight_decay=v), "weight_decay",
            min=0)
float_cases("umup.umup_optimizer", lambda v: umup_optimizer(umup(), lr=v), "lr", min=0, min_open=True)
for bad in (32, 33, 10**6, -1):
    case(f"umup.UMupLlamaForCausalLM.forward:input_ids={bad}", lambda b=bad: umup()(torch.tensor([[1, b]])),
         "input_ids", str(bad))
