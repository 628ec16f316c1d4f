"""Turning models into T-FREE models: :func:`convert_to_tfree` and the reference-checkpoint converter.

* :func:`convert_to_tfree` keeps an existing transformers causal LM's decoder (for continued training) and swaps
  its token embedding and LM head for a fresh T-FREE sparse embedding (``EmbeddingBag(v, h)``) and multi-label head
  (``Linear(h, v)``).
* :func:`convert_reference_checkpoint` converts a checkpoint in the layout of the Aleph Alpha T-FREE release
  (``transformer/transformer.pt`` + ``transformer_config.yaml``; spec ``tfree.md`` §1) into a folder that loads with
  ``AutoModelForCausalLM``. hf_ext ships no weights (the release's licence is non-commercial): users convert their own
  local copy. **The parameter names of that layout are not confirmed here** (the mapping below follows the reference
  module structure: embedding, layers with attention/mlp/norms, final norm, LM head); unmapped keys raise an error
  listing them, and ``key_map`` overrides any rule.

Example:
    >>> from hf_ext.testing import tiny_causal_lm
    >>> tfree = convert_to_tfree(tiny_causal_lm("llama"), hash_vocab_size=512, num_activations=4)
    >>> tfree.embed.weight.shape
    torch.Size([512, 64])
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import torch

from hf_ext.utils.logging import get_logger

from .configuration_tfree import TFreeConfig
from .modeling_tfree import TFreeForCausalLM

logger = get_logger(__name__)

__all__ = ["REFERENCE_KEY_MAP", "convert_reference_checkpoint", "convert_to_tfree"]


def convert_to_tfree(model, *, tokenizer=None, hash_vocab_size: int = 8000, num_activations: int = 10,
                     num_lowercase_activations: int = 0, hash_scheme: str = "aa_md5", **config_kwargs: Any):
    """A :class:`TFreeForCausalLM` with ``model``'s decoder weights and a new T-FREE embedding and head.

    Args:
        model: a transformers causal LM (``AutoModelForCausalLM``; any decoder-only family).
        tokenizer: optional :class:`TFreeTokenizer` whose word list becomes the decode dictionary (its hashing
            fields override the keyword arguments).
        hash_vocab_size, num_activations, num_lowercase_activations, hash_scheme, **config_kwargs: :class:`TFreeConfig`.

    Returns:
        The new model (same dtype and device as ``model``; the original is not modified).

    Raises:
        TypeError: ``model`` is not a transformers model; ValueError: encoder-decoder models.
    """
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"convert_to_tfree expects a transformers PreTrainedModel, got {type(model).__name__}")
    if tokenizer is not None:
        hc = tokenizer.hash_config()
        hash_vocab_size, num_activations = hc["hash_vocab_size"], hc["num_activations"]
        num_lowercase_activations, hash_scheme = hc["num_lowercase_activations"], hc["hash_scheme"]
        config_kwargs.setdefault("trigram_unit", hc["trigram_unit"])
        config_kwargs.setdefault("entire_words", hc["entire_words"])
    text_config = copy.deepcopy(model.config.get_text_config(decoder=True))
    cfg = TFreeConfig(text_config=text_config, hash_vocab_size=hash_vocab_size, num_activations=num_activations,
                      num_lowercase_activations=num_lowercase_activations, hash_scheme=hash_scheme, **config_kwargs)
    param = next(model.parameters())
    tfree = TFreeForCausalLM(cfg).to(device=param.device, dtype=param.dtype)
    backbone = model.base_model
    state = {k: v for k, v in backbone.state_dict().items()}
    embed_name = _input_embedding_name(backbone)
    state = {k: v for k, v in state.items() if not k.startswith(embed_name + ".")}
    missing, unexpected = tfree.model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(embed_name + ".")]
    if missing or unexpected:
        raise ValueError(f"could not map {type(model).__name__}'s decoder onto the T-FREE backbone: missing {missing}, "
                         f"unexpected {unexpected}")
    if tokenizer is not None:
        tfree.set_decode_dictionary(tokenizer)
    return tfree


def _input_embedding_name(backbone) -> str:
    emb = backbone.get_input_embeddings()
    for name, module in backbone.named_modules():
        if module is emb:
            return name
    raise ValueError(f"{type(backbone).__name__} has no input embedding module")


#: Reference layout → Llama names (regex → replacement). **[unconfirmed]** parameter names of the release.
REFERENCE_KEY_MAP: dict[str, str] = {
    r"^embedding\.weight$": "embed.weight",
    r"^layers\.(\d+)\.attention\.query\.weight$": r"model.layers.\1.self_attn.q_proj.weight",
    r"^layers\.(\d+)\.attention\.key\.weight$": r"model.layers.\1.self_attn.k_proj.weight",
    r"^layers\.(\d+)\.attention\.value\.weight$": r"model.layers.\1.self_attn.v_proj.weight",
    r"^layers\.(\d+)\.attention\.dense\.weight$": r"model.layers.\1.self_attn.o_proj.weight",
    r"^layers\.(\d+)\.mlp\.dense_in\.weight$": r"model.layers.\1.mlp.up_proj.weight",
    r"^layers\.(\d+)\.mlp\.dense_in_gate\.weight$": r"model.layers.\1.mlp.gate_proj.weight",
    r"^layers\.(\d+)\.mlp\.dense_out\.weight$": r"model.layers.\1.mlp.down_proj.weight",
    r"^layers\.(\d+)\.input_layernorm\.weight$": r"model.layers.\1.input_layernorm.weight",
    r"^layers\.(\d+)\.post_attention_layernorm\.weight$": r"model.layers.\1.post_attention_layernorm.weight",
    r"^norm\.weight$": "model.norm.weight",
    r"^lm_head\.weight$": "lm_head.weight",
}


def convert_reference_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path, *,
                                 key_map: dict[str, str] | None = None, words: list[str] | None = None,
                                 dtype: torch.dtype | None = None) -> Path:
    """Convert a reference-layout T-FREE checkpoint into an hf_ext folder (``config.json`` + safetensors + tokenizer).

    Expected input (spec ``tfree.md`` §1): ``transformer/transformer.pt`` (a state dict, loaded with
    ``weights_only=True``), ``transformer/transformer_config.yaml`` (``hidden_size``, ``num_layers``,
    ``num_attention_heads``, optional ``num_kv_heads``, ``mlp_factor``, ``rotary_base``, ``norm_eps``, ``seq_len``)
    and ``tokenizer/tokenizer_config.yaml`` (``vocab_size``, ``vocab_population``,
    ``vocab_population_partial_lowercase``). ``words`` becomes the decode dictionary (default: the special words).

    Raises:
        FileNotFoundError: a missing file; ValueError: checkpoint keys that no rule maps (listed).
    """
    import yaml
    from transformers import LlamaConfig

    from .tokenization_tfree import TFreeTokenizer

    src, out = Path(checkpoint_dir), Path(out_dir)
    files = {"weights": src / "transformer" / "transformer.pt", "config": src / "transformer" / "transformer_config.yaml",
             "tokenizer": src / "tokenizer" / "tokenizer_config.yaml"}
    for label, path in files.items():
        if not path.is_file():
            raise FileNotFoundError(f"reference checkpoint {label} file not found: {path}")
    tcfg = yaml.safe_load(files["config"].read_text())
    kcfg = yaml.safe_load(files["tokenizer"].read_text())
    tcfg = tcfg.get("architecture", tcfg)
    h = int(tcfg["hidden_size"])
    inter = int(tcfg.get("intermediate_size") or round(h * float(tcfg.get("mlp_factor", 2.668)) / 64) * 64)
    text_config = LlamaConfig(hidden_size=h, intermediate_size=inter, num_hidden_layers=int(tcfg["num_layers"]),
                              num_attention_heads=int(tcfg["num_attention_heads"]),
                              num_key_value_heads=int(tcfg.get("num_kv_heads") or tcfg["num_attention_heads"]),
                              rms_norm_eps=float(tcfg.get("norm_eps", 1e-5)),
                              max_position_embeddings=int(tcfg.get("seq_len", 4096)), vocab_size=16,
                              rope_parameters={"rope_type": "default", "rope_theta": float(tcfg.get("rotary_base", 1e4))},
                              tie_word_embeddings=False)
    v, m = int(kcfg["vocab_size"]), int(kcfg["vocab_population"])
    k = int(kcfg.get("vocab_population_partial_lowercase", 0))
    cfg = TFreeConfig(text_config=text_config, hash_vocab_size=v, num_activations=m, num_lowercase_activations=k,
                      hash_scheme="aa_md5", pos_weight=float(kcfg.get("loss_pos_weight", 300.0)), loss_scale=100.0)
    state = torch.load(files["weights"], map_location="cpu", weights_only=True)
    rules = [(re.compile(p), r) for p, r in (key_map or REFERENCE_KEY_MAP).items()]
    mapped, unmapped = {}, []
    for key, tensor in state.items():
        for pat, rep in rules:
            if pat.search(key):
                mapped[pat.sub(rep, key)] = tensor.to(dtype) if dtype is not None else tensor
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise ValueError(f"{len(unmapped)} checkpoint keys match no rule of key_map (first: {unmapped[:8]}); pass "
                         "key_map={regex: hf_name} for them")
    model = TFreeForCausalLM(cfg)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [x for x in missing if not x.startswith("dict_") and x != "model.embed_tokens.weight"]
    if missing or unexpected:
        raise ValueError(f"converted state does not fit the model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    tok = TFreeTokenizer(words=words, hash_vocab_size=v, num_activations=m, num_lowercase_activations=k)
    model.set_decode_dictionary(tok)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "conversion.json").write_text(json.dumps({"source": str(src), "unconfirmed_key_map": True}, indent=1))
    return out
