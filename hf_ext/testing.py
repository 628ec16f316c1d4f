"""Seeded tiny models for tests, notebooks, the tour and benchmarks: offline, built from configs in code.

Every factory takes a ``seed`` and returns the same weights for the same seed (fp32, CPU, ``eval()`` mode).
Nothing is downloaded: configs are written here and weights are random.

Example:
    >>> from hf_ext.testing import tiny_causal_lm, tiny_tokenizer
    >>> model = tiny_causal_lm("llama")
    >>> tok = tiny_tokenizer()
    >>> ids = tok("hello", return_tensors="pt").input_ids
    >>> model(ids).logits.shape[-1] == model.config.vocab_size
    True
"""

from __future__ import annotations

import string
from typing import Any

import torch

#: The causal-LM families every "any model" claim of the core is tested on.
CAUSAL_LM_FAMILIES: tuple[str, ...] = ("llama", "gpt2", "gpt_neox", "qwen2", "opt")

# Character vocabulary of :func:`tiny_tokenizer`: specials first, then printable ASCII.
_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
_CHARS = [c for c in string.printable if c not in "\x0b\x0c"]
TINY_VOCAB_SIZE = 128
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def tiny_causal_lm_config(family: str, *, hidden_size: int = 64, num_layers: int = 2, **overrides: Any):
    """Config of a tiny causal LM of ``family`` (one of :data:`CAUSAL_LM_FAMILIES`).

    Args:
        family: model family (transformers ``model_type``).
        hidden_size: width; 4 attention heads (2 KV heads where the family has GQA).
        num_layers: decoder layers.
        **overrides: extra config fields (e.g. ``vocab_size``).

    Returns:
        A ``transformers.PreTrainedConfig`` with vocab 128 and 128 positions, specials as in :func:`tiny_tokenizer`.
    """
    import transformers as tf

    common = dict(vocab_size=TINY_VOCAB_SIZE, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
                  tie_word_embeddings=False)
    if family == "llama":
        cfg = tf.LlamaConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, **common)
    elif family == "qwen2":
        cfg = tf.Qwen2Config(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, **common)
    elif family == "gpt2":
        cfg = tf.GPT2Config(n_embd=hidden_size, n_layer=num_layers, n_head=4, n_positions=128,
                            attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0, **common)
    elif family == "gpt_neox":
        cfg = tf.GPTNeoXConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                               num_attention_heads=4, max_position_embeddings=128, rotary_pct=0.5, **common)
    elif family == "opt":
        cfg = tf.OPTConfig(hidden_size=hidden_size, ffn_dim=2 * hidden_size, num_hidden_layers=num_layers,
                           num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=hidden_size,
                           dropout=0.0, attention_dropout=0.0, **common)
    else:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {CAUSAL_LM_FAMILIES}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def tiny_causal_lm(family: str = "llama", *, seed: int = 0, attn_implementation: str | None = None, **config_kwargs: Any):
    """A seeded tiny ``AutoModelForCausalLM`` of ``family`` in eval mode (fp32, CPU).

    Args:
        family: one of :data:`CAUSAL_LM_FAMILIES`.
        seed: weights are a deterministic function of the seed.
        attn_implementation: ``"sdpa"`` (transformers' default) or ``"eager"``.
        **config_kwargs: forwarded to :func:`tiny_causal_lm_config`.
    """
    from transformers import AutoModelForCausalLM

    cfg = tiny_causal_lm_config(family, **config_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = AutoModelForCausalLM.from_config(cfg, **kwargs)
    return model.eval()


def tiny_tokenizer():
    """A character-level fast tokenizer over printable ASCII (vocab < 128, specials ``<pad> <s> </s> <unk>``).

    It returns offset mappings, pads on the left by default (the decoder-only convention for batched
    generation) and prepends ``<s>``. Built from a generated vocab: nothing is downloaded.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(_SPECIALS + _CHARS)}
    assert len(vocab) <= TINY_VOCAB_SIZE
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", BOS_ID)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>", padding_side="left")
    return tok
